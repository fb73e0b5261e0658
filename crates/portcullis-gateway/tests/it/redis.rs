//! Rate limits shared through a real redis-server: several gateway
//! processes count against one allowance exactly; when Redis dies each
//! answers as its `on_backend_error` says, without waiting on it, and
//! shared limiting comes back by itself when Redis does.
//!
//! Limits are per hour, so counts are exact on any machine and nothing
//! waits for a window to pass.

use crate::harness::*;
use crate::redis_server::RedisServer;
use reqwest::blocking::{Client, Response};
use std::time::Duration;

/// `r=N` of the `RateLimit` field (`"p0";r=4;t=720`).
fn remaining(r: &Response) -> Option<u32> {
    let v = r.headers().get("ratelimit")?.to_str().ok()?;
    v.split(';')
        .find_map(|p| p.strip_prefix("r="))?
        .parse()
        .ok()
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// What a client saw of one answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    remaining: Option<u32>,
    policy: Option<String>,
    retry_after: Option<String>,
}

impl Answer {
    fn of(r: &Response) -> Answer {
        Answer {
            status: r.status().as_u16(),
            remaining: remaining(r),
            policy: header(r, "ratelimit-policy"),
            retry_after: header(r, "retry-after"),
        }
    }
}

/// Points `env`'s config at `with`'s store: one deployment, several
/// gateways (a SQLite file or a Postgres database, as the suite runs).
fn share_store(env: &Env, with: &Env) {
    env.share_store(with);
}

#[test]
fn gateways_sharing_redis_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    // A generous timeout: this test is about exact counts, not outages;
    // and `deny`, so a slow Redis would show as a 503, never as a silent
    // local count.
    let cfg = format!(
        r#"
[rate_limit]
backend = "{url}"
timeout_ms = 1000
on_backend_error = "deny"

[[routes]]
path = "/shared"
methods = ["GET"]
upstream = "demo"
rate_limit = "30/hour"
rate_limit_by = "route"

[[routes]]
path = "/tight"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "2/hour"
rate_limit_by = "route"

[[routes]]
path = "/open"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
"#,
        url = redis.url()
    );
    let envs: Vec<Env> = (0..3).map(|_| Env::new(&cfg)).collect();
    envs[0].init();
    let key = envs[0].create_key(&["--name", "k", "--rate", "5/hour"]);
    for e in &envs[1..] {
        share_store(e, &envs[0]);
    }
    let _servers: Vec<Server> = envs.iter().map(Env::serve).collect();

    // 12 clients × 10 requests, spread over the three gateways.
    let results: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|t| {
                let envs = &envs;
                s.spawn(move || {
                    let c = client();
                    (0..10)
                        .map(|j| {
                            Answer::of(&c.get(envs[(t + j) % 3].url("/shared")).send().unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut admitted: Vec<u32> = results
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.remaining.unwrap())
        .collect();
    assert_eq!(admitted.len(), 30, "{results:?}");
    // Each admission saw every one before it, whichever gateway took it.
    admitted.sort_unstable();
    assert_eq!(admitted, (0..30).collect::<Vec<_>>());
    for r in results.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.remaining, Some(0), "{r:?}");
        assert_eq!(r.policy.as_deref(), Some("\"p0\";q=30;w=3600"), "{r:?}");
        let ra: u64 = r.retry_after.as_deref().unwrap().parse().unwrap();
        assert!(ra >= 1, "{r:?}");
    }
    let c = client();
    let r = c.get(envs[1].url("/shared")).send().unwrap();
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "rate_limited");

    // A key with its own 5/hour (counted on every route) on a route with
    // a shared 2/hour on top: the route's limit refuses, and refusals
    // spend nothing of the key's own allowance, on any gateway.
    let get = |i: usize, p: &str| {
        c.get(envs[i % 3].url(p))
            .header("X-API-Key", &key)
            .send()
            .unwrap()
    };
    for (i, want) in [(0, 1), (1, 0)] {
        let r = get(i, "/tight");
        assert_eq!(r.status(), 200);
        assert_eq!(remaining(&r), Some(want));
        assert_eq!(r.headers()["ratelimit-policy"], "\"p0\";q=2;w=3600");
    }
    for i in 2..6 {
        let r = get(i, "/tight");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["ratelimit-policy"], "\"p0\";q=2;w=3600");
    }
    for (i, want) in [(1, 2), (2, 1), (0, 0)] {
        let r = get(i, "/open");
        assert_eq!(r.status(), 200, "{i}");
        assert_eq!(r.headers()["ratelimit-policy"], "\"k0\";q=5;w=3600");
        assert_eq!(remaining(&r), Some(want));
    }
    let r = get(1, "/open");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"k0\";q=5;w=3600");
}

const PW: &str = "gw-redis-s3cret";

fn outage_cfg(redis: &RedisServer, mode: &str) -> String {
    format!(
        r#"
[rate_limit]
backend = "{url}"
on_backend_error = "{mode}"
timeout_ms = 200
breaker_threshold = 3
breaker_cooldown = "1s"

[[routes]]
path = "/r"
methods = ["GET"]
upstream = "demo"
rate_limit = "5/hour"
rate_limit_by = "route"

[[routes]]
path = "/probe"
methods = ["GET"]
upstream = "demo"
rate_limit = "100000/hour"
rate_limit_by = "route"
"#,
        url = redis.url()
    )
}

/// A GET that must be answered while Redis is down or back: the client's
/// 20 s timeout is the hang detector (the Redis timeout is 200 ms, and a
/// dead Redis refuses connections at once); what is asserted is the
/// answer, not its speed.
fn quick(c: &Client, url: &str) -> Response {
    c.get(url)
        .send()
        .unwrap_or_else(|e| panic!("{url} not answered: {e}"))
}

/// One allowance of 5 on `/r`, shared by the three gateways: 4, 3, 2,
/// 1, 0 left, then each refuses.
fn spend_shared(c: &Client, envs: &[Env]) {
    for (i, want) in [(0, 4), (1, 3), (2, 2), (0, 1), (1, 0)] {
        let r = quick(c, &envs[i].url("/r"));
        assert_eq!(r.status(), 200, "gateway {i}");
        assert_eq!(remaining(&r), Some(want), "gateway {i}");
    }
    for (i, e) in envs.iter().enumerate() {
        let r = quick(c, &e.url("/r"));
        assert_eq!(r.status(), 429, "gateway {i}");
        assert_eq!(r.headers()["ratelimit-policy"], "\"p0\";q=5;w=3600");
    }
}

#[test]
fn redis_outage_is_handled_as_configured_and_sharing_resumes() {
    const MODES: [&str; 3] = ["local", "allow", "deny"];
    // With a password, to check no log line repeats it.
    let mut redis = RedisServer::start_with_password(PW);
    let envs: Vec<Env> = MODES
        .iter()
        .map(|m| Env::new(&outage_cfg(&redis, m)))
        .collect();
    let admin_keys: Vec<String> = envs.iter().map(Env::init).collect();
    let servers: Vec<Server> = envs.iter().map(Env::serve).collect();
    let (local, allow, deny) = (&envs[0], &envs[1], &envs[2]);
    let c = client();

    // Each gateway connects on first use.
    assert!(
        within(Duration::from_secs(30), || {
            c.get(deny.url("/probe")).send().unwrap().status() == 200
        })
        .is_some()
    );
    assert!(
        within(Duration::from_secs(30), || {
            c.get(allow.url("/probe"))
                .send()
                .unwrap()
                .headers()
                .contains_key("ratelimit")
        })
        .is_some()
    );
    for _ in 0..3 {
        c.get(local.url("/probe")).send().unwrap();
    }
    spend_shared(&c, &envs);

    redis.stop();
    // local: its own count, from a fresh 5.
    for i in 0..8 {
        let r = quick(&c, &local.url("/r"));
        if i < 5 {
            assert_eq!(r.status(), 200, "local {i}");
            assert_eq!(remaining(&r), Some(4 - i));
        } else {
            assert_eq!(r.status(), 429, "local {i}");
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    // allow: everything passes, with no count to report.
    for i in 0..8 {
        let r = quick(&c, &allow.url("/r"));
        assert_eq!(r.status(), 200, "allow {i}");
        assert!(!r.headers().contains_key("ratelimit"), "allow {i}");
    }
    // deny: 503 limiter_unavailable, try again after the cooldown.
    for i in 0..8 {
        let r = quick(&c, &deny.url("/r"));
        assert_eq!(r.status(), 503, "deny {i}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let ra: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&ra), "Retry-After {ra}");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["code"], "limiter_unavailable");
    }
    // Each says so once, as a warning.
    for (s, mode) in servers.iter().zip(MODES) {
        let warned = || {
            s.log()
                .lines()
                .any(|l| l.contains("breaker open") && l.contains("WARN"))
        };
        assert!(
            within(Duration::from_secs(30), warned).is_some(),
            "{mode}: no warning: {}",
            s.log()
        );
    }

    // The admin API reports the outage: the breaker, and the counts.
    let status = |i: usize| -> serde_json::Value {
        c.get(envs[i].admin_url("/admin/v1/rate-limit"))
            .header("X-API-Key", &admin_keys[i])
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let st = status(2);
    assert_eq!(st["backend"], "redis", "{st}");
    assert_eq!(st["on_backend_error"], "deny", "{st}");
    assert_ne!(st["breaker"], "closed", "{st}");
    assert_eq!(st["breaker_opened"], 1, "{st}");
    assert!(st["fallback_decisions"].as_u64().unwrap() >= 5, "{st}");
    assert!(st["redis_decisions"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["redis_errors"].as_u64().unwrap() >= 3, "{st}");

    // Back, and empty. Requests keep flowing; a probe after each
    // cooldown finds Redis, and each gateway goes back to it by itself.
    redis.start_again();
    for (s, e) in servers.iter().zip(&envs) {
        let resumed = within(Duration::from_secs(30), || {
            quick(&c, &e.url("/probe"));
            s.log().contains("shared limiting resumed")
        });
        assert!(resumed.is_some(), "not resumed: {}", s.log());
    }
    // Shared again: a fresh 5 for all three (for `local`, a 200 is
    // Redis's answer: its own count is spent).
    spend_shared(&c, &envs);
    assert_eq!(status(0)["breaker"], "closed");

    for (s, mode) in servers.into_iter().zip(MODES) {
        // The whole log: a clean exit, flushed, the readers at EOF.
        let log = s.stop_drained();
        let warnings = log
            .lines()
            .filter(|l| l.contains("breaker open") && l.contains("WARN"))
            .count();
        assert_eq!(warnings, 1, "{mode}: {log}");
        // The password, and its URL-encoded and base64 forms.
        assert_no_secrets(&log, &[PW.to_owned()]);
    }
}
