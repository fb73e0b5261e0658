//! The Redis limiter against a real redis-server: the Lua script decides
//! as `portcullis_core::ratelimit::decide` does, all or nothing, exactly
//! under concurrency; an outage is handled as `on_backend_error` says,
//! without waiting on Redis, and shared limiting resumes by itself; a
//! password in the URL is never printed.
//!
//! Limits are per hour (or per ten minutes), so every count below is
//! exact whatever the machine's speed: no outcome depends on sub-second
//! timing, and nothing sleeps for a window to pass. The fast limits
//! (`5000/second`) are checked against Redis's own clock (`TIME`, read
//! before and after) and by the stored TAT, which moves by exactly one
//! interval per admitted request however slow the machine is.

use crate::redis_server::RedisServer;
use portcullis::clock::SystemClock;
use portcullis::core::ratelimit::Limit;
use portcullis::ratelimit::{
    BreakerState, Check, Limiter, MemoryLimiter, OnBackendError, Pool, RedisLimiter, RedisSettings,
    Subject, Verdict,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const HOUR: u64 = 3_600_000;

fn lim(count: u32, period_ms: u64, burst: u32) -> Limit {
    Limit {
        count,
        period_ms,
        burst,
    }
}

fn check<'a>(name: &'a str, limit: &'a Limit) -> Check<'a> {
    Check {
        pool: Pool::Named("t"),
        subject: Subject::Named("test", name),
        limit,
    }
}

fn memory() -> MemoryLimiter {
    MemoryLimiter::new(Arc::new(SystemClock), 10_000)
}

/// Settings for tests where Redis stays up: a timeout no loaded machine
/// reaches, so a slow moment is not mistaken for an outage.
fn settings(srv: &RedisServer, prefix: &str) -> RedisSettings {
    RedisSettings {
        timeout: Duration::from_secs(2),
        key_prefix: prefix.into(),
        ..RedisSettings::new(srv.url())
    }
}

fn redis_limiter(srv: &RedisServer, prefix: &str) -> RedisLimiter {
    RedisLimiter::new(settings(srv, prefix)).unwrap()
}

/// A raw connection, to look at the counters as another client would.
async fn raw(srv: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(srv.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

/// Runs `costs` against both limiters and checks each pair of verdicts
/// agrees on everything that does not depend on the milliseconds between
/// the two calls; returns Redis's verdicts.
async fn agree(
    redis: &RedisLimiter,
    mem: &MemoryLimiter,
    checks: &[Check<'_>],
    costs: &[u32],
    label: &str,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (n, &cost) in costs.iter().enumerate() {
        let r = redis.check(checks, cost).await.unwrap().unwrap();
        let m = mem.check(checks, cost).unwrap();
        let ctx = format!("{label}, request {n} (cost {cost}): redis {r:?}, memory {m:?}");
        assert_eq!(
            (r.admitted, r.index, r.limit, r.remaining),
            (m.admitted, m.index, m.limit, m.remaining),
            "{ctx}"
        );
        // Seconds, rounded up from milliseconds measured a moment apart.
        assert!(r.reset_secs.abs_diff(m.reset_secs) <= 2, "{ctx}");
        assert!(
            r.retry_after_secs.abs_diff(m.retry_after_secs) <= 2,
            "{ctx}"
        );
        assert_eq!(r.retry_after_secs == 0, r.admitted, "{ctx}");
        out.push(r);
    }
    out
}

fn admitted(v: &[Verdict]) -> Vec<bool> {
    v.iter().map(|v| v.admitted).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_decides_as_the_memory_limiter_does() {
    let srv = RedisServer::start();
    let redis = redis_limiter(&srv, "agree:");
    let mem = memory();

    // One limit, costs 1 and 2.
    let five = lim(5, HOUR, 5);
    let v = agree(
        &redis,
        &mem,
        &[check("one", &five)],
        &[1, 2, 1, 2, 1, 1, 3],
        "5/hour",
    )
    .await;
    assert_eq!(admitted(&v), [true, true, true, false, true, false, false]);
    assert_eq!(
        v.iter().map(|v| v.remaining).collect::<Vec<_>>(),
        [4, 2, 1, 0, 0, 0, 0]
    );
    // Refused with 1 left and a cost of 2: one interval (720 s) to wait.
    assert!((700..=720).contains(&v[3].retry_after_secs), "{:?}", v[3]);

    // A burst smaller than the count.
    let spread = lim(60, HOUR, 3);
    let v = agree(
        &redis,
        &mem,
        &[check("spread", &spread)],
        &[1, 1, 1, 1, 2],
        "60/hour burst 3",
    )
    .await;
    assert_eq!(admitted(&v), [true, true, true, false, false]);

    // Several limits in one check, in two orders: the deciding index is
    // the position in the slice. Chosen so no two limits ever tie (equal
    // room, or equal wait), where either could be named.
    let a = lim(5, HOUR, 5);
    let b = lim(20, HOUR, 10);
    let c = lim(3, HOUR / 6, 3);
    let costs = [11, 1, 1, 3, 1, 1, 2, 3];
    for (label, checks, ia, ic) in [
        (
            "a, b, c",
            [check("a1", &a), check("b1", &b), check("c1", &c)],
            0,
            2,
        ),
        (
            "c, a, b",
            [check("c2", &c), check("a2", &a), check("b2", &b)],
            1,
            0,
        ),
    ] {
        let v = agree(&redis, &mem, &checks, &costs, label).await;
        assert_eq!(
            admitted(&v),
            [false, true, true, false, true, false, false, false],
            "{label}"
        );
        // 11 at once: `a` waits longest (11 × 720 s − 1 h).
        assert_eq!((v[0].index, v[0].limit), (ia, a), "{label}");
        // Admitted: `c` has the least room.
        assert_eq!((v[1].index, v[1].remaining), (ic, 2), "{label}");
        assert_eq!((v[4].index, v[4].remaining), (ic, 0), "{label}");
        // Refused by `c` while `a` still has room...
        assert_eq!(v[3].index, ic, "{label}");
        assert_eq!(v[5].index, ic, "{label}");
        // ...and by `a`, whose wait (720 s) is the longer, at cost 3.
        assert_eq!(v[7].index, ia, "{label}");
    }

    // Two limits that always tie (same interval, same burst): both name
    // the first, admitted or refused, so `RateLimit-Policy` does not
    // depend on the backend.
    let twin = lim(10, 2 * HOUR, 5);
    let v = agree(
        &redis,
        &mem,
        &[check("tie", &five), check("tie", &twin)],
        &[1, 3, 1, 1, 1],
        "tied limits",
    )
    .await;
    assert_eq!(admitted(&v), [true, true, true, false, false]);
    assert!(v.iter().all(|v| v.index == 0), "{v:?}");

    // The same counter named twice counts once, as in memory.
    let v = agree(
        &redis,
        &mem,
        &[check("twice", &five), check("twice", &five)],
        &[1; 7],
        "one counter twice",
    )
    .await;
    assert_eq!(admitted(&v), [true, true, true, true, true, false, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_changes_no_counter() {
    let srv = RedisServer::start();
    let prefix = "aon:";
    let redis = redis_limiter(&srv, prefix);
    let mut conn = raw(&srv).await;
    let a = lim(5, HOUR, 5);
    let b = lim(2, HOUR, 2);
    let c = lim(100, HOUR, 100);
    let (ca, cb, cc) = (check("k", &a), check("k", &b), check("k", &c));

    for want in [1, 0] {
        let v = redis.check(&[ca, cb], 1).await.unwrap().unwrap();
        assert!(v.admitted);
        assert_eq!((v.index, v.remaining), (1, want));
    }
    let tat_a = get(&mut conn, &ca.redis_key(prefix)).await.unwrap();
    for _ in 0..3 {
        let v = redis.check(&[ca, cb], 1).await.unwrap().unwrap();
        assert!(!v.admitted);
        assert_eq!(v.index, 1);
        assert!(v.retry_after_secs > 0);
    }
    // `a` was not written by the refusals...
    assert_eq!(get(&mut conn, &ca.redis_key(prefix)).await.unwrap(), tat_a);
    // ...so it has exactly 3 of its 5 left.
    let v = redis.check(&[ca], 3).await.unwrap().unwrap();
    assert!(v.admitted, "{v:?}");
    assert_eq!(v.remaining, 0);
    let v = redis.check(&[ca], 1).await.unwrap().unwrap();
    assert!(!v.admitted);

    // Refused by the second counter: the first one is not even created,
    // and keeps its whole allowance.
    let v = redis.check(&[cc, ca], 1).await.unwrap().unwrap();
    assert!(!v.admitted);
    assert_eq!(v.index, 1);
    assert_eq!(get(&mut conn, &cc.redis_key(prefix)).await, None);
    let v = redis.check(&[cc], 100).await.unwrap().unwrap();
    assert!(v.admitted, "{v:?}");
    assert_eq!(v.remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_under_concurrency() {
    let srv = RedisServer::start();
    // Two limiters (two "gateways", two connections), four tasks each.
    let limiters = [
        Arc::new(redis_limiter(&srv, "conc:")),
        Arc::new(redis_limiter(&srv, "conc:")),
    ];
    let l = Arc::new(lim(100, HOUR, 100));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let r = limiters[t % 2].clone();
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let mut remaining = Vec::new();
            for _ in 0..50 {
                let v = r.check(&[check("shared", &l)], 1).await.unwrap().unwrap();
                if v.admitted {
                    remaining.push(v.remaining);
                }
            }
            remaining
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 100);
    // Each admission saw the one before it: 99, 98, ... 0, once each.
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<u32>>());
}

/// `r.check(checks, 1)`, repeated until Redis answers: the first call on
/// a connection Redis dropped fails, and reconnects.
async fn answered(r: &RedisLimiter, checks: &[Check<'_>]) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match r.check(checks, 1).await {
            Ok(v) => return v.unwrap(),
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls `limiter.check`, which must return (an answer or
/// `Unavailable`) rather than wait on a dead or hung Redis: the 20 s
/// bound is a hang detector, not a speed test (the timeout is 50 ms;
/// the counters in `stats` say how many calls waited on Redis).
async fn timed(
    limiter: &Limiter,
    checks: &[Check<'_>],
) -> Result<Option<Verdict>, portcullis::ratelimit::Unavailable> {
    tokio::time::timeout(Duration::from_secs(20), limiter.check(checks, 1))
        .await
        .expect("a check waited on Redis without giving up")
}

async fn outage(mode: OnBackendError) {
    let mut srv = RedisServer::start();
    let s = RedisSettings {
        timeout: Duration::from_millis(50),
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(1),
        key_prefix: "out:".into(),
        ..RedisSettings::new(srv.url())
    };
    let limiter = Limiter::redis(RedisLimiter::new(s.clone()).unwrap(), memory(), mode);
    // Another process on the same Redis, patient.
    let other = RedisLimiter::new(RedisSettings {
        timeout: Duration::from_secs(2),
        ..s.clone()
    })
    .unwrap();
    let stats = limiter.stats();
    let l = lim(10, HOUR, 10);
    let probe_l = lim(100_000, HOUR, 100_000);
    let key = [check("k", &l)];
    // Polling goes to its own counter, so it never spends `k`.
    let probe = [check("probe", &probe_l)];

    // The first call connects; 50 ms may not be enough on a busy machine,
    // so poll until Redis has decided once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.remote.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "Redis never answered");
        let _ = timed(&limiter, &probe).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(limiter.breaker_state(), BreakerState::Closed);
    // Counting is shared with the other process.
    for _ in 0..3 {
        assert!(answered(&other, &key).await.admitted);
    }
    let v = timed(&limiter, &key).await.unwrap().unwrap();
    assert!(v.admitted);
    assert_eq!(v.remaining, 6);
    let opened0 = stats.opened.load(Ordering::Relaxed);
    let fallback0 = stats.fallback.load(Ordering::Relaxed);
    let errors0 = stats.errors.load(Ordering::Relaxed);

    srv.stop();
    let mut local_admitted = 0;
    let mut seen_open = false;
    for i in 0..20u32 {
        let r = timed(&limiter, &key).await;
        match mode {
            OnBackendError::Allow => assert_eq!(r, Ok(None), "{i}"),
            OnBackendError::Deny => {
                let u = r.unwrap_err();
                assert!((1..=2).contains(&u.retry_after_secs), "{i}: {u:?}");
            }
            OnBackendError::Local => {
                // This process's own count, from a fresh allowance.
                let v = r.unwrap().unwrap();
                if v.admitted {
                    assert_eq!(v.remaining, 9 - i);
                    local_admitted += 1;
                } else {
                    assert!(v.retry_after_secs > 0);
                }
            }
        }
        if !seen_open && stats.opened.load(Ordering::Relaxed) > opened0 {
            // Just opened (the cooldown is 1 s): Redis is no longer asked.
            assert_eq!(limiter.breaker_state(), BreakerState::Open, "{i}");
            seen_open = true;
        }
    }
    assert!(seen_open, "the breaker never opened: {stats:?}");
    if mode == OnBackendError::Local {
        assert_eq!(local_admitted, 10);
    }
    assert_eq!(stats.opened.load(Ordering::Relaxed), opened0 + 1);
    assert_eq!(stats.fallback.load(Ordering::Relaxed), fallback0 + 20);
    let errors = stats.errors.load(Ordering::Relaxed) - errors0;
    // Three to open it, plus a probe if the loop outlasted the cooldown.
    assert!((3..=5).contains(&errors), "{errors} errors");
    assert_ne!(limiter.breaker_state(), BreakerState::Closed);
    let remote = stats.remote.load(Ordering::Relaxed);

    // Back, empty. The breaker lets a probe through after each cooldown;
    // the limiter resumes by itself.
    srv.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = timed(&limiter, &probe).await;
        if limiter.breaker_state() == BreakerState::Closed
            && stats.remote.load(Ordering::Relaxed) > remote
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not resumed after 30 s: {:?}, {stats:?}",
            limiter.breaker_state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Shared again: the other process spends 4 of the fresh 10, and this
    // one sees 5 left after its own (its memory count is spent, for
    // `local`; `allow` would say nothing, `deny` would refuse).
    for _ in 0..4 {
        assert!(answered(&other, &key).await.admitted);
    }
    let v = timed(&limiter, &key).await.unwrap().unwrap();
    assert!(v.admitted, "{v:?}");
    assert_eq!(v.remaining, 5);
    assert_eq!(stats.opened.load(Ordering::Relaxed), opened0 + 1);
    assert!(stats.fallback.load(Ordering::Relaxed) >= fallback0 + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_local_counts_in_memory_then_resumes() {
    outage(OnBackendError::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_allow_admits_then_resumes() {
    outage(OnBackendError::Allow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_deny_refuses_then_resumes() {
    outage(OnBackendError::Deny).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_request_at_most_the_timeout() {
    let srv = RedisServer::start();
    let s = RedisSettings {
        timeout: Duration::from_millis(50),
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_secs(1),
        key_prefix: "hung:".into(),
        ..RedisSettings::new(srv.url())
    };
    let limiter = Limiter::redis(
        RedisLimiter::new(s.clone()).unwrap(),
        memory(),
        OnBackendError::Deny,
    );
    let other = RedisLimiter::new(RedisSettings {
        timeout: Duration::from_secs(2),
        ..s.clone()
    })
    .unwrap();
    let stats = limiter.stats();
    let l = lim(10, HOUR, 10);
    let probe_l = lim(100_000, HOUR, 100_000);
    let probe = [check("probe", &probe_l)];
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.remote.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "Redis never answered");
        let _ = timed(&limiter, &probe).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let errors0 = stats.errors.load(Ordering::Relaxed);

    // Connections are accepted, nothing is answered: each call gives up
    // after the timeout, and once the breaker is open none waits at all.
    srv.pause();
    for i in 0..20 {
        let r = timed(&limiter, &[check("before", &l)]).await;
        assert!(r.is_err(), "{i}: {r:?}");
    }
    assert_eq!(stats.opened.load(Ordering::Relaxed), 1);
    let errors = stats.errors.load(Ordering::Relaxed) - errors0;
    assert!((3..=5).contains(&errors), "{errors} calls waited on Redis");
    let remote = stats.remote.load(Ordering::Relaxed);

    srv.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = timed(&limiter, &probe).await;
        if limiter.breaker_state() == BreakerState::Closed
            && stats.remote.load(Ordering::Relaxed) > remote
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not resumed after 30 s: {:?}, {stats:?}",
            limiter.breaker_state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Shared again. (A fresh counter: the calls that timed out were still
    // in Redis's input and ran when it woke.)
    let after = [check("after", &l)];
    for _ in 0..4 {
        assert!(answered(&other, &after).await.admitted);
    }
    let v = timed(&limiter, &after).await.unwrap().unwrap();
    assert_eq!((v.admitted, v.remaining), (true, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_is_never_printed() {
    let pw = "hunter2-s3cret";
    let mut srv = RedisServer::start_with_password(pw);
    let no_pw = |s: &str, what: &str| {
        assert!(!s.contains(pw), "{what}: {s}");
        assert!(!s.contains("hunter2"), "{what}: {s}");
    };
    let s = settings(&srv, "pw:");
    assert!(s.url.contains(pw));
    no_pw(&format!("{s:?}"), "settings");

    // The password is used (the server requires it)...
    let rl = RedisLimiter::new(s.clone()).unwrap();
    no_pw(&format!("{rl:?}"), "RedisLimiter");
    let l = lim(5, HOUR, 5);
    assert!(
        rl.check(&[check("k", &l)], 1)
            .await
            .unwrap()
            .unwrap()
            .admitted
    );
    let limiter = Limiter::redis(rl, memory(), OnBackendError::Deny);
    no_pw(&format!("{limiter:?}"), "Limiter");

    // ...also as user and password.
    let rl = RedisLimiter::new(RedisSettings {
        url: format!("redis://default:{pw}@127.0.0.1:{}", srv.port()),
        ..s.clone()
    })
    .unwrap();
    no_pw(&format!("{rl:?}"), "RedisLimiter");
    assert!(
        rl.check(&[check("k", &l)], 1)
            .await
            .unwrap()
            .unwrap()
            .admitted
    );

    // A wrong password, a URL that does not parse, and Redis down: the
    // errors name neither password.
    let wrong = RedisLimiter::new(RedisSettings {
        url: format!("redis://:wrong-{pw}@127.0.0.1:{}", srv.port()),
        ..s.clone()
    })
    .unwrap();
    let e = wrong.check(&[check("k", &l)], 1).await.unwrap_err();
    no_pw(&format!("{e} {e:?}"), "wrong password");
    for bad in [
        format!("redis://:{pw}@[::1"),
        format!("redis://:{pw}@127.0.0.1:99999"),
    ] {
        let e = RedisLimiter::new(RedisSettings::new(bad.clone())).unwrap_err();
        no_pw(&format!("{e} {e:?}"), &bad);
        let e = RedisLimiter::check_url(&bad).unwrap_err();
        no_pw(&format!("{e} {e:?}"), &bad);
    }
    let rl = RedisLimiter::new(RedisSettings {
        timeout: Duration::from_millis(200),
        ..s.clone()
    })
    .unwrap();
    srv.stop();
    let e = rl.check(&[check("k", &l)], 1).await.unwrap_err();
    no_pw(&format!("{e} {e:?}"), "Redis down");
    let limiter = Limiter::redis(rl, memory(), OnBackendError::Deny);
    let u = limiter.check(&[check("k", &l)], 1).await.unwrap_err();
    no_pw(&format!("{u} {u:?} {limiter:?}"), "Unavailable");
}

/// Redis's own clock, in nanoseconds since the epoch (whole microseconds).
async fn redis_time(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    (s * 1_000_000 + us) * 1000
}

/// A stored counter: its TAT in nanoseconds since the epoch.
async fn stored_tat(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    let s = get(conn, key).await.unwrap();
    s.parse()
        .unwrap_or_else(|_| panic!("{key}: {s:?} is not a TAT"))
}

/// Counters are named with the format version after the prefix, so an
/// older gateway's millisecond counters (`prefix` + `r0:…`) are never read
/// as nanoseconds during a rolling upgrade.
#[test]
fn counter_names_carry_the_format_version() {
    let l = lim(5000, 1000, 5000);
    let k = check("v", &l).redis_key("portcullis:rl:");
    assert_eq!(k, "portcullis:rl:ns:1:t:test:1:v:5000/1000/5000");
    assert!(k.starts_with(&format!(
        "portcullis:rl:{}",
        portcullis::ratelimit::REDIS_FORMAT
    )));
}

/// `5000/second` in Redis, on Redis's own clock (which no test can move):
/// the whole burst at once and not one more, a TAT that moves by exactly
/// 200 µs per admitted request, and back to back from idle never more than
/// the burst plus one per 200 µs that passed on Redis's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_a_second_counts_to_the_microsecond() {
    let srv = RedisServer::start();
    let prefix = "fast:";
    let redis = redis_limiter(&srv, prefix);
    let mut conn = raw(&srv).await;
    const E: u64 = 200_000;

    // The whole burst (a second's worth) at once; a request for one more
    // than the burst is never admitted.
    let l = lim(5000, 1000, 5000);
    let c = check("burst", &l);
    let v = redis.check(&[c], 5001).await.unwrap().unwrap();
    assert!(!v.admitted, "{v:?}");
    let before = redis_time(&mut conn).await;
    let v = redis.check(&[c], 5000).await.unwrap().unwrap();
    let after = redis_time(&mut conn).await;
    assert!(v.admitted && v.remaining == 0, "{v:?}");
    assert_eq!(v.reset_secs, 1);
    let tat0 = stored_tat(&mut conn, &c.redis_key(prefix)).await;
    // Redis's now at the decision, plus 5000 × 200 µs exactly.
    assert!((before..=after).contains(&(tat0 - 5000 * E)), "{tat0}");
    // It expires when the allowance is whole again: at most 1 s away.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(c.redis_key(prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=1000).contains(&pttl), "{pttl}");

    // Now one more at a time, as the allowance trickles back: each admitted
    // request moves the TAT by exactly 200 µs and a refused one not at
    // all, whatever the time between them.
    let mut admitted = 0u64;
    for _ in 0..100 {
        let v = redis.check(&[c], 1).await.unwrap().unwrap();
        if v.admitted {
            admitted += 1;
            // What came back since the last one (Redis's clock runs on).
            assert!(v.remaining < 5000, "{v:?}");
        } else {
            assert_eq!(v.retry_after_secs, 1, "{v:?}");
        }
    }
    let end = redis_time(&mut conn).await;
    assert_eq!(
        stored_tat(&mut conn, &c.redis_key(prefix)).await,
        tat0 + admitted * E
    );
    // And no more than one per 200 µs that passed.
    assert!(admitted <= (end - before) / E + 1, "{admitted}");

    // Back to back from idle with a burst of 50: the first 50 always,
    // and never more than the burst plus what came back meanwhile (a
    // loaded machine takes longer than 200 µs a call, so some of the rest
    // are admitted too).
    let l = lim(5000, 1000, 50);
    let c = check("trickle", &l);
    let start = redis_time(&mut conn).await;
    let mut n = 0u64;
    for i in 0..200 {
        let v = redis.check(&[c], 1).await.unwrap().unwrap();
        assert!(v.admitted || i >= 50, "request {i}: {v:?}");
        n += u64::from(v.admitted);
    }
    let stop = redis_time(&mut conn).await;
    assert!(n >= 50, "{n}");
    assert!(
        n <= 50 + (stop - start) / E,
        "{n} in {} µs",
        (stop - start) / 1000
    );
    // The TAT is at most the window (10 ms) ahead of Redis's now.
    let tat = stored_tat(&mut conn, &c.redis_key(prefix)).await;
    assert!(tat <= stop + 50 * E && tat > start, "{tat}");
}

/// `100000/minute` and a rate whose interval is not a whole microsecond
/// (`7/second`: 142 857 142 ns) decide in Redis exactly as in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_intervals_decide_as_in_memory() {
    let srv = RedisServer::start();
    let prefix = "odd:";
    let redis = redis_limiter(&srv, prefix);
    let mut conn = raw(&srv).await;
    let mem = memory();
    let seven = lim(7, 1000, 7);
    let many = lim(100_000, 60_000, 100_000);
    let v = agree(&redis, &mem, &[check("7", &seven)], &[3, 4, 1], "7/second").await;
    assert_eq!(admitted(&v), [true, true, false]);
    let tat = stored_tat(&mut conn, &check("7", &seven).redis_key(prefix)).await;
    // Seven intervals of 142 857 142 ns past a whole microsecond.
    assert_eq!(tat % 1000, (7 * 142_857_142) % 1000);
    let v = agree(
        &redis,
        &mem,
        &[check("m", &many)],
        &[60_000, 40_000, 100_000],
        "100000/minute",
    )
    .await;
    assert_eq!(admitted(&v), [true, true, false]);
    let tat = stored_tat(&mut conn, &check("m", &many).redis_key(prefix)).await;
    let now = redis_time(&mut conn).await;
    assert!(tat > now && tat - now <= 60_000_000_000, "{tat} {now}");
}
