//! Fresh trace and span ids for W3C Trace Context, per request.
//!
//! Ids must be unique and hard to guess for tracing systems to keep
//! traces apart, but they are not secrets and guard nothing: a fast
//! per-thread generator (SplitMix64, seeded once per thread from the
//! system's random source) serves, without a system call per request.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A seed from the system's random source; should that fail, the clock
/// and the thread's stack address still make threads differ.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let here = &b as *const _ as u64;
    t ^ here.rotate_left(32)
}

/// One SplitMix64 step.
fn next(s: &Cell<u64>) -> u64 {
    let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    s.set(x);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new trace id and span id (a trace id is used only when the client
/// started none).
pub fn fresh() -> ([u8; 16], [u8; 8]) {
    STATE.with(|s| {
        let (a, b, c) = (next(s), next(s), next(s));
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&a.to_le_bytes());
        t[8..].copy_from_slice(&b.to_le_bytes());
        (t, c.to_le_bytes())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ() {
        let (t1, s1) = super::fresh();
        let (t2, s2) = super::fresh();
        assert_ne!(t1, t2);
        assert_ne!(s1, s2);
    }
}
