//! The `alloc-count` feature (bench/allocations only): every heap
//! allocation counted, the counts appended to the admin listener's
//! `GET /metrics` as `portcullis_debug_*_total`. Never in a normal build.
//! The allocator's `unsafe impl` lives in bench/alloc-count, so this crate
//! keeps `unsafe_code = "forbid"`.

#[global_allocator]
static COUNTING: portcullis_alloc_count::Counting = portcullis_alloc_count::Counting;

/// Appends the allocation counters to a `/metrics` exposition.
pub fn render_into(out: &mut String) {
    portcullis_alloc_count::render_prometheus(out);
}
