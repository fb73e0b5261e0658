//! The admin API (`/admin/v1/...`), served on the admin listener only and
//! guarded by an API key with scope `admin`, except its OpenAPI document
//! (`GET /admin/v1/openapi.json`, [`crate::admin::openapi`]).

pub mod identity;
pub mod openapi;
pub(crate) mod rules;

use crate::admin::openapi::{Guarded, JsonBody};

use crate::auth::guard::Head;
use crate::auth::guard::{Guard, Policy};
use crate::auth::identity::Identity;
use crate::auth::keys::{KeyError, KeyService};
use crate::auth::specs::{KeyRequest, ScopeList, created_json};
use crate::http::rejection::problem_response;
use crate::store::{ADMIN_SCOPE, KeyFilter, KeyRecord, LastAdmin};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use portcullis_core::time::parse_duration;
use portcullis_core::{ErrorCode, Problem, Scheme, SchemeSet, Scopes};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

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

/// One route of the admin API: a method, a path (as routed and as
/// documented, `{id}` for a parameter) and its handler.
///
/// [`router`] is built from the tables of these ([`ROUTES`],
/// [`crate::admin::identity::ROUTES`]), and the OpenAPI document
/// ([`crate::admin::openapi`]) is tested against the same tables, so a
/// route cannot be served without being documented.
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: &'static str,
    /// The handler, routed for the method's filter.
    pub(crate) handler: fn(MethodFilter) -> MethodRouter<AdminState>,
}

/// The key, audit and rate-limit routes. Each handler carries its
/// `#[utoipa::path]`.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/admin/v1/keys",
        handler: |m| on(m, list_keys),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/keys",
        handler: |m| on(m, create_key),
    },
    Route {
        method: Method::GET,
        path: "/admin/v1/keys/{id}",
        handler: |m| on(m, show_key),
    },
    Route {
        method: Method::DELETE,
        path: "/admin/v1/keys/{id}",
        handler: |m| on(m, delete_key),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/keys/{id}/revoke",
        handler: |m| on(m, revoke_key),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/keys/{id}/rotate",
        handler: |m| on(m, rotate_key),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/keys/{id}/disable",
        handler: |m| on(m, disable_key),
    },
    Route {
        method: Method::POST,
        path: "/admin/v1/keys/{id}/enable",
        handler: |m| on(m, enable_key),
    },
    Route {
        method: Method::GET,
        path: "/admin/v1/audit",
        handler: |m| on(m, list_audit),
    },
    Route {
        method: Method::GET,
        path: "/admin/v1/rate-limit",
        handler: |m| on(m, rate_limit_status),
    },
    Route {
        method: Method::GET,
        path: "/admin/v1/stats",
        handler: |m| on(m, stats),
    },
];

/// Adds `routes` to `r`.
pub(crate) fn with_routes(r: Router<AdminState>, routes: &[Route]) -> Router<AdminState> {
    routes.iter().fold(r, |r, route| {
        match MethodFilter::try_from(route.method.clone()) {
            Ok(filter) => r.route(route.path, (route.handler)(filter)),
            Err(_) => {
                // Not reachable with the tables' methods (a unit test
                // routes every one).
                tracing::error!(method = %route.method, path = route.path, "admin route skipped: its method cannot be routed");
                r
            }
        }
    })
}

/// The admin router. Mount it on the admin listener.
pub fn router(state: AdminState) -> Router {
    with_routes(Router::new(), ROUTES)
        .merge(crate::admin::identity::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        // Merged after the `route_layer`, so the admin check does not
        // cover it: the OpenAPI document describes the operations and
        // holds no secret (no key, user, client or setting beyond the
        // API-key header's name), and tools need it before they hold a key.
        .merge(Router::new().route(
            crate::admin::openapi::OPENAPI_PATH,
            get(crate::admin::openapi::openapi_json),
        ))
        .with_state(state)
}

async fn require_admin(State(st): State<AdminState>, mut req: Request, next: Next) -> Response {
    let policy = Policy {
        schemes: SchemeSet::new(&[Scheme::ApiKeyHeader, Scheme::Bearer]),
        scopes: Scopes::parse(ADMIN_SCOPE).unwrap_or_default(),
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
        KeyError::TooLarge(m) => Problem::new(ErrorCode::PayloadTooLarge).detail(m.clone()),
        KeyError::NotFound(m) => {
            Problem::new(ErrorCode::ResourceNotFound).detail(format!("no key with id {m:?}"))
        }
        KeyError::Conflict(m) => Problem::new(ErrorCode::Conflict).detail(*m),
        KeyError::LastAdminKey { id, action } => Problem::new(ErrorCode::LastAdminKey).detail(format!(
            "{id} is the last active admin key; create another admin key first, or use `portcullis keys {action} --force-last-admin {id}`"
        )),
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

// The scopes of a body: [`ScopeList`], read as the CLI reads them; its
// schema is [`rules::scope_list_schema`], its rules those of
// [`checked_scopes`].
impl utoipa::PartialSchema for ScopeList {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        rules::scope_list_schema()
    }
}

impl ToSchema for ScopeList {}

/// The scopes of a body, by the admin API's rules ([`rules::SCOPES`],
/// [`rules::SCOPE`]); `Err` is the `detail`.
pub(crate) fn checked_scopes(list: ScopeList) -> Result<Scopes, String> {
    let parsed = match list {
        ScopeList::One(s) => {
            rules::SCOPES.check("scopes", &s)?;
            Scopes::parse(&s)
        }
        ScopeList::Many(v) => {
            for (i, one) in v.iter().enumerate() {
                rules::SCOPE.check(&format!("scopes[{i}]"), one)?;
            }
            Scopes::from_iter_checked(v.iter().map(String::as_str))
        }
    };
    // Not reached for values the rules took (a unit test checks the
    // rules against the parser).
    parsed.map_err(|e| format!("scopes: {e}"))
}

/// Reads a member that may be left out but is not `null`: members that
/// take part in `dependentRequired` / `dependentSchemas` in the document,
/// where `null` would count as present.
pub(crate) fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The largest count a body may give: 2^53 - 1, the largest integer every
/// JSON reader holds exactly (the document says so as `maximum`).
pub(crate) const MAX_COUNT: i64 = (1 << 53) - 1;

/// Reads a count that may be left out but is not `null`, as JSON Schema
/// reads `integer`: any number without a fraction, so `5.0` is 5 (serde
/// alone refuses it), within ±[`MAX_COUNT`], where a float is exact.
pub(crate) fn count<'de, D>(d: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let v = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        // Exact: |f| <= 2^53 - 1 and no fraction.
        (None, Some(f)) if f.fract() == 0.0 && f.abs() <= MAX_COUNT as f64 => Some(f as i64),
        _ => None,
    };
    match v {
        Some(i) if i.abs() <= MAX_COUNT => Ok(Some(i)),
        _ => Err(D::Error::custom(format!(
            "{n} is not a whole number of at most {MAX_COUNT}"
        ))),
    }
}

fn name_schema() -> utoipa::openapi::Schema {
    rules::LABEL.schema(
        false,
        "Name: 1-128 characters, not only spaces, no control characters.",
    )
}
fn owner_schema() -> utoipa::openapi::Schema {
    rules::LABEL.schema(true, "Owner, as the name; defaults to the name.")
}
fn env_schema() -> utoipa::openapi::Schema {
    rules::ENV.schema(
        true,
        "Environment label, in the key's prefix (`pc_<env>_`): 1-16 lowercase letters or digits; default `live`.",
    )
}
fn expires_in_schema() -> utoipa::openapi::Schema {
    rules::LIFETIME.schema(
        true,
        "Lifetime, not zero: a whole number and a unit (`w`, `d`, `h`, `m`, `s`), parts in that order (`30d`, `24h`, `1h30m`), at most 3, 4, 5, 6 and 7 digits; default: never expires.",
    )
}
fn refill_schema() -> utoipa::openapi::Schema {
    rules::choice(
        &rules::REFILLS,
        false,
        "Refill the uses at the start of each `day` or `month` (UTC; `daily` and `monthly` are the same). Needs `uses` or `refill_amount`.",
    )
}
fn rate_limit_schema() -> utoipa::openapi::Schema {
    rules::RATE_LIMIT.schema(
        true,
        "Rate-limit override: limits separated by `;` or `,` (at most 8), each `N/unit`, `N per unit`, `N/M units` or `N per M units` (units `second`, `minute`, `hour`, `day`, or `sec`, `min`, plural or not; M at most 366), optionally followed by `burst B`; N at most one a millisecond of one unit (1000 a second, 60000 a minute, 3600000 an hour, 86400000 a day); lowercase; at most 256 characters. E.g. `100/minute; 1000/day`.",
    )
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    /// Name.
    #[schema(schema_with = name_schema)]
    name: String,
    /// Owner; defaults to the name.
    #[schema(schema_with = owner_schema)]
    owner: Option<String>,
    /// Scopes.
    scopes: Option<ScopeList>,
    /// Environment label.
    #[schema(schema_with = env_schema)]
    env: Option<String>,
    /// Lifetime.
    #[schema(schema_with = expires_in_schema)]
    expires_in: Option<String>,
    /// Uses, 1 to 2^53 - 1 (a number without a fraction: `5.0` is 5);
    /// default: unlimited. Not `null`.
    #[serde(default, deserialize_with = "count")]
    #[schema(minimum = 1, maximum = 9007199254740991_i64, nullable = false)]
    uses: Option<i64>,
    /// Refill period.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(schema_with = refill_schema)]
    refill: Option<String>,
    /// The uses each refill gives, 1 to 2^53 - 1; default: `uses`. Needs
    /// `refill`. Not `null`.
    #[serde(default, deserialize_with = "count")]
    #[schema(minimum = 1, maximum = 9007199254740991_i64, nullable = false)]
    refill_amount: Option<i64>,
    /// Rate-limit override.
    #[schema(schema_with = rate_limit_schema)]
    rate_limit: Option<String>,
    /// Free JSON metadata: an object of at most 4096 bytes as compact JSON
    /// (a larger one is refused as a body over its limit is, 413: JSON
    /// Schema has no keyword for a size in bytes).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

impl CreateBody {
    /// The rules of [`rules`] no domain check states the same way.
    fn check(&self) -> Result<(), String> {
        rules::LABEL.check("name", &self.name)?;
        if let Some(o) = &self.owner {
            rules::LABEL.check("owner", o)?;
        }
        if let Some(e) = &self.env {
            rules::ENV.check("env", e)?;
        }
        if let Some(e) = &self.expires_in {
            rules::LIFETIME.check("expires_in", e)?;
        }
        if let Some(r) = &self.rate_limit {
            rules::RATE_LIMIT.check("rate_limit", r)?;
        }
        Ok(())
    }
}

/// Create a key
///
/// The answer holds the key itself, shown this once; only its SHA-256 is
/// stored.
#[utoipa::path(
    post,
    path = "/admin/v1/keys",
    tag = "keys",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The key's record and the key, shown once", body = crate::admin::openapi::NewKey),
        JsonBody,
        (status = 500, description = "No randomness for the key (`internal_error`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn create_key(State(st): State<AdminState>, req: Request) -> Response {
    let actor = actor(&req);
    let b: CreateBody = match read_json(req, false).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(m) = b.check() {
        return err(KeyError::Invalid(m));
    }
    let scopes = match b.scopes.map(checked_scopes).transpose() {
        Ok(s) => s.unwrap_or_default().to_space_separated(),
        Err(m) => return err(KeyError::Invalid(m)),
    };
    let request = KeyRequest {
        name: b.name,
        owner: b.owner,
        scopes: Some(scopes),
        env: b.env,
        expires_in: b.expires_in,
        uses: b.uses,
        refill: b.refill,
        refill_amount: b.refill_amount,
        rate_limit: b.rate_limit,
        metadata: b.metadata,
    };
    let spec = match request.into_spec() {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    match st.keys.create(&actor, &spec).await {
        Ok(c) => json(StatusCode::CREATED, &created_json(&c)),
        Err(e) => err(e),
    }
}

/// Whether this admin API may revoke or disable the last active admin
/// key. The gateway's admin listener accepts managed keys only (its guard
/// has no static keys and no token service), so there the rule always
/// holds. A library embedding whose admin guard accepts a static key with
/// the admin scope keeps a way in that the API cannot take away, so the
/// rule is off there. Users' and clients' tokens do not count as such a
/// way: they are short-lived, and this same API disables users and
/// revokes clients.
fn last_admin_rule(st: &AdminState) -> LastAdmin {
    if st.guard.static_key_holds(ADMIN_SCOPE) {
        LastAdmin::Allow
    } else {
        LastAdmin::Protect
    }
}

pub(crate) fn actor(req: &Request) -> String {
    req.extensions()
        .get::<Actor>()
        .map(|a| a.0.clone())
        .unwrap_or_else(|| "admin".into())
}

/// Which keys to list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only this owner's keys.
    owner: Option<String>,
    /// Include revoked keys (default `false`).
    include_revoked: Option<bool>,
    /// Only keys whose id sorts after this one: the previous page's
    /// `next_after`.
    after: Option<String>,
    /// At most this many (default 100; clamped to 1-1000).
    limit: Option<i64>,
}

/// A page of keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyList {
    /// The keys, by id.
    #[schema(value_type = Vec<crate::admin::openapi::Key>)]
    keys: Vec<KeyRecord>,
    /// The last id of a full page, to pass as `after` for the next one;
    /// `null` when this page is the last.
    #[schema(required = true)]
    next_after: Option<String>,
}

/// List keys
///
/// Paged by id: pass `next_after` as `after` for the next page. Never
/// holds a key or its hash.
#[utoipa::path(
    get,
    path = "/admin/v1/keys",
    tag = "keys",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of keys", body = KeyList),
        (status = 422, description = "An unknown or malformed query parameter (`validation_failed`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn list_keys(
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
        Ok(keys) => {
            let next_after = next_after(&keys, filter.limit);
            json(StatusCode::OK, &KeyList { keys, next_after })
        }
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

/// Show a key
///
/// A revoked key is gone (404), as `DELETE` says it is: its record is
/// listed by `GET /admin/v1/keys?include_revoked=true`.
#[utoipa::path(
    get,
    path = "/admin/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "The key's record", body = crate::admin::openapi::Key),
        (status = 404, description = "No key with that id, or the key is revoked (`resource_not_found`): `GET /admin/v1/keys?include_revoked=true` lists revoked keys' records", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn show_key(State(st): State<AdminState>, Path(id): Path<String>) -> Response {
    match st.keys.show(&id).await {
        Ok(r) => match r.revoked_at {
            // Revocation is final, and `DELETE` is one: a read after it
            // must not find the key as if it were still there.
            Some(at) => problem_response(
                &Problem::new(ErrorCode::ResourceNotFound).detail(format!(
                    "{} was revoked at {}; GET /admin/v1/keys?include_revoked=true lists its record",
                    r.id,
                    portcullis_core::time::rfc3339(at)
                )),
                None,
            ),
            None => json(StatusCode::OK, &r),
        },
        Err(e) => err(e),
    }
}

/// Revoke a key (`DELETE`)
///
/// The same as `POST /admin/v1/keys/{id}/revoke`.
#[utoipa::path(
    delete,
    path = "/admin/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "The revoked key's record", body = crate::admin::openapi::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked already; revocation is final (`conflict`). Or it is the last active admin key, and revoking it would lock everyone out of the admin API (`last_admin_key`): create another admin key first", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn delete_key(
    state: State<AdminState>,
    id: Path<String>,
    req: Request,
) -> Response {
    revoke_key(state, id, req).await
}

/// Revoke a key
///
/// Now, and for good: this gateway refuses the key at once, others
/// sharing the store within a second. The last active admin key cannot
/// be revoked here (409 `last_admin_key`): create another admin key
/// first, or use the CLI's `keys revoke --force-last-admin`.
#[utoipa::path(
    post,
    path = "/admin/v1/keys/{id}/revoke",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "The revoked key's record", body = crate::admin::openapi::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked already; revocation is final (`conflict`). Or it is the last active admin key, and revoking it would lock everyone out of the admin API (`last_admin_key`): create another admin key first", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn revoke_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    match st
        .keys
        .revoke_with(&actor(&req), &id, last_admin_rule(&st))
        .await
    {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => err(e),
    }
}

/// Disable a key
///
/// Switched off until enabled again. The last active admin key cannot be
/// disabled here (409 `last_admin_key`).
#[utoipa::path(
    post,
    path = "/admin/v1/keys/{id}/disable",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "The key's record", body = crate::admin::openapi::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked (`conflict`), or it is the last active admin key, and disabling it would lock everyone out of the admin API (`last_admin_key`): create another admin key first", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn disable_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    match st
        .keys
        .set_disabled_with(&actor(&req), &id, true, last_admin_rule(&st))
        .await
    {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => err(e),
    }
}

/// Enable a key
#[utoipa::path(
    post,
    path = "/admin/v1/keys/{id}/enable",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "The key's record", body = crate::admin::openapi::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked (`conflict`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn enable_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    match st.keys.set_disabled(&actor(&req), &id, false).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => err(e),
    }
}

fn grace_schema() -> utoipa::openapi::Schema {
    rules::GRACE.schema(
        true,
        "How long the old key keeps working: a whole number and a unit (`w`, `d`, `h`, `m`, `s`), parts in that order (`24h`, `1h30m`, `0s` to end it now), at most 3, 4, 5, 6 and 7 digits; default 24 hours.",
    )
}

/// How to rotate a key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// Grace.
    #[schema(schema_with = grace_schema)]
    grace: Option<String>,
}

/// Rotate a key
///
/// Issues a replacement with the same owner, scopes, expiry, uses, rate
/// limit and metadata; the old key works until the grace ends. The body
/// may be empty.
#[utoipa::path(
    post,
    path = "/admin/v1/keys/{id}/rotate",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    // A reference rather than `Option<RotateBody>`: the body is optional,
    // but a JSON `null` is refused, which `Option` would allow.
    request_body(
        content = ref("#/components/schemas/RotateBody"),
        content_type = "application/json",
        description = "Optional: an empty body keeps the default grace (24 hours)"
    ),
    responses(
        (status = 201, description = "The replacement's record and key, shown once", body = crate::admin::openapi::NewKey),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked or expired (`conflict`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        JsonBody,
        (status = 500, description = "No randomness for the key (`internal_error`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn rotate_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let actor = actor(&req);
    let b: RotateBody = match read_json(req, true).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(Err(m)) = b.grace.as_deref().map(|g| rules::GRACE.check("grace", g)) {
        return err(KeyError::Invalid(m));
    }
    let grace = match b.grace.as_deref().map(parse_duration).transpose() {
        Ok(g) => g.unwrap_or(86_400),
        Err(e) => return err(KeyError::Invalid(format!("grace: {e}"))),
    };
    match st.keys.rotate(&actor, &id, grace).await {
        Ok(c) => json(StatusCode::CREATED, &created_json(&c)),
        Err(e) => err(e),
    }
}

/// Which audit events to list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only events with a sequence number below this one (paging).
    before: Option<i64>,
    /// At most this many (default 100; clamped to 1-1000).
    limit: Option<i64>,
}

/// Audit events, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditList {
    /// The events.
    #[schema(value_type = Vec<crate::admin::openapi::AuditEvent>)]
    events: Vec<crate::store::AuditEvent>,
}

/// List audit events
///
/// Newest first: who (`cli` or the admin key's id), what, when. Never
/// holds a secret.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit events, newest first", body = AuditList),
        (status = 422, description = "An unknown or malformed query parameter (`validation_failed`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn list_audit(
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
        Ok(events) => json(StatusCode::OK, &AuditList { events }),
        Err(e) => err(KeyError::Store(e)),
    }
}

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        err(self)
    }
}

/// The rate limiter's state.
#[derive(Serialize, ToSchema)]
pub(crate) struct RateLimitStatus {
    /// Where the counters are.
    #[schema(value_type = crate::admin::openapi::RateLimitBackend)]
    backend: &'static str,
    /// What happens while Redis is down.
    #[schema(value_type = crate::admin::openapi::OnBackendError)]
    on_backend_error: &'static str,
    /// The breaker in front of Redis.
    #[schema(value_type = crate::admin::openapi::BreakerState)]
    breaker: &'static str,
    /// Counters held in this process's memory.
    counters_in_memory: u64,
    /// Decisions Redis made, since start.
    redis_decisions: u64,
    /// Decisions made without Redis (by `on_backend_error`), since start.
    fallback_decisions: u64,
    /// Redis calls that failed or timed out, since start.
    redis_errors: u64,
    /// Times the breaker opened, since start.
    breaker_opened: u64,
}

/// Show the rate limiter
///
/// The backend, the breaker's state and the counts since start
/// (decisions Redis made, decisions made without it, failed calls, times
/// the breaker opened).
#[utoipa::path(
    get,
    path = "/admin/v1/rate-limit",
    tag = "rate-limit",
    responses(
        (status = 200, description = "The rate limiter's state", body = RateLimitStatus),
        (status = 404, description = "This gateway has no rate limiter (`resource_not_found`)", body = crate::admin::openapi::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn rate_limit_status(State(st): State<AdminState>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(l) = &st.limiter else {
        return problem_response(&Problem::new(ErrorCode::ResourceNotFound), None);
    };
    let s = l.stats();
    let body = RateLimitStatus {
        backend: if l.is_shared() { "redis" } else { "memory" },
        on_backend_error: l.on_backend_error().as_str(),
        breaker: l.breaker_state().as_str(),
        counters_in_memory: l.local().len(),
        redis_decisions: s.remote.load(Relaxed),
        fallback_decisions: s.fallback.load(Relaxed),
        redis_errors: s.errors.load(Relaxed),
        breaker_opened: s.opened.load(Relaxed),
    };
    json(StatusCode::OK, &body)
}

/// Entries in the key verification caches.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyCacheSizes {
    /// Known keys held (valid or not: revoked, expired and disabled keys
    /// are held too).
    known: u64,
    /// Well-formed keys the store does not know, remembered for the
    /// negative TTL.
    unknown: u64,
}

/// The key verifier's counters.
#[derive(Serialize, ToSchema)]
pub(crate) struct Stats {
    /// Entries in the verification caches (approximate while requests
    /// are being verified).
    key_cache: KeyCacheSizes,
    /// Key lookups that reached the store since start. Malformed keys
    /// never cause one; concurrent requests with the same key not in the
    /// caches share one.
    store_key_lookups: u64,
}

/// Show the key cache
///
/// The entries in the key verification caches and the key lookups that
/// reached the store since start.
#[utoipa::path(
    get,
    path = "/admin/v1/stats",
    tag = "stats",
    responses(
        (status = 200, description = "The key caches' sizes and the store lookups", body = Stats),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn stats(State(st): State<AdminState>) -> Response {
    let (known, unknown, lookups) = match st.guard.verifier() {
        Some(v) => {
            let (known, unknown) = v.cache_sizes();
            (known, unknown, v.store_key_lookups())
        }
        // No verifier, no caches: the lookups of the key service's store.
        None => (0, 0, st.keys.store().key_lookups()),
    };
    json(
        StatusCode::OK,
        &Stats {
            key_cache: KeyCacheSizes { known, unknown },
            store_key_lookups: lookups,
        },
    )
}
