//! The admin API on its own listener.

use crate::harness::*;
use serde_json::{Value, json};

#[test]
fn admin_api_manages_keys_with_audit() {
    let env = Env::new(
        "[[routes]]\npath = \"/data\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\n",
    );
    let admin = env.init();
    let plain = env.create_key(&["--name", "plain"]);
    let _srv = env.serve();
    let c = client();
    let keys = env.admin_url("/admin/v1/keys");

    // no key, a non-admin key, and the public listener
    let r = c.get(&keys).send().unwrap();
    assert_eq!(r.status(), 401);
    // Admin answers carry a request id, as public ones do.
    assert!(
        r.headers().contains_key("x-request-id"),
        "{:?}",
        r.headers()
    );
    let r = c.get(&keys).header("X-API-Key", &plain).send().unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        c.get(env.url("/admin/v1/keys"))
            .header("X-API-Key", &admin)
            .send()
            .unwrap()
            .status(),
        404
    );

    // create
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin)
        .json(&json!({"name": "svc", "owner": "team-a", "scopes": ["data:read", "data:write"], "expires_in": "30d", "metadata": {"tier": "gold"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let created: Value = r.json().unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["owner"], "team-a");
    assert_eq!(created["scopes"], "data:read data:write");
    assert_eq!(created["metadata"]["tier"], "gold");
    assert!(created.get("key_hash").is_none());
    assert_eq!(
        c.get(env.url("/data"))
            .header("X-API-Key", &key)
            .send()
            .unwrap()
            .status(),
        200
    );

    // list and show never return the key or its hash
    let r: Value = c
        .get(format!("{keys}?owner=team-a"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["keys"].as_array().unwrap().len(), 1);
    assert!(!r.to_string().contains(&key));
    let r: Value = c
        .get(format!("{keys}/{id}"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["id"], id.as_str());
    assert!(!r.to_string().contains(&key));

    // bad input: 415, 422 naming the field, 413, 404
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin)
        .body("{\"name\":\"x\"}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin)
        .json(&json!({"name": "x", "uses": -1}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<Value>().unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("uses")
    );
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin)
        .json(&json!({"nme": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin)
        .json(&json!({"name": "x", "expires_in": "forever"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let big = json!({"name": "x", "metadata": {"blob": "a".repeat(70_000)}});
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin)
        .json(&big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .get(format!("{keys}/key_nope"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // rotate: new key works at once, old works during grace
    let r = c
        .post(format!("{keys}/{id}/rotate"))
        .header("X-API-Key", &admin)
        .json(&json!({"grace": "1h"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let rotated: Value = r.json().unwrap();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(rotated["rotated_from"], id.as_str());
    assert_eq!(
        c.get(env.url("/data"))
            .header("X-API-Key", &new_key)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(env.url("/data"))
            .header("X-API-Key", &key)
            .send()
            .unwrap()
            .status(),
        200
    );

    // revoke through the admin API takes effect at once on this process
    let r = c
        .post(format!("{keys}/{id}/revoke"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(env.url("/data"))
            .header("X-API-Key", &key)
            .send()
            .unwrap()
            .status(),
        401
    );
    let r = c
        .delete(format!("{keys}/{id}"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);

    // disable / enable the replacement, at once
    let nid = rotated["id"].as_str().unwrap();
    assert_eq!(
        c.post(format!("{keys}/{nid}/disable"))
            .header("X-API-Key", &admin)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(env.url("/data"))
            .header("X-API-Key", &new_key)
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.post(format!("{keys}/{nid}/enable"))
            .header("X-API-Key", &admin)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(env.url("/data"))
            .header("X-API-Key", &new_key)
            .send()
            .unwrap()
            .status(),
        200
    );

    // every change left an audit event, with the acting admin key's id
    let r: Value = c
        .get(env.admin_url("/admin/v1/audit"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let actions: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "key.create",
        "key.rotate",
        "key.revoke",
        "key.disable",
        "key.enable",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let admin_id = r["events"][0]["actor"].as_str().unwrap();
    assert!(admin_id.starts_with("key_"), "{admin_id}");
    assert!(!r.to_string().contains(&key) && !r.to_string().contains(&new_key));
}

/// A key's id from the admin API's list, by the key's display prefix.
fn id_of(env: &Env, admin: &str, key: &str) -> String {
    let r: Value = client()
        .get(env.admin_url("/admin/v1/keys?limit=1000"))
        .header("X-API-Key", admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let prefix: String = key.chars().take(14).collect();
    r["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix.as_str())
        .unwrap_or_else(|| panic!("no key with prefix {prefix} in {r}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asserts a 409 `last_admin_key` problem that tells how to go on.
fn assert_last_admin(r: reqwest::blocking::Response, what: &str) {
    assert_eq!(r.status(), 409, "{what}");
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let p: Value = r.json().unwrap();
    assert_eq!(p["code"], "last_admin_key", "{what}: {p}");
    assert_eq!(p["status"], 409, "{what}: {p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("last active admin key")
            && detail.contains("create another admin key first")
            && detail.contains("--force-last-admin"),
        "{what}: {detail}"
    );
}

#[test]
fn the_last_admin_key_cannot_be_revoked_or_disabled_through_the_admin_api() {
    let env = Env::new("");
    let admin = env.init();
    // A client holding the admin scope: its tokens are no way into the
    // admin API, which takes managed keys only, so they do not count.
    let (client_id, secret) = env.add_client("ops", "admin", "client_credentials");
    let _srv = env.serve();
    let c = client();
    let keys = env.admin_url("/admin/v1/keys");
    let id = id_of(&env, &admin, &admin);

    for (method, url) in [
        (reqwest::Method::POST, format!("{keys}/{id}/revoke")),
        (reqwest::Method::DELETE, format!("{keys}/{id}")),
        (reqwest::Method::POST, format!("{keys}/{id}/disable")),
    ] {
        let r = c
            .request(method.clone(), &url)
            .header("X-API-Key", &admin)
            .send()
            .unwrap();
        assert_last_admin(r, &format!("{method} {url}"));
    }
    // Nothing changed: the key still opens the admin API.
    let r = c.get(&keys).header("X-API-Key", &admin).send().unwrap();
    assert_eq!(r.status(), 200);

    let token: Value = c
        .post(env.url("/oauth/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    assert_eq!(
        c.get(&keys).bearer_auth(token).send().unwrap().status(),
        401
    );

    // Rotation makes a new admin key at once, so it is allowed, even with
    // no grace; the replacement is then the last admin key.
    let r = c
        .post(format!("{keys}/{id}/rotate"))
        .header("X-API-Key", &admin)
        .json(&json!({"grace": "0s"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let rotated: Value = r.json().unwrap();
    let admin2 = rotated["key"].as_str().unwrap().to_owned();
    let id2 = rotated["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.get(&keys)
            .header("X-API-Key", &admin)
            .send()
            .unwrap()
            .status(),
        401
    );
    let r = c
        .post(format!("{keys}/{id2}/disable"))
        .header("X-API-Key", &admin2)
        .send()
        .unwrap();
    assert_last_admin(r, "disable the replacement");

    // With a second admin key, either may go, the acting one included.
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin2)
        .json(&json!({"name": "second admin", "scopes": "admin"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let second: Value = r.json().unwrap();
    let admin3 = second["key"].as_str().unwrap().to_owned();
    let id3 = second["id"].as_str().unwrap().to_owned();
    let r = c
        .post(format!("{keys}/{id2}/revoke"))
        .header("X-API-Key", &admin2)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(format!("{keys}/{id3}"))
        .header("X-API-Key", &admin3)
        .send()
        .unwrap();
    assert_last_admin(r, "delete the new last admin key");
}

/// Two admin keys, each used to revoke (or disable) the other at the same
/// moment: one change wins, the other is refused (409, or 401 when its
/// own key was already gone when it was checked), and one admin key is
/// left every time.
#[test]
fn concurrent_removals_of_the_last_two_admin_keys_leave_one() {
    let env = Env::new("");
    let mut survivor = env.init();
    let _srv = env.serve();
    let c = client();
    let keys = env.admin_url("/admin/v1/keys");
    let mut refused = std::collections::BTreeMap::new();
    for round in 0..12 {
        let r = c
            .post(&keys)
            .header("X-API-Key", &survivor)
            .json(&json!({"name": format!("admin {round}"), "scopes": ["admin"]}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "round {round}");
        let other: Value = r.json().unwrap();
        let other_key = other["key"].as_str().unwrap().to_owned();
        let other_id = other["id"].as_str().unwrap().to_owned();
        let survivor_id = id_of(&env, &survivor, &survivor);
        let action = if round % 3 == 2 { "disable" } else { "revoke" };
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let go = |acting: String, target: String| {
            let barrier = barrier.clone();
            let url = format!("{keys}/{target}/{action}");
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                c.post(url)
                    .header("X-API-Key", acting)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        };
        let a = go(survivor.clone(), other_id.clone());
        let b = go(other_key.clone(), survivor_id.clone());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let (won, lost) = match (a, b) {
            (200, l) => (survivor.clone(), l),
            (l, 200) => (other_key.clone(), l),
            other => panic!("round {round}: no change or both won: {other:?}"),
        };
        assert!(lost == 409 || lost == 401, "round {round}: {a} {b}");
        *refused.entry(lost).or_insert(0) += 1;
        survivor = won;
        // Exactly one active admin key: the winner's.
        let r: Value = c
            .get(&keys)
            .header("X-API-Key", &survivor)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let active = r["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["scopes"] == "admin" && k["disabled"] == false)
            .count();
        assert_eq!(active, 1, "round {round}: {r}");
    }
    eprintln!("losers' answers: {refused:?}");
}

#[test]
fn cli_refuses_the_last_admin_key_without_the_flag() {
    let env = Env::new("");
    env.init();
    let list = |env: &Env| -> Value {
        serde_json::from_slice(&env.cli(&["keys", "list", "--json", "--all"]).stdout).unwrap()
    };
    let id = list(&env)[0]["id"].as_str().unwrap().to_owned();
    for cmd in ["revoke", "disable"] {
        let o = env.cli(&["keys", cmd, &id]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
        assert!(
            err.starts_with("portcullis: error: ")
                && err.contains(&id)
                && err.contains("last active admin key")
                && err.contains("--force-last-admin"),
            "{cmd}: {err}"
        );
        assert!(o.stdout.is_empty());
        // The help says what the flag does.
        let help = env.cli(&["keys", cmd, "--help"]);
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("--force-last-admin") && help.contains("last active admin key"),
            "{help}"
        );
    }
    let k = &list(&env)[0];
    assert!(k["revoked_at"].is_null() && k["disabled"] == false, "{k}");

    // A non-admin key needs no flag.
    let plain = env.create_key(&["--name", "plain"]);
    assert!(!plain.is_empty());
    let plain_id = list(&env)
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "plain")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(env.cli(&["keys", "revoke", &plain_id]).status.success());

    // With the flag, it is done, and the audit trail says it was forced.
    let o = env.cli(&["keys", "disable", &id, "--force-last-admin"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = env.cli(&["keys", "revoke", &id, "--force-last-admin"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let k = &list(&env)
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(k["revoked_at"].is_i64() && k["disabled"] == true, "{k}");
}

#[test]
fn short_lived_admin_keys_do_not_make_the_last_lasting_one_removable() {
    // A new admin key that expires, or whose uses run out, would leave
    // nobody once it does: it does not count (found in review).
    let env = Env::new("");
    let admin = env.init();
    let _srv = env.serve();
    let c = client();
    let keys = env.admin_url("/admin/v1/keys");
    let id = id_of(&env, &admin, &admin);
    for body in [
        json!({"name": "brief", "scopes": ["admin"], "expires_in": "1h"}),
        json!({"name": "counted", "scopes": ["admin"], "uses": 5}),
    ] {
        let r = c
            .post(&keys)
            .header("X-API-Key", &admin)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{body}");
        let r = c
            .post(format!("{keys}/{id}/disable"))
            .header("X-API-Key", &admin)
            .send()
            .unwrap();
        assert_last_admin(r, &format!("disable beside {body}"));
    }
    // A lasting second admin key does make it removable.
    let r = c
        .post(&keys)
        .header("X-API-Key", &admin)
        .json(&json!({"name": "lasting", "scopes": ["admin"]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(format!("{keys}/{id}/disable"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `PATCH /admin/v1/keys/{id}` and `keys update`: each setting given is
/// replaced, the rest kept; the running gateway applies it; bad values
/// are 422 with a detail; the last admin key keeps its scope; a revoked
/// key is 404.
#[test]
fn key_settings_change_through_the_api_and_the_cli() {
    let env = Env::new(
        "[[routes]]\npath = \"/data\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\nscopes = [\"data:read\"]\n",
    );
    let admin = env.init();
    let key = env.create_key(&["--name", "svc", "--scopes", "other"]);
    let _srv = env.serve();
    let c = client();
    let id = id_of(&env, &admin, &key);
    let url = env.admin_url(&format!("/admin/v1/keys/{id}"));
    let data = |k: &str| {
        c.get(env.url("/data"))
            .header("X-API-Key", k)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(data(&key), 403);

    let r = c
        .patch(&url)
        .header("X-API-Key", &admin)
        .json(&json!({"scopes": ["data:read"], "uses": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["scopes"], "data:read");
    assert_eq!(v["remaining_uses"], 2);
    assert!(v["rate_limit"].is_null());
    // The gateway applies it (the change log, as for a revocation).
    within(std::time::Duration::from_secs(5), || data(&key) == 200)
        .expect("the new scope never reached the gateway");

    // Left out: kept; null: removed.
    let v: Value = c
        .patch(&url)
        .header("X-API-Key", &admin)
        .json(&json!({"rate_limit": "5/minute"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (v["scopes"].as_str(), v["rate_limit"].as_str()),
        (Some("data:read"), Some("5/minute"))
    );
    let v: Value = c
        .patch(&url)
        .header("X-API-Key", &admin)
        .json(&json!({"rate_limit": null, "uses": null}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        v["rate_limit"].is_null() && v["remaining_uses"].is_null(),
        "{v}"
    );

    // Bad values: 422 with a detail, nothing changed.
    for body in [
        json!({"uses": 0}),
        json!({"uses": 1.5}),
        json!({"rate_limit": "lots"}),
        json!({"scopes": ["bad scope"]}),
        json!({"scopes": null}),
        json!({"colour": "red"}),
    ] {
        let r = c
            .patch(&url)
            .header("X-API-Key", &admin)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let p: Value = r.json().unwrap();
        assert!(
            p["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}: {p}"
        );
    }

    // The last admin key keeps its admin scope.
    let admin_id = id_of(&env, &admin, &admin);
    let r = c
        .patch(env.admin_url(&format!("/admin/v1/keys/{admin_id}")))
        .header("X-API-Key", &admin)
        .json(&json!({"scopes": ["data:read"]}))
        .send()
        .unwrap();
    assert_last_admin(r, "PATCH scopes of the last admin key");

    // The CLI: the same change, one line on stderr; bad input exits 2.
    let out = env.cli(&[
        "keys",
        "update",
        &id,
        "--scopes",
        "other",
        "--uses",
        "unlimited",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    within(std::time::Duration::from_secs(5), || data(&key) == 403)
        .expect("the CLI's change never reached the gateway");
    let out = env.cli(&["keys", "update", &id, "--uses", "many"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.cli(&["keys", "update", &id]);
    assert_eq!(out.status.code(), Some(2));

    // Revoked: gone to this API.
    let r = c.delete(&url).header("X-API-Key", &admin).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .patch(&url)
        .header("X-API-Key", &admin)
        .json(&json!({"uses": 3}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}
