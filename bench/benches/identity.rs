//! Micro-benchmarks of the identity paths: JWT verification (cold: the
//! signature and claims every time; cached: a repeated token), a Basic
//! check served from the cache, and one Argon2id hash at the parameters
//! Portcullis uses.
//!
//! Run: `cargo bench -p portcullis-bench --bench identity -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use portcullis::auth::guard::Head;
use portcullis_bench::{IdentityFixture, poll_ready};
use portcullis_core::Secret;
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let f = match IdentityFixture::new() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("benchmark set-up failed: {e}");
            std::process::exit(1);
        }
    };
    let mut g = c.benchmark_group("jwt");
    g.bench_function("verify_cold", |b| {
        b.iter(|| f.tokens.verify_uncached(black_box(&f.jwt)))
    });
    g.bench_function("verify_cached", |b| {
        b.iter(|| f.tokens.verify(black_box(&f.jwt)))
    });
    g.bench_function("guard_bearer_cached", |b| {
        let head = Head::new(&Method::GET, &f.bearer_headers, None);
        b.iter(|| poll_ready(f.guard.check(&f.bearer_policy, black_box(&head))))
    });
    g.finish();

    let mut g = c.benchmark_group("basic");
    g.bench_function("guard_basic_cached", |b| {
        let head = Head::new(&Method::GET, &f.basic_headers, None);
        b.iter(|| poll_ready(f.guard.check(&f.basic_policy, black_box(&head))))
    });
    g.finish();

    let mut g = c.benchmark_group("argon2id");
    g.sample_size(10);
    let pw = Secret::new("correct horse battery staple".to_owned());
    g.bench_function("hash_m19456_t2_p1", |b| {
        b.iter(|| f.base.rt.block_on(f.passwords.hash(black_box(&pw))))
    });
    g.finish();
}

criterion_group!(identity, benches);
criterion_main!(identity);
