//! The built-in demo upstream: answers like the seed guides' example app,
//! and says which identity it received, so the quickstart works with
//! nothing else installed.

use axum::body::Body;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use portcullis_core::{ErrorCode, Problem};
use serde_json::json;

/// Answers a request that Portcullis already let through. The body is
/// read to its end, as a real upstream would, so body limits apply; an
/// error reading it is the caller's to explain.
pub async fn handle(req: Request<Body>) -> Result<Response<Body>, Problem> {
    let (parts, body) = req.into_parts();
    let received = match body.collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => {
            return Err(Problem::new(ErrorCode::BadRequest).detail("the request body broke off"));
        }
    };
    let req = Request::from_parts(parts, ());
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
        _ => json!({"method": req.method().as_str(), "path": path, "body_bytes": received}),
    };
    if let Some(o) = body.as_object_mut() {
        o.insert("identity".into(), identity);
    }
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}
