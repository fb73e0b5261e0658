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
    assert_eq!(c.get(&keys).send().unwrap().status(), 401);
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
