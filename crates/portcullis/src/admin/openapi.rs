//! The admin API's own OpenAPI 3.1 document, served without credentials
//! at `GET /admin/v1/openapi.json`.
//!
//! Each operation is declared beside its handler with `#[utoipa::path]`
//! (the handler modules: keys, status, identity); this module gathers
//! them, adds the security schemes and the schemas of what is sent
//! (`crate::admin::schemas`), and serves the result. It depends on the
//! handler modules; none of them depends on it.
//!
//! The admin router is built from the handler modules' route tables and
//! [`served_routes`] lists the same tables: the tests below (and the
//! gateway's integration test) check that the document's operations are
//! exactly those, so a route served without its documentation, or
//! documented but not served, fails them.
//!
//! The records the store returns ([`crate::store::KeyRecord`] and its
//! kin) are described by mirror types (`crate::admin::schemas`); a test
//! here serializes the real records and checks their members against the
//! mirrors, both ways.

use crate::admin::route::{AdminState, Route};
use crate::admin::schemas::{
    AuditEvent, BreakerState, Client, Key, NewClient, NewKey, OnBackendError, Problem,
    RateLimitBackend, User,
};
use crate::admin::{identity, keys, status, usage};
use crate::http::rejection::problem_response;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use portcullis_core::ErrorCode;
use std::sync::LazyLock;
use utoipa::OpenApi;
use utoipa::openapi::Components;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Where the document is served.
pub(crate) const OPENAPI_PATH: &str = "/admin/v1/openapi.json";
/// The security scheme of an admin key in the API-key header (FastAPI's
/// `APIKeyHeader` name).
pub(crate) const API_KEY_SCHEME: &str = "APIKeyHeader";
/// The security scheme of an admin key as `Authorization: Bearer`
/// (FastAPI's `HTTPBearer` name).
pub(crate) const BEARER_SCHEME: &str = "HTTPBearer";
/// The API-key header when `[credentials] api_key_header` is not set.
const DEFAULT_HEADER: &str = "X-API-Key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Keys, users, OAuth2 clients, per-key usage, the audit trail, the rate limiter and the key cache of a Portcullis gateway. Served on the admin listener only. Every operation but this document requires a key holding the `admin` scope, in the API-key header or as `Authorization: Bearer`. Errors are `application/problem+json` (RFC 9457, with FastAPI's `detail` member).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        crate::admin::keys::list_keys,
        crate::admin::keys::create_key,
        crate::admin::keys::show_key,
        crate::admin::keys::delete_key,
        crate::admin::keys::revoke_key,
        crate::admin::keys::rotate_key,
        crate::admin::keys::disable_key,
        crate::admin::keys::enable_key,
        crate::admin::keys::update_key,
        crate::admin::status::list_audit,
        crate::admin::status::rate_limit_status,
        crate::admin::status::stats,
        crate::admin::identity::list_users,
        crate::admin::identity::create_user,
        crate::admin::identity::show_user,
        crate::admin::identity::disable_user,
        crate::admin::identity::enable_user,
        crate::admin::identity::set_password,
        crate::admin::identity::list_clients,
        crate::admin::identity::create_client,
        crate::admin::identity::revoke_client,
        crate::admin::usage::key_usage,
        crate::admin::usage::usage_overview,
        openapi_json,
    ),
    components(schemas(
        Problem,
        crate::admin::keys::RotateBody,
        crate::admin::keys::UpdateBody,
        Key,
        NewKey,
        AuditEvent,
        User,
        Client,
        NewClient,
        RateLimitBackend,
        OnBackendError,
        BreakerState,
    )),
    tags(
        (name = "keys", description = "API keys: create, list, rotate, revoke, disable"),
        (name = "audit", description = "The audit trail of every change"),
        (name = "rate-limit", description = "The rate limiter's state"),
        (name = "stats", description = "The key caches and the store lookups"),
        (name = "users", description = "Users who sign in with a password"),
        (name = "clients", description = "OAuth2 clients"),
        (name = "usage", description = "Per-key analytics: outcome counts over time"),
        (name = "meta", description = "This document")
    )
)]
struct AdminApi;

/// The document, naming `api_key_header` (the configured
/// `[credentials] api_key_header`) as the API-key header.
pub fn document(api_key_header: &str) -> utoipa::openapi::OpenApi {
    let mut doc = AdminApi::openapi();
    let components = doc.components.get_or_insert_with(Components::new);
    refill_needs_an_amount(components);
    components.add_security_scheme(
        API_KEY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            api_key_header.to_owned(),
            "An API key holding the `admin` scope.".to_owned(),
        ))),
    );
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key holding the `admin` scope, sent as `Authorization: Bearer <key>`.",
                ))
                .build(),
        ),
    );
    doc
}

/// States in `CreateBody` what `KeyRequest::into_spec` checks across
/// members: `refill_amount` needs `refill`, and `refill` needs `uses` or
/// `refill_amount` (the uses each refill gives). The three are never
/// `null` (JSON Schema's dependencies count a `null` member as present).
fn refill_needs_an_amount(components: &mut Components) {
    use utoipa::openapi::{RefOr, Schema};
    if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut("CreateBody") {
        let kw = crate::admin::rules::keywords([
            (
                "dependentRequired",
                serde_json::json!({ "refill_amount": ["refill"] }),
            ),
            (
                "dependentSchemas",
                serde_json::json!({ "refill": { "anyOf": [
                    { "required": ["uses"] },
                    { "required": ["refill_amount"] }
                ] } }),
            ),
        ]);
        match &mut o.extensions {
            Some(e) => e.merge(kw),
            None => o.extensions = Some(kw),
        }
    }
}

/// The header as the document writes it: `X-API-Key` for the default,
/// the configured name otherwise.
fn header_label(configured: &str) -> &str {
    if configured.eq_ignore_ascii_case(DEFAULT_HEADER) {
        DEFAULT_HEADER
    } else {
        configured
    }
}

/// The document as JSON, or `None` if it cannot be written.
fn document_json(api_key_header: &str) -> Option<Bytes> {
    serde_json::to_vec(&document(header_label(api_key_header)))
        .ok()
        .map(Bytes::from)
}

/// The document for the default header, written once.
static DEFAULT_DOCUMENT: LazyLock<Option<Bytes>> = LazyLock::new(|| document_json(DEFAULT_HEADER));

/// The routes of every handler module, which the admin check guards.
pub(crate) fn handler_routes() -> impl Iterator<Item = &'static Route> {
    keys::ROUTES
        .iter()
        .chain(status::ROUTES)
        .chain(identity::ROUTES)
        .chain(usage::ROUTES)
}

/// Every (method, path) the admin router serves, and whether the admin
/// check guards it: the route tables the router is built from, and this
/// document.
pub fn served_routes() -> Vec<(Method, &'static str, bool)> {
    handler_routes()
        .map(|r| (r.method.clone(), r.path, true))
        .chain(std::iter::once((Method::GET, OPENAPI_PATH, false)))
        .collect()
}

/// The admin API's OpenAPI document
///
/// Served without credentials: it describes the operations and the
/// shapes of their requests and answers, and holds no key, user, client
/// or setting of this gateway (only the name of the API-key header), so
/// a client or tool can read it before it has an admin key.
#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", body = Object, content_type = "application/json"),
        (status = 500, description = "The document could not be written (`internal_error`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn openapi_json(State(st): State<AdminState>) -> Response {
    // No admin check here: the router merges this route after the
    // admin `route_layer`. The document holds no secret (see above).
    let header = st.guard.names().header.as_str();
    let body = if header.eq_ignore_ascii_case(DEFAULT_HEADER) {
        DEFAULT_DOCUMENT.clone()
    } else {
        document_json(header)
    };
    let Some(body) = body else {
        tracing::error!("the admin OpenAPI document could not be written");
        return problem_response(&portcullis_core::Problem::new(ErrorCode::Internal), None);
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn doc() -> Value {
        serde_json::to_value(document(DEFAULT_HEADER)).unwrap()
    }

    /// (method, path) of every operation in the document.
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (m, op) in item.as_object().unwrap() {
                assert!(METHODS.contains(&m.as_str()), "{path}: unexpected {m}");
                out.push((m.clone(), path.clone(), op.clone()));
            }
        }
        out
    }

    #[test]
    fn document_covers_the_router_exactly() {
        let served = served_routes();
        let served_set: BTreeSet<(String, String)> = served
            .iter()
            .map(|(m, p, _)| (m.as_str().to_ascii_lowercase(), (*p).to_owned()))
            .collect();
        assert_eq!(
            served_set.len(),
            served.len(),
            "a route is in the tables twice"
        );
        let d = doc();
        let documented: BTreeSet<(String, String)> =
            operations(&d).into_iter().map(|(m, p, _)| (m, p)).collect();
        let undocumented: Vec<_> = served_set.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served_set).collect();
        assert!(
            undocumented.is_empty(),
            "served but not in the OpenAPI document: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "in the OpenAPI document but not served: {unserved:?}"
        );
    }

    #[test]
    fn the_router_builds_from_the_tables() {
        // axum panics on a path it cannot route or a method routed twice;
        // every method in the tables must be routable.
        for r in handler_routes() {
            assert!(
                axum::routing::MethodFilter::try_from(r.method.clone()).is_ok(),
                "{} {}",
                r.method,
                r.path
            );
        }
        let _ = crate::admin::route::with_routes(axum::Router::new(), handler_routes());
    }

    #[test]
    fn guarded_operations_name_the_schemes_and_the_admin_scope() {
        let d = doc();
        let schemes = d["components"]["securitySchemes"].as_object().unwrap();
        assert_eq!(
            schemes[API_KEY_SCHEME],
            json!({"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key holding the `admin` scope."})
        );
        assert_eq!(schemes[BEARER_SCHEME]["type"], "http");
        assert_eq!(schemes[BEARER_SCHEME]["scheme"], "bearer");
        for (m, p, op) in operations(&d) {
            if p == OPENAPI_PATH {
                assert!(op.get("security").is_none(), "{m} {p} must be open");
                continue;
            }
            let sec = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{m} {p}: no security"));
            let mut named = BTreeSet::new();
            for req in sec {
                for (scheme, scopes) in req.as_object().unwrap() {
                    assert!(
                        schemes.contains_key(scheme),
                        "{m} {p}: unknown scheme {scheme}"
                    );
                    assert_eq!(scopes, &json!([crate::store::ADMIN_SCOPE]), "{m} {p}");
                    named.insert(scheme.clone());
                }
            }
            assert_eq!(
                named,
                BTreeSet::from([API_KEY_SCHEME.to_owned(), BEARER_SCHEME.to_owned()]),
                "{m} {p}"
            );
            // Every guarded operation documents the admin check's refusals.
            for status in ["400", "401", "403", "429", "503"] {
                let r = &op["responses"][status];
                assert!(
                    r["content"]["application/problem+json"]["schema"]["$ref"]
                        == "#/components/schemas/Problem",
                    "{m} {p}: {status} is not a Problem"
                );
            }
        }
    }

    #[test]
    fn references_resolve() {
        fn walk(v: &Value, d: &Value, at: &str) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let ptr = r.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {r}"));
                        assert!(d.pointer(ptr).is_some(), "{at}: {r} does not resolve");
                    }
                    for (k, v) in m {
                        walk(v, d, &format!("{at}/{k}"));
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, d, at)),
                _ => {}
            }
        }
        let d = doc();
        walk(&d, &d, "");
        assert_eq!(d["openapi"], "3.1.0");
        assert_eq!(d["info"]["title"], "Portcullis admin API");
        assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_configured_header_is_named() {
        let d = serde_json::to_value(document(header_label("x-admin-token"))).unwrap();
        assert_eq!(
            d["components"]["securitySchemes"][API_KEY_SCHEME]["name"],
            "x-admin-token"
        );
        assert_eq!(header_label("x-api-key"), "X-API-Key");
    }

    /// The members a schema component declares, and those it requires.
    fn members(d: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let s = &d["components"]["schemas"][name];
        let props = s["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no properties"))
            .keys()
            .cloned()
            .collect();
        let req = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        (props, req)
    }

    /// The real record's members are the mirror's, every one required.
    fn mirrors(d: &Value, name: &str, real: &impl Serialize) {
        let v = serde_json::to_value(real).unwrap();
        let sent: BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
        let (props, req) = members(d, name);
        assert_eq!(sent, props, "{name}: the record and its schema differ");
        assert_eq!(sent, req, "{name}: every member is always sent");
    }

    #[test]
    fn mirrors_match_the_store_records() {
        use crate::store::identity::{ClientRecord, UserRecord};
        use crate::store::{AuditEvent as RealAudit, KeyRecord};
        let d = doc();
        let key = KeyRecord {
            id: "key_1".into(),
            prefix: "pc_live_Ab12Cd".into(),
            env: "live".into(),
            owner: "o".into(),
            name: "n".into(),
            scopes: "a b".into(),
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            disabled: false,
            remaining_uses: None,
            refill: None,
            refill_amount: None,
            rate_limit: None,
            metadata: json!({}),
            last_used_at: None,
            rotated_from: None,
            rotated_to: None,
        };
        mirrors(&d, "Key", &key);
        mirrors(
            &d,
            "AuditEvent",
            &RealAudit {
                id: 1,
                at: 1,
                actor: "cli".into(),
                action: "key.create".into(),
                target: None,
                detail: json!({}),
            },
        );
        mirrors(
            &d,
            "User",
            &UserRecord {
                username: "u".into(),
                scopes: String::new(),
                disabled: false,
                created_at: 1,
                updated_at: 1,
                hash_algorithm: "argon2id",
            },
        );
        let client = ClientRecord {
            client_id: "cl_1".into(),
            name: "c".into(),
            scopes: String::new(),
            grants: "client_credentials".into(),
            created_at: 1,
            revoked_at: None,
        };
        mirrors(&d, "Client", &client);

        // The JSON of a new key / client is the record plus the secret.
        let new_key = &d["components"]["schemas"]["NewKey"]["allOf"];
        assert_eq!(new_key[0]["$ref"], "#/components/schemas/Key");
        assert_eq!(new_key[1]["required"], json!(["key"]));
        let new_client = &d["components"]["schemas"]["NewClient"]["allOf"];
        assert_eq!(new_client[0]["$ref"], "#/components/schemas/Client");
        assert_eq!(new_client[1]["required"], json!(["client_secret"]));
    }

    #[test]
    fn limiter_enums_match() {
        use crate::ratelimit::{BreakerState as B, OnBackendError as O};
        let d = doc();
        let values = |name: &str| -> BTreeSet<String> {
            d["components"]["schemas"][name]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} is not an enum"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        // Exhaustive matches: a new variant fails to compile here.
        let b = |s: B| match s {
            B::Closed | B::Open | B::HalfOpen => s.as_str().to_owned(),
        };
        let o = |s: O| match s {
            O::Allow | O::Deny | O::Local => s.as_str().to_owned(),
        };
        assert_eq!(
            values("BreakerState"),
            [B::Closed, B::Open, B::HalfOpen].map(b).into()
        );
        assert_eq!(
            values("OnBackendError"),
            [O::Allow, O::Deny, O::Local].map(o).into()
        );
        assert_eq!(
            values("RateLimitBackend"),
            BTreeSet::from(["memory".to_owned(), "redis".to_owned()])
        );
    }

    #[test]
    fn problems_are_documented_as_sent() {
        let d = doc();
        let (props, req) = members(&d, "Problem");
        let p = portcullis_core::Problem::new(ErrorCode::ResourceNotFound);
        let sent: Value = serde_json::from_str(&p.to_json(Some("r1"))).unwrap();
        let sent: BTreeSet<String> = sent.as_object().unwrap().keys().cloned().collect();
        assert_eq!(sent, props);
        let without: Value = serde_json::from_str(&p.to_json(None)).unwrap();
        let without: BTreeSet<String> = without.as_object().unwrap().keys().cloned().collect();
        assert_eq!(without, req);
    }
}
