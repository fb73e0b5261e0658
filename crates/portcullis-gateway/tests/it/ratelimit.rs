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
