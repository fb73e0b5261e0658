//! Rate-limit decisions: the memory limiter (one limit, two limits, and
//! a hundred thousand distinct callers) and the Redis limiter against a
//! real redis-server on loopback, one decision at a time (the added
//! latency) and 64 in flight on the multiplexed connection (pipelined:
//! decisions per second).
//!
//! Run: `cargo bench -p portcullis-bench --bench ratelimit -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::clock::SystemClock;
use portcullis::ratelimit::{
    Check, Limiter, MemoryLimiter, OnBackendError, Pool, RedisLimiter, RedisSettings, Subject,
};
use portcullis_bench::RedisProcess;
use portcullis_core::ratelimit::Limit;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

// Generous limits: the benchmarks measure admitted decisions.
const WIDE: Limit = Limit {
    count: 1_000_000_000,
    period_ms: 1_000,
    burst: 1_000_000_000,
};
const DAILY: Limit = Limit {
    count: 1_000_000_000,
    period_ms: 86_400_000,
    burst: 1_000_000_000,
};

fn check(ip: u32, limit: &Limit) -> Check<'_> {
    Check {
        pool: Pool::Route(0),
        subject: Subject::Ip(IpAddr::V4(Ipv4Addr::from(ip))),
        limit,
    }
}

fn memory(c: &mut Criterion) {
    let m = MemoryLimiter::new(Arc::new(SystemClock), 1_000_000);
    let mut g = c.benchmark_group("memory");
    g.bench_function("one_limit", |b| {
        b.iter(|| m.check(black_box(&[check(1, &WIDE)]), 1))
    });
    g.bench_function("two_limits", |b| {
        b.iter(|| m.check(black_box(&[check(2, &WIDE), check(2, &DAILY)]), 1))
    });
    let mut i = 0u32;
    g.bench_function("100k_callers", |b| {
        b.iter(|| {
            i = (i + 1) % 100_000;
            m.check(black_box(&[check(i, &WIDE)]), 1)
        })
    });
    g.finish();
}

fn redis(c: &mut Criterion) {
    let server = match RedisProcess::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("benchmark set-up failed: {}", e.0);
            std::process::exit(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(1);
        }
    };
    let mut settings = RedisSettings::new(server.url.clone());
    settings.timeout = Duration::from_millis(500);
    let limiter = match rt.block_on(async { RedisLimiter::new(settings) }) {
        Ok(l) => Arc::new(Limiter::redis(
            l,
            MemoryLimiter::new(Arc::new(SystemClock), 1000),
            OnBackendError::Deny,
        )),
        Err(e) => {
            eprintln!("redis limiter: {e}");
            std::process::exit(1);
        }
    };
    // Warm: connect, load the script.
    if !matches!(
        rt.block_on(limiter.check(&[check(1, &WIDE)], 1)),
        Ok(Some(v)) if v.admitted
    ) {
        eprintln!("the Redis limiter did not admit the warm-up request");
        std::process::exit(1);
    }
    let mut g = c.benchmark_group("redis");
    g.bench_function("one_limit", |b| {
        b.iter(|| rt.block_on(limiter.check(black_box(&[check(1, &WIDE)]), 1)))
    });
    g.bench_function("two_limits", |b| {
        b.iter(|| rt.block_on(limiter.check(black_box(&[check(2, &WIDE), check(2, &DAILY)]), 1)))
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("pipelined_64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..64u32 {
                    let l = limiter.clone();
                    set.spawn(async move { l.check(&[check(i, &WIDE)], 1).await.is_ok() });
                }
                let mut ok = 0;
                while let Some(r) = set.join_next().await {
                    ok += usize::from(matches!(r, Ok(true)));
                }
                ok
            })
        })
    });
    g.finish();
    drop(server);
}

criterion_group!(ratelimit, memory, redis);
criterion_main!(ratelimit);
