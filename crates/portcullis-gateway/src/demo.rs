//! The built-in demo upstream: answers like the seed guides' example app,
//! and says which identity it received, so the quickstart works with
//! nothing else installed.

use axum::body::Body;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use serde_json::json;

/// Answers a request that Portcullis already let through.
pub fn handle(req: &Request<Body>) -> Response<Body> {
    let h = req.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let identity = if get("x-portcullis-principal").is_empty() {
        serde_json::Value::Null
    } else {
        json!({
            "principal": get("x-portcullis-principal"),
            "kind": get("x-portcullis-kind"),
            "scopes": get("x-portcullis-scopes"),
            "credential_id": get("x-portcullis-credential-id"),
        })
    };
    let path = req.uri().path();
    let mut body = match path {
        "/public" => json!({"message": "Anyone can see this"}),
        "/data" | "/secure-data" => json!({"data": "secret"}),
        "/export" => json!({"export": "ok"}),
        "/users/me" => json!({"username": get("x-portcullis-principal")}),
        "/items" => json!({"items": []}),
        _ => json!({"method": req.method().as_str(), "path": path}),
    };
    if let Some(o) = body.as_object_mut() {
        o.insert("identity".into(), identity);
    }
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
