//! Micro-benchmarks of the verification hot path.
//!
//! Run: `cargo bench -p portcullis-bench --bench verify -- --warm-up-time 1 --measurement-time 3`
//! (docs/benchmarks.md has the figures and what they mean).

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_bench::{Fixture, poll_ready};
use portcullis_core::KeyHash;
use portcullis_core::key::check_format;
use std::hint::black_box;

fn key_benches(c: &mut Criterion, f: &Fixture) {
    let good = f.key.as_str();
    let mut bad = good.as_bytes().to_vec();
    if let Some(last) = bad.last_mut() {
        *last = if *last == b'A' { b'B' } else { b'A' };
    }
    let bad = String::from_utf8(bad).unwrap_or_default();
    assert!(check_format(good).is_ok());
    assert!(check_format(&bad).is_err());

    let mut g = c.benchmark_group("key");
    g.bench_function("parse", |b| b.iter(|| check_format(black_box(good))));
    g.bench_function("parse_bad_checksum", |b| {
        b.iter(|| check_format(black_box(bad.as_str())))
    });
    g.bench_function("hash", |b| b.iter(|| KeyHash::of(black_box(good))));
    g.finish();
}

fn verify_benches(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("verify");
    // The future finishes on its first poll on these paths (Fixture::new
    // checked that); polling it once measures the verification alone.
    g.bench_function("cache_hit", |b| {
        b.iter(|| poll_ready(f.verifier.verify(black_box(&f.key))))
    });
    g.bench_function("negative_cache_hit", |b| {
        b.iter(|| poll_ready(f.verifier.verify(black_box(&f.unknown))))
    });
    // The same cache hit driven by a current-thread tokio runtime, as a
    // caller that just awaits it would: the difference is the runtime's.
    g.bench_function("cache_hit_block_on", |b| {
        b.iter(|| f.rt.block_on(f.verifier.verify(black_box(&f.key))))
    });
    g.finish();
}

fn guard_benches(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("guard");
    g.bench_function("check_header_key", |b| {
        b.iter(|| poll_ready(f.guard.check(&f.policy, black_box(&f.head()))))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let f = match Fixture::new() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("benchmark set-up failed: {e}");
            std::process::exit(1);
        }
    };
    key_benches(c, &f);
    verify_benches(c, &f);
    guard_benches(c, &f);
}

criterion_group!(verify, benches);
criterion_main!(verify);
