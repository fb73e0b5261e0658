//! Per-key analytics through the gateway: requests with valid, revoked,
//! over-scope and made-up keys show up per outcome in
//! `GET /admin/v1/keys/{id}/usage` and in the overview after a flush; the
//! last counts are written at shutdown; bad parameters are 422
//! problem+json naming the problem. On SQLite, and on Postgres with
//! `GATEWAY_TEST_STORE=postgres`.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROUTES: &str = "[[routes]]\npath = \"/data\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\nscopes = [\"data:read\"]\n\n[[routes]]\npath = \"/write\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\nscopes = [\"data:write\"]\n";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Creates a key through the admin API: (id, key).
fn create(env: &Env, admin: &str, name: &str, scopes: &[&str]) -> (String, String) {
    let r: Value = client()
        .post(env.admin_url("/admin/v1/keys"))
        .header("X-API-Key", admin)
        .json(&json!({"name": name, "owner": format!("team-{name}"), "scopes": scopes}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    (
        r["id"].as_str().unwrap().to_owned(),
        r["key"].as_str().unwrap().to_owned(),
    )
}

fn get(env: &Env, admin: &str, path: &str) -> (u16, String, Value) {
    let r = client()
        .get(env.admin_url(path))
        .header("X-API-Key", admin)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, r.json().unwrap_or(Value::Null))
}

fn call(env: &Env, path: &str, key: Option<&str>) -> u16 {
    let mut rq = client().get(env.url(path));
    if let Some(k) = key {
        rq = rq.header("X-API-Key", k);
    }
    rq.send().unwrap().status().as_u16()
}

/// A key's totals over the last ten minutes, by minute.
fn totals(env: &Env, admin: &str, id: &str) -> Value {
    let from = now() - 600;
    let (status, _, v) = get(
        env,
        admin,
        &format!("/admin/v1/keys/{id}/usage?bucket=minute&from={from}"),
    );
    assert_eq!(status, 200, "{v}");
    v["totals"].clone()
}

#[test]
fn usage_shows_each_outcome_per_key_and_the_top_keys() {
    let env = Env::new(&format!("{ROUTES}\n[analytics]\nflush_interval = \"1s\"\n"));
    let admin = env.init();
    let _srv = env.serve();
    let (reader_id, reader) = create(&env, &admin, "reader", &["data:read"]);
    let (gone_id, gone) = create(&env, &admin, "gone", &["data:read"]);
    let r = client()
        .post(env.admin_url(&format!("/admin/v1/keys/{gone_id}/revoke")))
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    for _ in 0..3 {
        assert_eq!(call(&env, "/data", Some(&reader)), 200);
    }
    for _ in 0..2 {
        assert_eq!(call(&env, "/write", Some(&reader)), 403);
    }
    assert_eq!(call(&env, "/data", Some(&gone)), 401);
    // A made-up key (the overflow row "-") and no key at all (not
    // counted): never a key's own row.
    let made_up = format!("{}x", &reader[..reader.len() - 1]);
    assert_ne!(made_up, reader);
    assert_eq!(call(&env, "/data", Some(&made_up)), 401);
    assert_eq!(call(&env, "/data", None), 401);

    // Written within a flush interval or so.
    let from = now() - 600;
    let overview = |order: &str| {
        let (status, _, v) = get(
            &env,
            &admin,
            &format!("/admin/v1/usage?bucket=minute&from={from}&order={order}"),
        );
        assert_eq!(status, 200, "{v}");
        v["keys"].as_array().unwrap().clone()
    };
    let of = |keys: &[Value], id: &str| keys.iter().find(|k| k["key_id"] == id).cloned();
    let flushed = within(Duration::from_secs(20), || {
        let keys = overview("requests");
        totals(&env, &admin, &reader_id)["valid"] == 3
            && of(&keys, &gone_id).is_some_and(|k| k["counts"]["revoked"] == 1)
    });
    assert!(flushed.is_some(), "{}", totals(&env, &admin, &reader_id));
    let t = totals(&env, &admin, &reader_id);
    assert_eq!(t["insufficient_scope"], 2);
    assert_eq!(t["revoked"], 0);
    // A revoked key is gone from its own usage path (as from GET
    // /admin/v1/keys/{id}); the overview keeps its counts, the refusals
    // after the revocation included.
    let (status, ctype, v) = get(&env, &admin, &format!("/admin/v1/keys/{gone_id}/usage"));
    assert_eq!((status, ctype.as_str()), (404, "application/problem+json"));
    assert!(
        v["detail"].as_str().unwrap().contains("/admin/v1/usage"),
        "{v}"
    );
    let gone = of(&overview("refusals"), &gone_id).unwrap();
    assert_eq!(
        (gone["total"].as_u64(), gone["refused"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(gone["subject"], "", "refused before its owner was known");

    // The series: every minute of the range, zeros included.
    let (_, ctype, v) = get(
        &env,
        &admin,
        &format!("/admin/v1/keys/{reader_id}/usage?bucket=minute&from={from}"),
    );
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert_eq!(v["key_id"], reader_id.as_str());
    assert_eq!(v["bucket"], "minute");
    let points = v["points"].as_array().unwrap();
    assert!((10..=11).contains(&points.len()), "{}", points.len());
    let sum: u64 = points.iter().map(|p| p["total"].as_u64().unwrap()).sum();
    assert_eq!(sum, 5);
    // The default: the last 24 hours by hour.
    let (status, _, v) = get(&env, &admin, &format!("/admin/v1/keys/{reader_id}/usage"));
    assert_eq!(status, 200);
    assert_eq!(v["bucket"], "hour");
    assert_eq!(v["points"].as_array().unwrap().len(), 25);
    assert_eq!(v["totals"]["valid"], 3);

    // The overview: most requests first, with the subject; refusals.
    let (status, _, v) = get(
        &env,
        &admin,
        &format!("/admin/v1/usage?bucket=minute&from={from}"),
    );
    assert_eq!(status, 200, "{v}");
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys[0]["key_id"], reader_id.as_str());
    assert_eq!(keys[0]["subject"], "team-reader");
    assert_eq!(keys[0]["total"], 5);
    assert_eq!(keys[0]["refused"], 2);
    // The made-up key is in the overflow row, never a row of its own.
    let ids: Vec<&str> = keys.iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"-"), "{ids:?}");
    assert_eq!(ids.len(), 3, "{ids:?}");
    let overflow = keys.iter().find(|k| k["key_id"] == "-").unwrap();
    // (One wrong character breaks the key's checksum: malformed.)
    assert_eq!(overflow["counts"]["malformed"], 1);
    assert_eq!(overflow["total"], 1);
    let (_, _, v) = get(
        &env,
        &admin,
        &format!("/admin/v1/usage?bucket=hour&from={from}&order=refusals&limit=1"),
    );
    assert_eq!(v["order"], "refusals");
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["key_id"], reader_id.as_str());
    // The key is never in any answer, only its id.
    assert!(!v.to_string().contains(&reader));
}

#[test]
fn bad_usage_parameters_are_named() {
    let env = Env::new(ROUTES);
    let admin = env.init();
    let _srv = env.serve();
    let (id, _) = create(&env, &admin, "k", &["data:read"]);
    let problem = |path: &str, status: u16, says: &str| {
        let (st, ctype, v) = get(&env, &admin, path);
        assert_eq!(st, status, "{path}: {v}");
        assert_eq!(ctype, "application/problem+json", "{path}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{path}: {detail}");
    };
    let key = format!("/admin/v1/keys/{id}/usage");
    problem(&format!("{key}?bucket=week"), 422, "bucket");
    problem(&format!("{key}?from=200&to=100"), 422, "must be before");
    problem(&format!("{key}?from=100&to=100"), 422, "must be before");
    problem(
        &format!("{key}?bucket=minute&from=0&to=100000"),
        422,
        "too many points",
    );
    problem(&format!("{key}?from=-5"), 422, "from");
    problem(&format!("{key}?from=abc"), 422, "query");
    problem(&format!("{key}?since=1"), 422, "query");
    problem("/admin/v1/keys/key_nobody/usage", 404, "key_nobody");
    problem("/admin/v1/usage?order=slowest", 422, "order");
    problem(
        "/admin/v1/usage?bucket=day&from=0&to=253402300799",
        422,
        "too many points",
    );
    // Without the admin key: 401, as every admin route.
    let r = client().get(env.admin_url(&key)).send().unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn the_last_counts_are_written_at_shutdown() {
    // A flush interval longer than the test: only the final flush at
    // shutdown can have written these.
    let env = Env::new(&format!("{ROUTES}\n[analytics]\nflush_interval = \"5m\"\n"));
    let admin = env.init();
    let srv = env.serve();
    let (id, key) = create(&env, &admin, "late", &["data:read"]);
    for _ in 0..4 {
        assert_eq!(call(&env, "/data", Some(&key)), 200);
    }
    assert_eq!(totals(&env, &admin, &id)["valid"], 0);
    srv.stop_drained();
    let _srv = env.serve();
    assert_eq!(totals(&env, &admin, &id)["valid"], 4);
}

#[test]
fn analytics_can_be_switched_off() {
    let env = Env::new(&format!(
        "{ROUTES}\n[analytics]\nenabled = false\nflush_interval = \"1s\"\n"
    ));
    let admin = env.init();
    let srv = env.serve();
    let (id, key) = create(&env, &admin, "quiet", &["data:read"]);
    assert_eq!(call(&env, "/data", Some(&key)), 200);
    srv.stop_drained();
    let _srv = env.serve();
    // The endpoint still answers; nothing was counted.
    assert_eq!(totals(&env, &admin, &id)["valid"], 0);
}

#[test]
fn a_bad_analytics_setting_stops_the_start() {
    let env = Env::new("[analytics]\nretention_minutes = \"30s\"\n");
    let o = env.cli(&["config", "check"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("analytics.retention_minutes"), "{err}");
}

#[test]
fn two_gateways_on_one_store_add_up() {
    // One deployment, two gateways: each counts what it served, and the
    // store holds the sum (additive upserts into the same buckets).
    let extra = format!("{ROUTES}\n[analytics]\nflush_interval = \"1s\"\n");
    let a = Env::new(&extra);
    let b = Env::new(&extra);
    b.share_store(&a);
    let admin = a.init();
    let _sa = a.serve();
    let _sb = b.serve();
    let (id, key) = create(&a, &admin, "shared", &["data:read"]);
    // b learns of the new key through the store's change log.
    assert!(
        within(Duration::from_secs(20), || call(&b, "/data", Some(&key))
            == 200)
        .is_some(),
        "the second gateway never accepted the key"
    );
    for _ in 0..3 {
        assert_eq!(call(&a, "/data", Some(&key)), 200);
        assert_eq!(call(&b, "/data", Some(&key)), 200);
        assert_eq!(call(&b, "/write", Some(&key)), 403);
    }
    // 1 (the first success on b) + 3 + 3 valid, 3 refused for scope, on
    // either gateway's admin API.
    let done = within(Duration::from_secs(20), || {
        let t = totals(&b, &admin, &id);
        t["valid"] == 7 && t["insufficient_scope"] == 3
    });
    assert!(done.is_some(), "{}", totals(&b, &admin, &id));
    assert_eq!(totals(&a, &admin, &id), totals(&b, &admin, &id));
}
