//! The canary test: every secret sent in every place, valid and invalid,
//! then every log line at every level searched for it.
//!
//! The gateway logs at `trace` (the harness's `[log] level`); dependency
//! crates are capped by the product at `hyper=info,hyper_util=info,
//! h2=info,sqlx=warn,tower=info`, and neither the config (`level` takes
//! one level name) nor `RUST_LOG` (not read) can raise them: this is the
//! most the product lets a canary see.

use crate::harness::*;
use serde_json::{Value, json};

/// The status of a request that must have been answered.
fn status(r: reqwest::Result<reqwest::blocking::Response>, what: &str) -> u16 {
    r.unwrap_or_else(|e| panic!("{what}: not answered: {e}"))
        .status()
        .as_u16()
}

/// Every plaintext credential in an admin API answer (`key`, `secret`,
/// `client_secret`, or any `pc_…` string but a key's public `prefix`).
pub fn secrets_in(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if let Value::String(s) = x
                    && !["prefix", "id", "name", "owner"].contains(&k.as_str())
                    && (["key", "secret", "client_secret", "api_key", "admin_key"]
                        .contains(&k.as_str())
                        || s.starts_with("pc_")
                        || s.starts_with("pcs_"))
                {
                    out.push(s.clone());
                } else {
                    out.extend(secrets_in(x));
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| out.extend(secrets_in(x))),
        _ => {}
    }
    out
}

#[test]
fn no_key_reaches_any_log_line() {
    let up = upstream();
    let env = Env::new(&format!(
        r#"
[credentials]
allow_query_keys = true

[[routes]]
path = "/h"
upstream = "http://{a}"
auth = ["api_key_header", "bearer"]
scopes = ["s"]

[[routes]]
path = "/q"
upstream = "http://{a}"
auth = ["api_key_query"]

[[routes]]
path = "/c"
upstream = "http://{a}"
auth = ["api_key_cookie"]
"#,
        a = up.addr
    ));
    let admin = env.init();
    let good = env.create_key(&["--name", "good", "--scopes", "s"]);
    let noscope = env.create_key(&["--name", "noscope"]);
    let revoked = env.create_key(&["--name", "revoked", "--scopes", "s"]);
    let used = env.create_key(&["--name", "used", "--scopes", "s", "--uses", "1"]);
    // Every crate at trace, the libraries underneath included.
    let srv = env.serve_env(&[("PORTCULLIS_LOG__DEPENDENCY_LEVEL", "trace")]);
    let c = client();
    let o = env.cli(&["keys", "list", "--json"]);
    assert!(o.status.success());
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rid = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "revoked")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = env.cli(&["keys", "revoke", &rid]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli_out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!cli_out.contains(&revoked), "keys revoke printed the key");
    // The CLI's revoke reaches the running gateway (within its sync
    // interval): wait for it, so the revoked key is refused as revoked.
    assert!(
        within(std::time::Duration::from_secs(30), || {
            status(
                c.get(env.url("/h")).header("X-API-Key", &revoked).send(),
                "revoked probe",
            ) == 401
        })
        .is_some(),
        "the CLI's revoke never reached the gateway"
    );

    // a well-formed key nobody issued, and one with a broken checksum
    let unknown = {
        let mut k = good.clone().into_bytes();
        let i = 12;
        k[i] = if k[i] == b'a' { b'b' } else { b'a' };
        String::from_utf8(k).unwrap()
    };
    let garbage = "pc_live_thisisnotarealkeybutstillasecret_000000".to_owned();
    // (name, key, expected status on a route that takes it and whose
    // scopes it has; `used` has one use, spent by its first request)
    let keys: Vec<(&str, String)> = vec![
        ("good", good.clone()),
        ("noscope", noscope.clone()),
        ("revoked", revoked.clone()),
        ("used", used.clone()),
        ("unknown", unknown.clone()),
        ("admin", admin.clone()),
        ("garbage", garbage.clone()),
    ];
    let mut secrets: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
    // On Postgres, the store URL's password (sqlx logs at trace here).
    if postgres_mode() {
        secrets.push(crate::pg_server::PG_PASSWORD.to_owned());
    }
    let mut admin_created = Vec::new();
    let mut ok = 0usize;

    for (name, k) in &keys {
        let k = k.as_str();
        let valid = matches!(*name, "good" | "noscope" | "admin");
        let scoped = *name == "good";
        // /h takes the key in the header and as a bearer token, needs `s`.
        let want_h = if scoped {
            200
        } else if valid {
            403
        } else {
            401
        };
        let mut st = vec![
            (
                "header /h",
                status(c.get(env.url("/h")).header("X-API-Key", k).send(), name),
            ),
            (
                "bearer /h",
                status(c.get(env.url("/h")).bearer_auth(k).send(), name),
            ),
        ];
        if *name == "used" {
            // its one use is the first request's
            assert_eq!(st[0].1, 200, "used key's first use");
            st.remove(0);
        }
        for (what, s) in &st {
            assert_eq!(*s, want_h, "{name}: {what}");
        }
        let want_open = if valid { 200 } else { 401 };
        let s = status(c.get(env.url(&format!("/q?api_key={k}"))).send(), name);
        assert_eq!(s, want_open, "{name}: query /q");
        let s = status(
            c.get(env.url(&format!("/q?x=1&api_key={k}&api_key={k}")))
                .send(),
            name,
        );
        assert_eq!(s, 400, "{name}: the key twice in the query");
        let s = status(
            c.get(env.url("/c"))
                .header("Cookie", format!("api_key={k}"))
                .send(),
            name,
        );
        assert_eq!(s, want_open, "{name}: cookie /c");
        let s = status(
            c.get(env.url("/nowhere")).header("X-API-Key", k).send(),
            name,
        );
        assert_eq!(s, 404, "{name}: no route");
        let s = status(
            c.get(env.url("/auth/verify"))
                .header("X-Original-URI", format!("/q?api_key={k}"))
                .send(),
            name,
        );
        assert_eq!(s, want_open, "{name}: decision, key in the original URI");
        let s = status(
            c.get(env.url("/auth/verify"))
                .header("X-Original-URI", "/h")
                .header("X-API-Key", k)
                .send(),
            name,
        );
        assert_eq!(s, want_h, "{name}: decision, header");
        let s = status(
            c.get(env.admin_url("/admin/v1/keys"))
                .header("X-API-Key", k)
                .send(),
            name,
        );
        let want_admin = if *name == "admin" {
            200
        } else if valid {
            403
        } else {
            401
        };
        assert_eq!(s, want_admin, "{name}: admin API");
        let r = c
            .post(env.admin_url("/admin/v1/keys"))
            .header("X-API-Key", &admin)
            .json(&json!({"name": k, "bogus": k}))
            .send()
            .unwrap();
        let st = r.status().as_u16();
        // An unknown field: refused, naming the field, not its value.
        assert_eq!(st, 422, "{name}: admin create with a secret in the body");
        let v: Value = r.json().unwrap_or(Value::Null);
        admin_created.extend(secrets_in(&v));
        let r = c
            .post(env.admin_url("/admin/v1/keys"))
            .header("X-API-Key", &admin)
            .json(&json!({"name": format!("made-{name}"), "scopes": ["s"]}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{name}: admin create");
        let v: Value = r.json().unwrap();
        let made = secrets_in(&v);
        assert_eq!(made.len(), 1, "one plaintext key in {v}");
        admin_created.extend(made);
        ok += 1;
    }
    assert_eq!(ok, keys.len());
    // The keys the admin API made, used on a route and the decision
    // endpoint: served, and secrets too.
    for k in &admin_created {
        let s = status(c.get(env.url("/h")).header("X-API-Key", k).send(), "made");
        assert_eq!(s, 200, "a key from the admin API");
        let s = status(
            c.get(env.url("/auth/verify"))
                .header("X-Original-URI", format!("/q?api_key={k}"))
                .send(),
            "made",
        );
        assert_eq!(s, 200, "a key from the admin API in the original URI");
    }
    assert!(admin_created.len() >= keys.len());
    secrets.extend(admin_created);
    assert!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst) >= 10,
        "the upstream saw too few requests"
    );

    let log = srv.stop_drained();
    assert!(
        log.contains("portcullis::access"),
        "no access log at all?\n{log}"
    );
    // The product has no `trace!` events of its own, so `DEBUG` lines
    // are what shows the level is below info; the config says trace.
    let cfg = std::fs::read_to_string(env.config()).unwrap();
    assert!(cfg.contains("level = \"trace\""), "{cfg}");
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "the canary must run with trace logging on:\n{log}"
    );
    // Every public-listener request above has its access line: 8 per
    // key, 2 per admin-made key.
    let public = keys.len() * 8 + 2 * keys.len();
    let lines = log
        .lines()
        .filter(|l| l.contains("\"target\":\"portcullis::access\""))
        .count();
    assert!(
        lines >= public,
        "{lines} access lines for {public} requests"
    );
    assert_no_secrets(&log, &secrets);
    // The key's random part alone (without prefix and checksum).
    let randoms: Vec<String> = secrets
        .iter()
        .filter(|k| k.starts_with("pc_") && k.len() > 40)
        .map(|k| k[8..40].to_owned())
        .collect();
    assert_no_secrets(&log, &randoms);
    // and the access log does say which key was used, by id
    assert!(log.contains("\"key_id\":\"key_"), "{log}");
}

/// The canaries' search finds a secret however it was encoded: inside
/// a Basic header's base64 at each alignment, URL-safe, and URL-encoded.
#[test]
fn secret_forms_find_encoded_secrets() {
    let secret = "Canary-Password q7W9/e2R+t6Y8";
    for prefix in ["a:", "ab:", "abc:"] {
        let basic = b64(format!("{prefix}{secret}").as_bytes());
        let urlsafe = basic.replace('+', "-").replace('/', "_");
        for encoded in [&basic, &urlsafe] {
            assert!(
                secret_forms(secret).iter().any(|f| encoded.contains(f)),
                "{prefix}: {encoded} not found"
            );
        }
    }
    for encoded in [
        "password=Canary-Password%20q7W9%2Fe2R%2Bt6Y8",
        "password=Canary-Password+q7W9%2fe2R%2bt6Y8",
        "password=Canary%2DPassword%20q7W9%2Fe2R%2Bt6Y8",
    ] {
        assert!(
            secret_forms(secret).iter().any(|f| encoded.contains(f)),
            "{encoded} not found"
        );
    }
}
