//! The admin API (`/admin/v1/...`), served on the admin listener only and
//! guarded by an API key with scope `admin`.

use crate::guard::Head;
use crate::guard::{Guard, Policy};
use crate::identity::Identity;
use crate::keys::{CreatedKey, KeyError, KeyService, KeySpec};
use crate::response::problem_response;
use crate::store::{KeyFilter, KeyRecord};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use portcullis_core::time::parse_duration;
use portcullis_core::{ErrorCode, Problem, Scheme, SchemeSet, Scopes};
use serde::Deserialize;
use std::sync::Arc;

/// Largest admin request body.
pub const MAX_BODY: usize = 64 * 1024;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// Key management.
    pub keys: KeyService,
    /// The guard (admin scope).
    pub guard: Guard,
    /// Users and OAuth2 clients; without it their endpoints answer 404.
    pub identity: Option<Arc<Identity>>,
    /// The rate limiter, for `GET /admin/v1/rate-limit`.
    pub limiter: Option<Arc<crate::ratelimit::Limiter>>,
}

#[derive(Clone)]
pub(crate) struct Actor(String);

/// The admin router. Mount it on the admin listener.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/keys", get(list_keys).post(create_key))
        .route("/admin/v1/keys/{id}", get(show_key).delete(revoke_key))
        .route("/admin/v1/keys/{id}/revoke", post(revoke_key))
        .route("/admin/v1/keys/{id}/rotate", post(rotate_key))
        .route("/admin/v1/keys/{id}/disable", post(disable_key))
        .route("/admin/v1/keys/{id}/enable", post(enable_key))
        .route("/admin/v1/audit", get(list_audit))
        .route("/admin/v1/rate-limit", get(rate_limit_status))
        .merge(crate::admin_identity::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .with_state(state)
}

async fn require_admin(State(st): State<AdminState>, mut req: Request, next: Next) -> Response {
    let policy = Policy {
        schemes: SchemeSet::new(&[Scheme::ApiKeyHeader, Scheme::Bearer]),
        scopes: Scopes::parse("admin").unwrap_or_default(),
    };
    let head = Head::new(req.method(), req.headers(), req.uri().query());
    match st.guard.check(&policy, &head).await {
        Ok(g) => {
            let actor = g.principal.map(|p| p.credential_id).unwrap_or_default();
            req.extensions_mut().insert(Actor(actor));
            next.run(req).await
        }
        Err(d) => {
            tracing::info!(
                target: "portcullis::admin",
                reason = d.problem.log_reason,
                key_id = d.credential_id.as_deref().unwrap_or(""),
                "admin request denied"
            );
            problem_response(&d.problem, None)
        }
    }
}

/// Maps a key error to its answer.
pub fn key_problem(e: &KeyError) -> Problem {
    match e {
        KeyError::Invalid(m) => Problem::new(ErrorCode::ValidationFailed).detail(m.clone()),
        KeyError::NotFound(m) => {
            Problem::new(ErrorCode::ResourceNotFound).detail(format!("no key with id {m:?}"))
        }
        KeyError::Conflict(m) => Problem::new(ErrorCode::Conflict).detail(*m),
        KeyError::Store(err) => {
            tracing::error!(error = %err, "store error in admin API");
            Problem::new(ErrorCode::StoreUnavailable)
        }
        KeyError::Random => Problem::new(ErrorCode::Internal),
    }
}

fn err(e: KeyError) -> Response {
    problem_response(&key_problem(&e), None)
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Reads a JSON body: 415 if not JSON, 413 if too large, 422 naming the
/// problem if it does not parse.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request,
    empty_ok: bool,
) -> Result<T, Response> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        problem_response(
            &Problem::new(ErrorCode::PayloadTooLarge)
                .detail(format!("the body is larger than {MAX_BODY} bytes")),
            None,
        )
    })?;
    let bytes = if bytes.is_empty() && empty_ok {
        bytes::Bytes::from_static(b"{}")
    } else {
        bytes
    };
    let is_json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !(is_json || (empty_ok && bytes.as_ref() == b"{}")) {
        return Err(problem_response(
            &Problem::new(ErrorCode::UnsupportedMediaType),
            None,
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        problem_response(
            &Problem::new(ErrorCode::ValidationFailed).detail(format!("invalid body: {e}")),
            None,
        )
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ScopeList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    owner: Option<String>,
    scopes: Option<ScopeList>,
    env: Option<String>,
    expires_in: Option<String>,
    uses: Option<i64>,
    refill: Option<String>,
    refill_amount: Option<i64>,
    rate_limit: Option<String>,
    metadata: Option<serde_json::Value>,
}

/// A key's refill from `refill` (`day` / `month`) and an amount, which
/// defaults to `uses`.
pub fn refill_from(
    refill: Option<&str>,
    amount: Option<i64>,
    uses: Option<i64>,
) -> Result<Option<portcullis_core::quota::RefillPlan>, KeyError> {
    let Some(r) = refill else {
        if amount.is_some() {
            return Err(KeyError::Invalid(
                "refill_amount: needs refill (day or month)".into(),
            ));
        }
        return Ok(None);
    };
    let every = portcullis_core::quota::Refill::parse(r).ok_or_else(|| {
        KeyError::Invalid(format!(
            "refill: {:?} is not day or month",
            r.chars().take(32).collect::<String>()
        ))
    })?;
    let amount = amount.or(uses).ok_or_else(|| {
        KeyError::Invalid(
            "refill: say how many uses each refill gives (uses or refill_amount)".into(),
        )
    })?;
    Ok(Some(portcullis_core::quota::RefillPlan { every, amount }))
}

/// Builds a spec from the fields the CLI and the admin API share.
#[allow(clippy::too_many_arguments)]
pub fn spec_from_parts(
    name: String,
    owner: Option<String>,
    scopes: Option<&str>,
    env: Option<String>,
    expires_in: Option<&str>,
    uses: Option<i64>,
    rate_limit: Option<String>,
    metadata: Option<serde_json::Value>,
) -> Result<KeySpec, KeyError> {
    let scopes = Scopes::parse(scopes.unwrap_or(""))
        .map_err(|e| KeyError::Invalid(format!("scopes: {e}")))?;
    let owner = owner.unwrap_or_else(|| name.clone());
    let mut spec = KeySpec::new(name, owner, scopes);
    if let Some(env) = env {
        spec.env = env;
    }
    spec.expires_in = expires_in
        .map(|e| parse_duration(e).map_err(|e| KeyError::Invalid(format!("expires_in: {e}"))))
        .transpose()?;
    spec.uses = uses;
    spec.rate_limit = rate_limit;
    if let Some(m) = metadata {
        spec.metadata = m;
    }
    Ok(spec)
}

/// The JSON for a newly created key: the key itself (shown once) and its record.
pub fn created_json(c: &CreatedKey) -> serde_json::Value {
    let mut v = serde_json::to_value(&c.record).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "key".into(),
            serde_json::Value::String(c.key.expose().to_owned()),
        );
    }
    v
}

async fn create_key(State(st): State<AdminState>, req: Request) -> Response {
    let actor = actor(&req);
    let b: CreateBody = match read_json(req, false).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let scopes = match b.scopes {
        None => String::new(),
        Some(ScopeList::One(s)) => s,
        Some(ScopeList::Many(v)) => {
            if v.iter().any(|s| s.contains([' ', ','])) {
                return err(KeyError::Invalid(
                    "scopes: each list item must be a single scope".into(),
                ));
            }
            v.join(" ")
        }
    };
    let spec = match spec_from_parts(
        b.name,
        b.owner,
        Some(&scopes),
        b.env,
        b.expires_in.as_deref(),
        b.uses,
        b.rate_limit,
        b.metadata,
    )
    .and_then(|mut s| {
        s.refill = refill_from(b.refill.as_deref(), b.refill_amount, b.uses)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    match st.keys.create(&actor, &spec).await {
        Ok(c) => json(StatusCode::CREATED, &created_json(&c)),
        Err(e) => err(e),
    }
}

pub(crate) fn actor(req: &Request) -> String {
    req.extensions()
        .get::<Actor>()
        .map(|a| a.0.clone())
        .unwrap_or_else(|| "admin".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    owner: Option<String>,
    include_revoked: Option<bool>,
    after: Option<String>,
    limit: Option<i64>,
}

async fn list_keys(
    State(st): State<AdminState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return problem_response(
            &Problem::new(ErrorCode::ValidationFailed)
                .detail("query: expected owner, include_revoked, after, limit"),
            None,
        );
    };
    let filter = KeyFilter {
        owner: q.owner,
        include_revoked: q.include_revoked.unwrap_or(false),
        after: q.after,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    match st.keys.list(&filter).await {
        Ok(v) => json(
            StatusCode::OK,
            &serde_json::json!({ "keys": v, "next_after": next_after(&v, filter.limit) }),
        ),
        Err(e) => err(e),
    }
}

fn next_after(v: &[KeyRecord], limit: i64) -> Option<String> {
    if v.len() as i64 == limit {
        v.last().map(|r| r.id.clone())
    } else {
        None
    }
}

async fn show_key(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    match st.keys.show(&id).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => err(e),
    }
}

async fn revoke_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    match st.keys.revoke(&actor(&req), &id).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => err(e),
    }
}

async fn disable_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    match st.keys.set_disabled(&actor(&req), &id, true).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => err(e),
    }
}

async fn enable_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    match st.keys.set_disabled(&actor(&req), &id, false).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
}

async fn rotate_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let actor = actor(&req);
    let b: RotateBody = match read_json(req, true).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let grace = match b.grace.as_deref().map(parse_duration).transpose() {
        Ok(g) => g.unwrap_or(86_400),
        Err(e) => return err(KeyError::Invalid(format!("grace: {e}"))),
    };
    match st.keys.rotate(&actor, &id, grace).await {
        Ok(c) => json(StatusCode::CREATED, &created_json(&c)),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

async fn list_audit(
    State(st): State<AdminState>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return problem_response(
            &Problem::new(ErrorCode::ValidationFailed).detail("query: expected before, limit"),
            None,
        );
    };
    match st
        .keys
        .store()
        .list_audit(q.before, q.limit.unwrap_or(100).clamp(1, 1000))
        .await
    {
        Ok(v) => json(StatusCode::OK, &serde_json::json!({ "events": v })),
        Err(e) => err(KeyError::Store(e)),
    }
}

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        err(self)
    }
}

/// `GET /admin/v1/rate-limit`: the backend, the breaker's state and the
/// counts since start (decisions Redis made, decisions made without it,
/// failed calls, times the breaker opened).
async fn rate_limit_status(State(st): State<AdminState>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(l) = &st.limiter else {
        return problem_response(&Problem::new(ErrorCode::ResourceNotFound), None);
    };
    let s = l.stats();
    let body = serde_json::json!({
        "backend": if l.is_shared() { "redis" } else { "memory" },
        "on_backend_error": l.on_backend_error().as_str(),
        "breaker": l.breaker_state().as_str(),
        "counters_in_memory": l.local().len(),
        "redis_decisions": s.remote.load(Relaxed),
        "fallback_decisions": s.fallback.load(Relaxed),
        "redis_errors": s.errors.load(Relaxed),
        "breaker_opened": s.opened.load(Relaxed),
    });
    axum::Json(body).into_response()
}
