//! Rate limits over HTTP: the memory backend, per caller and per route,
//! 429 with Retry-After and the IETF RateLimit fields.

use crate::harness::*;

const CFG: &str = r#"
[rate_limit]
legacy_headers = true

[[routes]]
path = "/public"
methods = ["GET"]
upstream = "demo"
rate_limit = "3/minute"

[[routes]]
path = "/data"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "2/minute; 100/day"

[[routes]]
path = "/report"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "5/minute"
cost = 3
"#;

#[test]
fn public_routes_count_per_address_and_answer_429_with_headers() {
    let env = Env::new(CFG);
    env.init();
    let _s = env.serve();
    let c = client();
    for i in 0..3 {
        let r = c.get(env.url("/public")).send().unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        let h = r.headers();
        assert_eq!(h["ratelimit-policy"], "\"p0\";q=3;w=60");
        assert!(
            h["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!("\"p0\";r={};t=", 2 - i)),
            "{:?}",
            h["ratelimit"]
        );
        assert_eq!(h["x-ratelimit-limit"], "3");
    }
    for _ in 0..5 {
        let r = c.get(env.url("/public")).send().unwrap();
        assert_eq!(r.status(), 429);
        let ra: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&ra), "Retry-After {ra}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["code"], "rate_limited");
    }
}

#[test]
fn each_key_has_its_own_allowance_and_several_limits_decide_together() {
    let env = Env::new(CFG);
    env.init();
    let a = env.create_key(&["--name", "a"]);
    let b = env.create_key(&["--name", "b"]);
    let _s = env.serve();
    let c = client();
    let get = |k: &str, p: &str| c.get(env.url(p)).header("X-API-Key", k).send().unwrap();
    assert_eq!(get(&a, "/data").status(), 200);
    let r = get(&a, "/data");
    assert_eq!(r.status(), 200);
    // The tighter limit is the one reported.
    assert_eq!(r.headers()["ratelimit-policy"], "\"p0\";q=2;w=60");
    assert_eq!(get(&a, "/data").status(), 429);
    // Another key, and another route, count apart.
    assert_eq!(get(&b, "/data").status(), 200);
    assert_eq!(get(&b, "/data").status(), 200);
    assert_eq!(get(&a, "/report").status(), 200);
    // A cost of 3 against 5/minute: the second request does not fit.
    assert_eq!(get(&a, "/report").status(), 429);
    // Denied credentials are not counted against anyone.
    for _ in 0..5 {
        assert_eq!(get("pc_live_nope", "/report").status(), 401);
    }
    assert_eq!(get(&b, "/report").status(), 200);
}

#[test]
fn bad_policies_are_refused_at_start() {
    for (cfg, want) in [
        (
            "[[routes]]\npath = \"/x\"\nupstream = \"demo\"\nrate_limit = \"5/fortnight\"\n",
            "routes[0].rate_limit",
        ),
        (
            "[[routes]]\npath = \"/x\"\nupstream = \"demo\"\nrate_limit = \"0/minute\"\n",
            "routes[0].rate_limit",
        ),
        (
            "[rate_limit]\nbackend = \"redis://:hunter2@[::1\"\n",
            "rate_limit.backend",
        ),
        (
            "[rate_limit]\nbackend = \"postgres://db\"\n",
            "rate_limit.backend",
        ),
        (
            "[rate_limit]\nbackend = \"redis://127.0.0.1:1\"\non_backend_error = \"maybe\"\n",
            "rate_limit.on_backend_error",
        ),
        (
            "[rate_limit]\non_backend_error = \"deny\"\n",
            "rate_limit.on_backend_error",
        ),
        (
            "[[routes]]\npath = \"/x\"\nupstream = \"demo\"\nrate_limit_by = \"moon\"\n",
            "routes[0].rate_limit_by",
        ),
        ("[rate_limit]\ndefault = \"lots\"\n", "rate_limit.default"),
        // Faster than one a nanosecond cannot be counted.
        (
            "[[routes]]\npath = \"/x\"\nupstream = \"demo\"\nrate_limit = \"1000000001/second\"\n",
            "routes[0].rate_limit",
        ),
        (
            "[[routes]]\npath = \"/x\"\nupstream = \"demo\"\nrate_limit = \"1/hour\"\ncost = 2\n",
            "routes[0].cost",
        ),
    ] {
        let env = Env::new(cfg);
        let o = env.cli(&["config", "check"]);
        assert_eq!(o.status.code(), Some(2), "{cfg}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{cfg}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        // A Redis URL may carry a password: never repeated.
        assert!(!err.contains("hunter2"), "{err}");
    }
}

const POOLS: &str = r#"
[[routes]]
path = "/mine"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "2/hour"

[[routes]]
path = "/team"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "3/hour"
rate_limit_by = "owner"

[[routes]]
path = "/shared"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "4/hour"
rate_limit_by = "route"

[[routes]]
path = "/metered"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "2/hour"
cost = 2
"#;

/// A key's own limit replaces the route's per-caller limit and spans
/// routes; `owner` pools an owner's keys; `route` pools everyone.
#[test]
fn key_overrides_owner_pools_and_route_pools() {
    let env = Env::new(POOLS);
    env.init();
    let a1 = env.create_key(&["--name", "a1", "--owner", "acme"]);
    let a2 = env.create_key(&["--name", "a2", "--owner", "acme"]);
    let b = env.create_key(&["--name", "b", "--owner", "bolt"]);
    let vip = env.create_key(&["--name", "vip", "--owner", "bolt", "--rate", "5/hour"]);
    let _s = env.serve();
    let c = client();
    let get = |k: &str, p: &str| c.get(env.url(p)).header("X-API-Key", k).send().unwrap();

    // Per caller: each key has 2 on /mine.
    for k in [&a1, &a2] {
        assert_eq!(get(k, "/mine").status(), 200);
        assert_eq!(get(k, "/mine").status(), 200);
        assert_eq!(get(k, "/mine").status(), 429);
    }
    // Per owner: acme's two keys share 3 on /team; bolt has its own.
    assert_eq!(get(&a1, "/team").status(), 200);
    assert_eq!(get(&a2, "/team").status(), 200);
    assert_eq!(get(&a1, "/team").status(), 200);
    assert_eq!(get(&a2, "/team").status(), 429);
    assert_eq!(get(&b, "/team").status(), 200);

    // The key's own 5/hour replaces 2/hour on /mine and 3/hour (owner) on
    // /team, and is one allowance across both.
    for _ in 0..3 {
        let r = get(&vip, "/mine");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"k0\";q=5;w=3600");
    }
    assert_eq!(get(&vip, "/team").status(), 200);
    assert_eq!(get(&vip, "/team").status(), 200);
    let r = get(&vip, "/mine");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"k0\";q=5;w=3600");

    // Per route: 4 for everyone together, the vip key too (its own limit
    // is spent, and a whole-route limit applies on top of it anyway).
    assert_eq!(get(&a1, "/shared").status(), 200);
    assert_eq!(get(&a2, "/shared").status(), 200);
    assert_eq!(get(&b, "/shared").status(), 200);
    assert_eq!(get(&b, "/shared").status(), 200);
    assert_eq!(get(&a1, "/shared").status(), 429);
}

/// Quotas are spent only by requests the rate limiter admitted, by the
/// route's cost; a refilled quota that is spent answers 429
/// `quota_exceeded` with the time to the refill.
#[test]
fn quotas_spend_the_route_cost_and_never_on_a_rate_limited_request() {
    let env = Env::new(POOLS);
    env.init();
    let k = env.create_key(&["--name", "q", "--uses", "5", "--refill", "day"]);
    let _s = env.serve();
    let c = client();
    let get = |p: &str| c.get(env.url(p)).header("X-API-Key", &k).send().unwrap();
    // /metered: 2/hour at a cost of 2: the first is admitted and costs 2
    // uses; the rest are rate-limited.
    assert_eq!(get("/metered").status(), 200);
    for _ in 0..5 {
        assert_eq!(get("/metered").status(), 429);
    }
    let left = |env: &Env| {
        let o = env.cli(&["keys", "list", "--owner", "q", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array().unwrap()[0]["remaining_uses"].as_i64().unwrap()
    };
    // Rate-limited requests spent nothing.
    assert_eq!(left(&env), 3);
    // /mine (cost 1, 2/hour): spends one use each.
    assert_eq!(get("/mine").status(), 200);
    assert_eq!(get("/mine").status(), 200);
    assert_eq!(left(&env), 1);
    // Spend the rest on /team (3/hour, cost 1), then the quota answers.
    let mut last = None;
    for _ in 0..4 {
        let r = get("/team");
        if r.status() != 200 {
            last = Some(r);
            break;
        }
    }
    let r = last.expect("the quota ran out");
    assert_eq!(r.status(), 429);
    let ra: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&ra), "{ra}");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "quota_exceeded");
}

/// The token and login endpoints are limited per client address.
#[test]
fn token_and_login_endpoints_are_limited_per_address() {
    let env = Env::new(
        "[rate_limit]\nauth_endpoints = \"3/hour\"\n[tokens]\nissuer = \"http://127.0.0.1\"\n",
    );
    env.init();
    let _s = env.serve();
    let c = client();
    for i in 0..3 {
        let r = c
            .post(env.url("/oauth/token"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "request {i}");
    }
    let r = c
        .post(env.url("/auth/login"))
        .form(&[("username", "u"), ("password", "p")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "rate_limited");
}

/// Per-address limits count the real client: a spoofed X-Forwarded-For
/// from an untrusted peer changes nothing; behind a trusted proxy that
/// writes `Forwarded`, its `for=` decides and X-Forwarded-For is ignored.
#[test]
fn client_addresses_come_only_from_trusted_proxies() {
    let route = "[[routes]]\npath = \"/p\"\nmethods = [\"GET\"]\nupstream = \"demo\"\nrate_limit = \"2/hour\"\n";
    let c = client();

    let env = Env::with_server("trusted_proxies = []", route);
    env.init();
    let _s = env.serve();
    let get = |xff: &str| {
        c.get(env.url("/p"))
            .header("X-Forwarded-For", xff)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(get("1.1.1.1"), 200);
    assert_eq!(get("2.2.2.2"), 200);
    assert_eq!(get("3.3.3.3"), 429);

    let env = Env::with_server("forwarded_header = \"forwarded\"", route);
    env.init();
    let _s = env.serve();
    let get = |fwd: &str, xff: &str| {
        c.get(env.url("/p"))
            .header("Forwarded", fwd)
            .header("X-Forwarded-For", xff)
            .send()
            .unwrap()
            .status()
    };
    for x in ["7.7.7.7", "8.8.8.8"] {
        assert_eq!(get("for=\"[2001:db8::1]:443\"", x), 200);
    }
    // Same /64, other X-Forwarded-For: the same allowance, spent.
    assert_eq!(get("for=\"[2001:db8::2]\"", "9.9.9.9"), 429);
    // Another client, named by the proxy.
    assert_eq!(get("for=192.0.2.1", "7.7.7.7"), 200);
}

const FAST: &str = r#"
[[routes]]
path = "/fast"
methods = ["GET"]
upstream = "demo"
rate_limit = "5000/second"

[[routes]]
path = "/minute"
methods = ["GET"]
upstream = "demo"
rate_limit = "100000/minute"
"#;

/// Limits faster than 1000 a second (once refused at start) start, and
/// count to the microsecond: the first request from idle leaves exactly
/// the burst less one (a whole interval of 200 µs or 600 µs spent), and
/// the headers name the policy in whole seconds as before.
#[test]
fn limits_faster_than_a_thousand_a_second_start_and_count() {
    let env = Env::new(FAST);
    env.init();
    let o = env.cli(&["config", "check"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _s = env.serve();
    let c = client();
    for (path, policy, first) in [
        ("/fast", "\"p0\";q=5000;w=1", "\"p0\";r=4999;t=1"),
        ("/minute", "\"p0\";q=100000;w=60", "\"p0\";r=99999;t=1"),
    ] {
        let r = c.get(env.url(path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["ratelimit-policy"], policy, "{path}");
        assert_eq!(r.headers()["ratelimit"], first, "{path}");
    }
}
