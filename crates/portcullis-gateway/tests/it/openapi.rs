//! The admin API's OpenAPI document: served without credentials, valid
//! by the real validator (openapi-spec-validator, from the test venv),
//! and true to the router and to the answers actually sent.

use crate::harness::*;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const DOC_PATH: &str = "/admin/v1/openapi.json";
const PROBLEM_JSON: &str = "application/problem+json";

/// Runs `python -m openapi_spec_validator FILE` from the test venv. A
/// missing venv or module is a failure, never a skip.
fn spec_validator(file: &Path) -> Output {
    let mut c = Command::new(venv_python());
    c.args(["-m", "openapi_spec_validator"]).arg(file);
    for k in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        c.env_remove(k);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("No module named"),
        "openapi-spec-validator is not installed in the venv: run scripts/install-test-deps.sh (from {})\n{err}",
        repo_root().display()
    );
    o
}

fn fetch_doc(env: &Env) -> (Value, String) {
    let r = client().get(env.admin_url(DOC_PATH)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let text = r.text().unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

/// (method, path, operation) of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            out.push((m.clone(), path.clone(), op.clone()));
        }
    }
    out
}

/// A concrete path for a documented one.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "key_nope")
        .replace("{name}", "nobody")
}

// ---- a small JSON Schema check ----------------------------------------

/// Follows `$ref`s within the document.
fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let ptr = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        s = doc
            .pointer(ptr)
            .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
    }
    s
}

/// The members a schema declares, through `$ref` and `allOf`; `None` for
/// a free-form object.
fn declared(doc: &Value, s: &Value) -> Option<BTreeSet<String>> {
    let s = resolve(doc, s);
    let mut set: Option<BTreeSet<String>> = None;
    if let Some(p) = s.get("properties").and_then(Value::as_object) {
        set.get_or_insert_with(BTreeSet::new)
            .extend(p.keys().cloned());
    }
    for b in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(d) = declared(doc, b) {
            set.get_or_insert_with(BTreeSet::new).extend(d);
        }
    }
    set
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Checks `v` against schema `s`: types, enums, required members,
/// properties, items, `allOf`/`oneOf`, `additionalProperties: false`, and
/// (stricter than JSON Schema) no member the schema does not declare.
fn check(doc: &Value, s: &Value, v: &Value, at: &str, strict: bool) -> Result<(), String> {
    let s = resolve(doc, s);
    if strict && let (Some(obj), Some(decl)) = (v.as_object(), declared(doc, s)) {
        let extra: Vec<&String> = obj.keys().filter(|k| !decl.contains(*k)).collect();
        if !extra.is_empty() {
            return Err(format!(
                "{at}: members {extra:?} are sent but not documented"
            ));
        }
    }
    for b in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(doc, b, v, at, false)?;
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one
            .iter()
            .filter(|b| check(doc, b, v, at, strict).is_ok())
            .count();
        if n != 1 {
            return Err(format!("{at}: {v} matches {n} of oneOf, not 1"));
        }
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => {
            return Err(format!("{at}: {v} is not {t}"));
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)) => {
            return Err(format!("{at}: {v} is none of {ts:?}"));
        }
        _ => {}
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    if s.get("format").and_then(Value::as_str) == Some("uri")
        && !v.as_str().is_some_and(|u| u.contains("://"))
    {
        return Err(format!("{at}: {v} is not a URI"));
    }
    if let Some(obj) = v.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                return Err(format!("{at}: required member {r} is missing"));
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, ps) in props {
                if let Some(mv) = obj.get(k) {
                    check(doc, ps, mv, &format!("{at}.{k}"), true)?;
                }
            }
            if s.get("additionalProperties") == Some(&Value::Bool(false))
                && let Some(k) = obj.keys().find(|k| !props.contains_key(*k))
            {
                return Err(format!("{at}: member {k} is not allowed"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, e) in arr.iter().enumerate() {
            check(doc, items, e, &format!("{at}[{i}]"), true)?;
        }
    }
    Ok(())
}

// ---- calling the admin API against its document -------------------------

enum Auth<'a> {
    None,
    /// The admin key in the document's API-key header.
    Header,
    /// The admin key as `Authorization: Bearer`.
    Bearer,
    /// Another key in the API-key header.
    Key(&'a str),
    /// Both at once.
    Both,
}

enum Body {
    None,
    Json(Value),
    /// Bytes with no content type.
    Raw(&'static str),
}

struct Api<'a> {
    env: &'a Env,
    doc: &'a Value,
    admin: String,
    header: String,
    c: reqwest::blocking::Client,
    /// (method, documented path, status) of every answer checked.
    seen: RefCell<BTreeSet<(String, String, u16)>>,
}

impl Api<'_> {
    /// Sends a request, then checks that its status is documented for
    /// the operation, that the content type is the documented one, and
    /// that the body matches the documented schema. Returns the status
    /// and body.
    fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        auth: Auth,
        body: Body,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut rb = self.c.request(m, self.env.admin_url(path));
        rb = match auth {
            Auth::None => rb,
            Auth::Header => rb.header(self.header.as_str(), &self.admin),
            Auth::Bearer => rb.bearer_auth(&self.admin),
            Auth::Key(k) => rb.header(self.header.as_str(), k),
            Auth::Both => rb
                .header(self.header.as_str(), &self.admin)
                .bearer_auth(&self.admin),
        };
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb.json(&v),
            Body::Raw(s) => rb.body(s),
        };
        let r = rb.send().unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = r.text().unwrap();
        let what = format!("{method} {path} -> {status}");
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let resp = &op["responses"][status.to_string()];
        assert!(resp.is_object(), "{what}: status not documented: {text}");
        let body = match resp.get("content").and_then(Value::as_object) {
            None => {
                assert!(text.is_empty(), "{what}: documented without a body: {text}");
                Value::Null
            }
            Some(content) => {
                assert_eq!(content.len(), 1, "{what}");
                let (media, mt) = content.iter().next().unwrap();
                assert_eq!(ct.as_deref(), Some(media.as_str()), "{what}: content type");
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
                if let Err(e) = check(self.doc, &mt["schema"], &v, "body", true) {
                    panic!("{what}: the body does not match its schema: {e}\n{v:#}");
                }
                v
            }
        };
        if status >= 400 {
            assert_eq!(ct.as_deref(), Some(PROBLEM_JSON), "{what}");
        }
        self.seen
            .borrow_mut()
            .insert((method.to_owned(), template.to_owned(), status));
        (status, body)
    }
}

#[test]
fn admin_openapi_document_is_served_valid_and_true_to_the_api() {
    let env = Env::new(
        "[[routes]]\npath = \"/data\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\n",
    );
    let admin = env.init();
    let _srv = env.serve();
    let c = client();

    // (a) served on the admin listener without a credential, JSON,
    // not cached; not on the public listener.
    let (doc, text) = fetch_doc(&env);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Portcullis admin API");
    assert!(!doc["info"]["version"].as_str().unwrap().is_empty());
    assert_eq!(c.get(env.url(DOC_PATH)).send().unwrap().status(), 404);
    // It never holds the admin key (nor anything else secret).
    assert!(!text.contains(&admin));

    // (b) the real validator accepts it, and refuses a broken copy (so it
    // really ran).
    let file = env.dir.path().join("admin-openapi.json");
    std::fs::write(&file, &text).unwrap();
    let o = spec_validator(&file);
    assert!(
        o.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("OK"));
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("info");
    let bad = env.dir.path().join("broken.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    assert!(!spec_validator(&bad).status.success());

    // (c) the operations are exactly the routes the router is built from…
    let served: BTreeSet<(String, String)> = portcullis::admin::openapi::served_routes()
        .into_iter()
        .map(|(m, p, _)| (m.as_str().to_ascii_lowercase(), p.to_owned()))
        .collect();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    assert_eq!(
        served, documented,
        "the router's routes and the document's operations differ"
    );

    // (d) every operation but the document itself requires the admin scope
    // through schemes the document defines: the API-key header and bearer.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["APIKeyHeader"]["type"], "apiKey");
    assert_eq!(schemes["APIKeyHeader"]["in"], "header");
    assert_eq!(schemes["APIKeyHeader"]["name"], "X-API-Key");
    assert_eq!(schemes["HTTPBearer"]["type"], "http");
    assert_eq!(schemes["HTTPBearer"]["scheme"], "bearer");
    for (m, p, op) in operations(&doc) {
        if p == DOC_PATH {
            assert!(
                op.get("security").is_none(),
                "{m} {p} is served without credentials"
            );
            continue;
        }
        let reqs = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{m} {p}: no security"));
        let mut named = BTreeSet::new();
        for req in reqs {
            for (scheme, scopes) in req.as_object().unwrap() {
                assert!(
                    schemes.contains_key(scheme),
                    "{m} {p}: undefined scheme {scheme}"
                );
                assert_eq!(scopes, &json!(["admin"]), "{m} {p}: {scheme}");
                named.insert(scheme.as_str());
            }
        }
        assert_eq!(
            named,
            BTreeSet::from(["APIKeyHeader", "HTTPBearer"]),
            "{m} {p}"
        );
    }

    let api = Api {
        env: &env,
        doc: &doc,
        admin: admin.clone(),
        header: schemes["APIKeyHeader"]["name"].as_str().unwrap().to_owned(),
        c: client(),
        seen: RefCell::new(BTreeSet::new()),
    };

    // …and the router really serves each of them, behind the admin check
    // (401 without a credential), and no other method on those paths.
    for (m, p, _) in operations(&doc) {
        let (status, _) = api.call(&m, &p, &concrete(&p), Auth::None, Body::None);
        let want = if p == DOC_PATH { 200 } else { 401 };
        assert_eq!(status, want, "{m} {p} without a credential");
    }
    let paths: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
    for p in &paths {
        for m in ["get", "post", "put", "patch", "delete"] {
            if documented.contains(&(m.to_owned(), p.clone())) {
                continue;
            }
            let r = c
                .request(
                    reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap(),
                    env.admin_url(&concrete(p)),
                )
                .header("X-API-Key", &admin)
                .send()
                .unwrap();
            assert_eq!(r.status(), 405, "{m} {p} is served but not documented");
        }
    }

    // (e) every answer, success or problem, matches the document: keys…
    let keys = "/admin/v1/keys";
    let (s, created) = api.call(
        "post",
        keys,
        keys,
        Auth::Header,
        Body::Json(json!({"name": "svc", "owner": "team-a", "scopes": ["data:read"], "expires_in": "30d", "uses": 5, "refill": "day", "rate_limit": "100/minute", "metadata": {"tier": "gold"}})),
    );
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["key"].as_str().unwrap().starts_with("pc_"));
    let (s, _) = api.call(
        "post",
        keys,
        keys,
        Auth::Bearer,
        Body::Json(json!({"name": "second", "scopes": "data:read data:write"})),
    );
    assert_eq!(s, 201);
    let (s, plain) = api.call(
        "post",
        keys,
        keys,
        Auth::Header,
        Body::Json(json!({"name": "plain"})),
    );
    assert_eq!(s, 201);
    let plain = plain["key"].as_str().unwrap().to_owned();
    let (s, list) = api.call("get", keys, keys, Auth::Header, Body::None);
    assert_eq!(s, 200);
    assert!(list["keys"].as_array().unwrap().len() >= 4);
    assert!(list["next_after"].is_null());
    let (s, page) = api.call(
        "get",
        keys,
        &format!("{keys}?limit=1"),
        Auth::Bearer,
        Body::None,
    );
    assert_eq!(s, 200);
    assert!(page["next_after"].is_string());
    assert_eq!(
        api.call(
            "get",
            keys,
            &format!("{keys}?limit=x"),
            Auth::Header,
            Body::None
        )
        .0,
        422
    );
    assert_eq!(
        api.call(
            "post",
            keys,
            keys,
            Auth::Header,
            Body::Raw("{\"name\":\"x\"}")
        )
        .0,
        415
    );
    assert_eq!(
        api.call(
            "post",
            keys,
            keys,
            Auth::Header,
            Body::Json(json!({"nme": "x"}))
        )
        .0,
        422
    );
    let big = json!({"name": "x", "metadata": {"blob": "a".repeat(70_000)}});
    assert_eq!(
        api.call("post", keys, keys, Auth::Header, Body::Json(big))
            .0,
        413
    );
    // the admin check's refusals
    assert_eq!(
        api.call("get", keys, keys, Auth::Key(&plain), Body::None).0,
        403
    );
    assert_eq!(
        api.call("get", keys, keys, Auth::Key("pc_live_nope"), Body::None)
            .0,
        401
    );
    assert_eq!(api.call("get", keys, keys, Auth::Both, Body::None).0, 400);

    let key = "/admin/v1/keys/{id}";
    let one = format!("{keys}/{id}");
    let (s, shown) = api.call("get", key, &one, Auth::Header, Body::None);
    assert_eq!(s, 200);
    assert_eq!(shown["id"], id.as_str());
    assert!(shown.get("key").is_none());
    assert_eq!(
        api.call(
            "get",
            key,
            &format!("{keys}/key_nope"),
            Auth::Header,
            Body::None
        )
        .0,
        404
    );

    // the rotate body is optional, and documented so
    let rotate = "/admin/v1/keys/{id}/rotate";
    assert_ne!(
        doc["paths"][rotate]["post"]["requestBody"]["required"],
        true
    );
    let (s, rotated) = api.call(
        "post",
        rotate,
        &format!("{one}/rotate"),
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 201);
    assert_eq!(rotated["rotated_from"], id.as_str());
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let (s, _) = api.call(
        "post",
        rotate,
        &format!("{keys}/{new_id}/rotate"),
        Auth::Header,
        Body::Json(json!({"grace": "1h"})),
    );
    assert_eq!(s, 201);
    let (s, k) = api.call(
        "patch",
        key,
        &one,
        Auth::Header,
        Body::Json(json!({"scopes": ["data:read"], "rate_limit": null, "uses": 5})),
    );
    assert_eq!(s, 200);
    assert_eq!(k["remaining_uses"], 5);
    for action in ["disable", "enable"] {
        let (s, k) = api.call(
            "post",
            &format!("{key}/{action}"),
            &format!("{one}/{action}"),
            Auth::Header,
            Body::None,
        );
        assert_eq!(s, 200);
        assert_eq!(k["disabled"], action == "disable");
    }
    let (s, revoked) = api.call(
        "post",
        "/admin/v1/keys/{id}/revoke",
        &format!("{one}/revoke"),
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 200);
    assert!(revoked["revoked_at"].is_i64());
    assert_eq!(
        api.call("delete", key, &one, Auth::Header, Body::None).0,
        409
    );
    assert_eq!(
        api.call(
            "post",
            "/admin/v1/keys/{id}/disable",
            &format!("{one}/disable"),
            Auth::Header,
            Body::None
        )
        .0,
        409
    );
    assert_eq!(
        api.call(
            "post",
            rotate,
            &format!("{one}/rotate"),
            Auth::Header,
            Body::None
        )
        .0,
        409
    );
    assert_eq!(
        api.call(
            "delete",
            key,
            &format!("{keys}/{new_id}"),
            Auth::Header,
            Body::None
        )
        .0,
        200
    );

    // …the audit trail and the rate limiter…
    let (s, audit) = api.call(
        "get",
        "/admin/v1/audit",
        "/admin/v1/audit?limit=3",
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 200);
    assert_eq!(audit["events"].as_array().unwrap().len(), 3);
    assert_eq!(
        api.call(
            "get",
            "/admin/v1/audit",
            "/admin/v1/audit?nope=1",
            Auth::Header,
            Body::None
        )
        .0,
        422
    );
    let (s, rl) = api.call(
        "get",
        "/admin/v1/rate-limit",
        "/admin/v1/rate-limit",
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 200);
    assert_eq!(rl["backend"], "memory");
    let (s, stats) = api.call(
        "get",
        "/admin/v1/stats",
        "/admin/v1/stats",
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 200);
    assert!(stats["store_key_lookups"].as_u64().unwrap() >= 1);

    // …per-key usage (a revoked key is gone, as from GET /keys/{id})…
    let usage = "/admin/v1/keys/{id}/usage";
    let (s, live) = api.call(
        "post",
        keys,
        keys,
        Auth::Header,
        Body::Json(json!({"name": "usage"})),
    );
    assert_eq!(s, 201);
    let live = live["id"].as_str().unwrap().to_owned();
    let (s, u) = api.call(
        "get",
        usage,
        &format!("{keys}/{live}/usage?bucket=minute&from=0&to=3600"),
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 200);
    assert_eq!(u["points"].as_array().unwrap().len(), 60);
    for (path, status) in [
        (format!("{keys}/key_nope/usage"), 404),
        (format!("{keys}/{new_id}/usage"), 404),
        (format!("{keys}/{id}/usage"), 404),
        (format!("{keys}/{live}/usage?bucket=week"), 422),
        (format!("{keys}/{live}/usage?from=9&to=9"), 422),
    ] {
        assert_eq!(
            api.call("get", usage, &path, Auth::Header, Body::None).0,
            status,
            "{path}"
        );
    }
    let overview = "/admin/v1/usage";
    let (s, u) = api.call(
        "get",
        overview,
        "/admin/v1/usage?order=refusals&limit=5",
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 200);
    assert_eq!(u["order"], "refusals");
    assert_eq!(
        api.call(
            "get",
            overview,
            "/admin/v1/usage?order=slowest",
            Auth::Header,
            Body::None
        )
        .0,
        422
    );

    // …users…
    let users = "/admin/v1/users";
    let pw = "correct horse battery staple";
    let (s, u) = api.call(
        "post",
        users,
        users,
        Auth::Header,
        Body::Json(json!({"username": "alice", "password": pw, "scopes": ["data:read"]})),
    );
    assert_eq!(s, 201);
    assert_eq!(u["username"], "alice");
    assert!(!u.to_string().contains(pw));
    assert_eq!(
        api.call(
            "post",
            users,
            users,
            Auth::Header,
            Body::Json(json!({"username": "alice", "password": pw}))
        )
        .0,
        409
    );
    let (s, all) = api.call("get", users, users, Auth::Header, Body::None);
    assert_eq!(s, 200);
    assert_eq!(all["users"].as_array().unwrap().len(), 1);
    let user = "/admin/v1/users/{name}";
    assert_eq!(
        api.call(
            "get",
            user,
            "/admin/v1/users/alice",
            Auth::Header,
            Body::None
        )
        .0,
        200
    );
    assert_eq!(
        api.call(
            "get",
            user,
            "/admin/v1/users/nobody",
            Auth::Header,
            Body::None
        )
        .0,
        404
    );
    for action in ["disable", "enable"] {
        let (s, u) = api.call(
            "post",
            &format!("{user}/{action}"),
            &format!("/admin/v1/users/alice/{action}"),
            Auth::Header,
            Body::None,
        );
        assert_eq!(s, 200);
        assert_eq!(u["disabled"], action == "disable");
    }
    let password = "/admin/v1/users/{name}/password";
    assert_eq!(
        api.call(
            "post",
            password,
            "/admin/v1/users/alice/password",
            Auth::Header,
            Body::Json(json!({"password": "another long passphrase"}))
        )
        .0,
        204
    );
    assert_eq!(
        api.call(
            "post",
            password,
            "/admin/v1/users/nobody/password",
            Auth::Header,
            Body::Json(json!({"password": "another long passphrase"}))
        )
        .0,
        404
    );

    // …and OAuth2 clients.
    let clients = "/admin/v1/clients";
    let (s, cl) = api.call(
        "post",
        clients,
        clients,
        Auth::Header,
        Body::Json(json!({"name": "svc", "scopes": "data:read", "grants": ["client_credentials"]})),
    );
    assert_eq!(s, 201);
    assert!(cl["client_secret"].is_string());
    let cid = cl["client_id"].as_str().unwrap().to_owned();
    let (s, all) = api.call("get", clients, clients, Auth::Header, Body::None);
    assert_eq!(s, 200);
    assert!(
        !all.to_string()
            .contains(cl["client_secret"].as_str().unwrap())
    );
    let revoke = "/admin/v1/clients/{id}/revoke";
    let (s, r) = api.call(
        "post",
        revoke,
        &format!("{clients}/{cid}/revoke"),
        Auth::Header,
        Body::None,
    );
    assert_eq!(s, 200);
    assert!(r["revoked_at"].is_i64());
    assert_eq!(
        api.call(
            "post",
            revoke,
            &format!("{clients}/{cid}/revoke"),
            Auth::Header,
            Body::None
        )
        .0,
        409
    );
    assert_eq!(
        api.call(
            "post",
            revoke,
            &format!("{clients}/cl_nope/revoke"),
            Auth::Header,
            Body::None
        )
        .0,
        404
    );

    // Every documented success answer was met and matched its schema.
    let seen = api.seen.borrow();
    for (m, p, op) in operations(&doc) {
        for status in op["responses"].as_object().unwrap().keys() {
            let code: u16 = status.parse().unwrap();
            if (200..300).contains(&code) {
                assert!(
                    seen.contains(&(m.clone(), p.clone(), code)),
                    "{m} {p} {code} is documented but was never checked against a real answer"
                );
            }
        }
    }
}

#[test]
fn admin_openapi_names_the_configured_api_key_header() {
    let env = Env::new("[credentials]\napi_key_header = \"X-Admin-Token\"\n");
    let admin = env.init();
    let _srv = env.serve();
    let (doc, _) = fetch_doc(&env);
    let header = doc["components"]["securitySchemes"]["APIKeyHeader"]["name"]
        .as_str()
        .unwrap();
    assert!(header.eq_ignore_ascii_case("X-Admin-Token"), "{header}");
    let c = client();
    let r = c
        .get(env.admin_url("/admin/v1/keys"))
        .header(header, &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(env.admin_url("/admin/v1/keys"))
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Whether each value is valid against its schema in `doc`, by
/// jsonschema_rs (from the test venv: the validator schemathesis uses,
/// which reads patterns as ECMA-262 does; Python's `re` would let `$`
/// match before a final newline).
fn schema_valid(doc: &Value, cases: &[(&str, Value)]) -> Vec<bool> {
    use std::io::Write;
    let input = json!({
        "components": doc["components"],
        "cases": cases.iter().map(|(s, v)| json!([s, v])).collect::<Vec<_>>(),
    });
    let script = r##"
import json, sys
import jsonschema_rs
data = json.load(sys.stdin)
out = []
for schema, value in data["cases"]:
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": "#/components/schemas/" + schema,
            "components": data["components"]}
    out.append(jsonschema_rs.validator_for(root).is_valid(value))
print(json.dumps(out))
"##;
    let mut child = Command::new(venv_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "jsonschema_rs failed (run scripts/install-test-deps.sh): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The request bodies the admin API refuses with 422 are exactly those its
/// document's schemas refuse: the gaps schemathesis found (empty names,
/// short passwords, `refill_amount` without `refill`, an empty grace, …)
/// and each rule's edges, judged by a JSON Schema validator and by the
/// server, case by case.
#[test]
fn admin_api_refuses_exactly_what_its_document_refuses() {
    let env = Env::new("");
    let admin = env.init();
    let _srv = env.serve();
    let (doc, _) = fetch_doc(&env);
    let c = client();
    // A key and a user for the operations on one.
    let r: Value = c
        .post(env.admin_url("/admin/v1/keys"))
        .header("X-API-Key", &admin)
        .json(&json!({"name": "target"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key_id = r["id"].as_str().unwrap().to_owned();
    let r = c
        .post(env.admin_url("/admin/v1/users"))
        .header("X-API-Key", &admin)
        .json(&json!({"username": "target", "password": "a long enough one"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);

    let e = "é";
    let n = std::cell::Cell::new(0u32);
    // A name not used before, so creations do not conflict.
    let fresh = || {
        n.set(n.get() + 1);
        format!("n{}", n.get())
    };
    let key = |extra: Value| {
        let mut b = json!({"name": fresh()});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let user =
        |username: Value, password: Value| json!({"username": username, "password": password});
    let cases: Vec<(&str, &str, Value)> = vec![
        // names and owners
        ("CreateBody", "/admin/v1/keys", json!({"name": ""})),
        ("CreateBody", "/admin/v1/keys", json!({"name": "   "})),
        ("CreateBody", "/admin/v1/keys", json!({"name": "\u{3000}"})),
        ("CreateBody", "/admin/v1/keys", json!({"name": "a\nb"})),
        ("CreateBody", "/admin/v1/keys", json!({"name": "tail\n"})),
        ("CreateBody", "/admin/v1/keys", json!({"name": " spaced "})),
        (
            "CreateBody",
            "/admin/v1/keys",
            json!({"name": e.repeat(128)}),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            json!({"name": e.repeat(129)}),
        ),
        ("CreateBody", "/admin/v1/keys", key(json!({"owner": ""}))),
        ("CreateBody", "/admin/v1/keys", key(json!({"owner": null}))),
        // env
        ("CreateBody", "/admin/v1/keys", key(json!({"env": "test"}))),
        ("CreateBody", "/admin/v1/keys", key(json!({"env": "Live"}))),
        ("CreateBody", "/admin/v1/keys", key(json!({"env": ""}))),
        // lifetimes
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"expires_in": "30d"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"expires_in": "1h30m"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"expires_in": "0s"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"expires_in": ""})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"expires_in": "30m1h"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"expires_in": "99999999999d"})),
        ),
        // uses and refills
        ("CreateBody", "/admin/v1/keys", key(json!({"uses": 0}))),
        ("CreateBody", "/admin/v1/keys", key(json!({"uses": 5.0}))),
        ("CreateBody", "/admin/v1/keys", key(json!({"uses": 5.5}))),
        ("CreateBody", "/admin/v1/keys", key(json!({"uses": null}))),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"uses": 9_007_199_254_740_991_i64})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"uses": 9_007_199_254_740_992_i64})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"refill": "day"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"refill": "day", "uses": 3})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"refill": "monthly", "refill_amount": 3})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"refill_amount": 3})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"refill_amount": 3, "uses": 3})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"refill": "weekly", "uses": 3})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"refill": null, "refill_amount": 3})),
        ),
        // rate policies
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"rate_limit": "100/minute"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"rate_limit": "5 per 10 seconds; 1000/day burst 50"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"rate_limit": "10000000/second"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"rate_limit": "0/minute"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"rate_limit": "100/fortnight"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"rate_limit": ""})),
        ),
        // scopes
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"scopes": "a b,c"})),
        ),
        ("CreateBody", "/admin/v1/keys", key(json!({"scopes": ""}))),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"scopes": "a\tb"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"scopes": "a\"b"})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"scopes": ["a", "b"]})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"scopes": ["a b"]})),
        ),
        ("CreateBody", "/admin/v1/keys", key(json!({"scopes": [""]}))),
        ("CreateBody", "/admin/v1/keys", key(json!({"scopes": 5}))),
        // metadata, members
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"metadata": {"a": [1, {"b": null}]}})),
        ),
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"metadata": [1]})),
        ),
        // Over 4096 bytes: schema-valid (no keyword states bytes), so 413.
        (
            "CreateBody",
            "/admin/v1/keys",
            key(json!({"metadata": {"a": "x".repeat(5000)}})),
        ),
        ("CreateBody", "/admin/v1/keys", key(json!({"nme": "x"}))),
        // rotation
        ("RotateBody", "rotate", json!({"grace": ""})),
        ("RotateBody", "rotate", json!({"grace": "1h"})),
        ("RotateBody", "rotate", json!({"grace": "h"})),
        ("RotateBody", "rotate", json!({"grace": "1 h"})),
        // users
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!(fresh()), json!("short")),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!(fresh()), json!("long enough")),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!(fresh()), json!(e.repeat(1024))),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!(fresh()), json!(e.repeat(1025))),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!(""), json!("long enough")),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!(" lead"), json!("long enough")),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!("a:b"), json!("long enough")),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!("in side"), json!("long enough")),
        ),
        (
            "CreateUserBody",
            "/admin/v1/users",
            user(json!("x".repeat(65)), json!("long enough")),
        ),
        (
            "PasswordBody",
            "/admin/v1/users/target/password",
            json!({"password": "1234567"}),
        ),
        (
            "PasswordBody",
            "/admin/v1/users/target/password",
            json!({"password": "12345678"}),
        ),
        // clients
        ("CreateClientBody", "/admin/v1/clients", json!({"name": ""})),
        (
            "CreateClientBody",
            "/admin/v1/clients",
            json!({"name": "  "}),
        ),
        (
            "CreateClientBody",
            "/admin/v1/clients",
            json!({"name": "svc", "grants": "password, refresh_token"}),
        ),
        (
            "CreateClientBody",
            "/admin/v1/clients",
            json!({"name": "svc", "grants": "implicit"}),
        ),
        (
            "CreateClientBody",
            "/admin/v1/clients",
            json!({"name": "svc", "grants": "\tpassword"}),
        ),
        (
            "CreateClientBody",
            "/admin/v1/clients",
            json!({"name": "svc", "grants": ["password"]}),
        ),
        (
            "CreateClientBody",
            "/admin/v1/clients",
            json!({"name": "svc", "grants": [""]}),
        ),
        (
            "CreateClientBody",
            "/admin/v1/clients",
            json!({"name": "svc", "grants": []}),
        ),
    ];
    let valid = schema_valid(
        &doc,
        &cases
            .iter()
            .map(|(s, _, v)| (*s, v.clone()))
            .collect::<Vec<_>>(),
    );
    // Both sides of the rules are met (the validator really judged).
    let taken = valid.iter().filter(|v| **v).count();
    assert!(
        taken >= 25 && valid.len() - taken >= 40,
        "{taken} of {} valid",
        valid.len()
    );
    let mut rotations = 0;
    let mut target = key_id;
    for ((schema, path, body), valid) in cases.iter().zip(valid) {
        let url = if *path == "rotate" {
            env.admin_url(&format!("/admin/v1/keys/{target}/rotate"))
        } else {
            env.admin_url(path)
        };
        let r = c
            .post(url)
            .header("X-API-Key", &admin)
            .json(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = r.text().unwrap();
        let shown: String = body.to_string().chars().take(120).collect();
        if valid {
            assert!(
                (200..300).contains(&status) || status == 413,
                "{schema} {shown}: schema-valid, but {status} {text}"
            );
        } else {
            assert_eq!(status, 422, "{schema} {shown}: schema-invalid, but {text}");
            assert_eq!(ct.as_deref(), Some(PROBLEM_JSON));
            let p: Value = serde_json::from_str(&text).unwrap();
            assert!(
                p["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{text}"
            );
        }
        if *path == "rotate" && status == 201 {
            rotations += 1;
            target = serde_json::from_str::<Value>(&text).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    }
    assert_eq!(rotations, 1);
}
