//! The canary test: every secret sent in every place, valid and invalid,
//! then every log line at every level searched for it.

use crate::harness::*;
use serde_json::json;

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
    let srv = env.serve();
    let c = client();
    let o = env.cli(&["keys", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
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
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .find("pc_")
            .is_none_or(|_| !String::from_utf8_lossy(&o.stderr).contains(&revoked))
    );

    // a well-formed key nobody issued, and one with a broken checksum
    let unknown = {
        let mut k = good.clone().into_bytes();
        let i = 12;
        k[i] = if k[i] == b'a' { b'b' } else { b'a' };
        String::from_utf8(k).unwrap()
    };
    let mut secrets = vec![
        good.clone(),
        noscope.clone(),
        revoked.clone(),
        used.clone(),
        unknown.clone(),
        admin.clone(),
    ];
    let garbage = "pc_live_thisisnotarealkeybutstillasecret_000000".to_owned();
    secrets.push(garbage.clone());

    for k in &secrets {
        let _ = c.get(env.url("/h")).header("X-API-Key", k).send();
        let _ = c.get(env.url("/h")).bearer_auth(k).send();
        let _ = c.get(env.url(&format!("/q?api_key={k}"))).send();
        let _ = c
            .get(env.url(&format!("/q?x=1&api_key={k}&api_key={k}")))
            .send();
        let _ = c
            .get(env.url("/c"))
            .header("Cookie", format!("api_key={k}"))
            .send();
        let _ = c.get(env.url("/nowhere")).header("X-API-Key", k).send();
        let _ = c
            .get(env.url("/auth/verify"))
            .header("X-Original-URI", format!("/q?api_key={k}"))
            .send();
        let _ = c
            .get(env.url("/auth/verify"))
            .header("X-Original-URI", "/h")
            .header("X-API-Key", k)
            .send();
        let _ = c
            .get(env.admin_url("/admin/v1/keys"))
            .header("X-API-Key", k)
            .send();
        let _ = c
            .post(env.admin_url("/admin/v1/keys"))
            .header("X-API-Key", &admin)
            .json(&json!({"name": k, "bogus": k}))
            .send();
    }
    let log = srv.stop();
    assert!(
        log.contains("portcullis::access"),
        "no access log at all?\n{log}"
    );
    assert!(
        log.contains("\"level\":\"TRACE\"") || log.contains("TRACE") || log.contains("DEBUG"),
        "the canary must run with trace logging on:\n{log}"
    );
    for k in &secrets {
        let random = &k[8..40];
        assert!(
            !log.contains(random),
            "a secret reached the log:\n{}",
            log.lines().find(|l| l.contains(random)).unwrap()
        );
        let encoded = k.replace('_', "%5F");
        assert!(!log.contains(&encoded));
    }
    // and the access log does say which key was used, by id
    assert!(log.contains("\"key_id\":\"key_"), "{log}");
}
