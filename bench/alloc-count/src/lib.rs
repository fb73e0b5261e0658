//! A global allocator that counts what passes through it and hands every
//! call to the system allocator unchanged. The gateway installs it only
//! with the `alloc-count` feature (bench/allocations), to report
//! allocations per proxied request.
//!
//! The counters are relaxed atomics: each is exact on its own, and the
//! benchmark reads them only between bursts of load, where no ordering
//! between them matters.

#![deny(unsafe_op_in_unsafe_fn)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static DEALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counted.
pub struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds `GlobalAlloc`'s contract; the counters touch no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        DEALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Relaxed);
        // Growth only: the bytes a request makes the allocator find.
        BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The counters since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `alloc` and `alloc_zeroed` calls.
    pub allocs: u64,
    /// `realloc` calls (not counted in `allocs`).
    pub reallocs: u64,
    /// `dealloc` calls.
    pub deallocs: u64,
    /// Bytes asked for by `alloc`, plus the growth asked for by `realloc`.
    pub bytes: u64,
}

/// Reads the counters.
pub fn counts() -> Counts {
    Counts {
        allocs: ALLOCS.load(Relaxed),
        reallocs: REALLOCS.load(Relaxed),
        deallocs: DEALLOCS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
    }
}

/// The counters in Prometheus's text format, appended to `out`.
pub fn render_prometheus(out: &mut String) {
    let c = counts();
    for (name, help, v) in [
        (
            "portcullis_debug_allocations_total",
            "Heap allocations (alloc-count builds only).",
            c.allocs,
        ),
        (
            "portcullis_debug_reallocations_total",
            "Heap reallocations (alloc-count builds only).",
            c.reallocs,
        ),
        (
            "portcullis_debug_deallocations_total",
            "Heap deallocations (alloc-count builds only).",
            c.deallocs,
        ),
        (
            "portcullis_debug_allocated_bytes_total",
            "Bytes asked of the heap (alloc-count builds only).",
            c.bytes,
        ),
    ] {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let mut s = String::new();
        render_prometheus(&mut s);
        for n in [
            "allocations",
            "reallocations",
            "deallocations",
            "allocated_bytes",
        ] {
            assert!(s.contains(&format!("portcullis_debug_{n}_total ")), "{s}");
        }
    }
}
