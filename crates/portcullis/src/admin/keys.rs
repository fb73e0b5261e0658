//! The key routes (`/admin/v1/keys...`): create, list, show, revoke,
//! disable, enable and rotate API keys, each with its `#[utoipa::path]`,
//! and what a key error answers.

use crate::admin::reply::{Answer, Refused, invalid, json, problem};
use crate::admin::request::{actor, checked_scopes, count, not_null, read_json};
use crate::admin::route::{AdminState, Route};
use crate::admin::rules;
use crate::admin::schemas::{Guarded, JsonBody};
use crate::auth::keys::KeyError;
use crate::auth::specs::{KeyRequest, ScopeList, created_json};
use crate::store::{ADMIN_SCOPE, KeyFilter, KeyRecord, KeySettings, LastAdmin};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use http::{Method, StatusCode};
use portcullis_core::time::parse_duration;
use portcullis_core::{ErrorCode, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The key routes. Each handler carries its `#[utoipa::path]`.
pub(crate) const ROUTES: &[Route] = &[
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
        method: Method::PATCH,
        path: "/admin/v1/keys/{id}",
        handler: |m| on(m, update_key),
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
];

/// Maps a key error to its answer.
fn key_problem(e: &KeyError) -> Problem {
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

/// The answer to a key error.
pub(crate) fn err(e: KeyError) -> Response {
    problem(key_problem(&e))
}

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        err(self)
    }
}

/// A key's record (200), or the error's answer.
fn record(r: Result<KeyRecord, KeyError>) -> Answer {
    Ok(json(StatusCode::OK, &r.map_err(err)?))
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
        "Rate-limit override: limits separated by `;` or `,` (at most 8), each `N/unit`, `N per unit`, `N/M units` or `N per M units` (units `second`, `minute`, `hour`, `day`, or `sec`, `min`, plural or not; M at most 366), optionally followed by `burst B`; N at most 7 digits (the limiter counts whole nanoseconds per request; at most 7 digits, every rate is counted within 1 %); lowercase; at most 256 characters. E.g. `100/minute; 1000/day`.",
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
        (status = 201, description = "The key's record and the key, shown once", body = crate::admin::schemas::NewKey),
        JsonBody,
        (status = 500, description = "No randomness for the key (`internal_error`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn create_key(State(st): State<AdminState>, req: Request) -> Answer {
    let actor = actor(&req);
    let b: CreateBody = read_json(req, false).await?;
    b.check().map_err(invalid)?;
    let scopes = b
        .scopes
        .map(checked_scopes)
        .transpose()
        .map_err(invalid)?
        .unwrap_or_default()
        .to_space_separated();
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
    let spec = request.into_spec().map_err(err)?;
    let c = st.keys.create(&actor, &spec).await.map_err(err)?;
    Ok(json(StatusCode::CREATED, &created_json(&c)))
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
    #[schema(value_type = Vec<crate::admin::schemas::Key>)]
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
        (status = 422, description = "An unknown or malformed query parameter (`validation_failed`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn list_keys(
    State(st): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Answer {
    let Query(q) =
        q.map_err(|_| invalid("query: expected owner, include_revoked, after, limit"))?;
    let filter = KeyFilter {
        owner: q.owner,
        include_revoked: q.include_revoked.unwrap_or(false),
        after: q.after,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let keys = st.keys.list(&filter).await.map_err(err)?;
    let next_after = next_after(&keys, filter.limit);
    Ok(json(StatusCode::OK, &KeyList { keys, next_after }))
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
        (status = 200, description = "The key's record", body = crate::admin::schemas::Key),
        (status = 404, description = "No key with that id, or the key is revoked (`resource_not_found`): `GET /admin/v1/keys?include_revoked=true` lists revoked keys' records", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn show_key(State(st): State<AdminState>, Path(id): Path<String>) -> Answer {
    let r = st.keys.show(&id).await.map_err(err)?;
    match r.revoked_at {
        // Revocation is final, and `DELETE` is one: a read after it
        // must not find the key as if it were still there.
        Some(at) => Err(Refused::from(problem(
            Problem::new(ErrorCode::ResourceNotFound).detail(format!(
                "{} was revoked at {}; GET /admin/v1/keys?include_revoked=true lists its record",
                r.id,
                portcullis_core::time::rfc3339(at)
            )),
        ))),
        None => Ok(json(StatusCode::OK, &r)),
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
        (status = 200, description = "The revoked key's record", body = crate::admin::schemas::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked already; revocation is final (`conflict`). Or it is the last active admin key, and revoking it would lock everyone out of the admin API (`last_admin_key`): create another admin key first", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn delete_key(state: State<AdminState>, id: Path<String>, req: Request) -> Answer {
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
        (status = 200, description = "The revoked key's record", body = crate::admin::schemas::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked already; revocation is final (`conflict`). Or it is the last active admin key, and revoking it would lock everyone out of the admin API (`last_admin_key`): create another admin key first", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn revoke_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Answer {
    record(
        st.keys
            .revoke_with(&actor(&req), &id, last_admin_rule(&st))
            .await,
    )
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
        (status = 200, description = "The key's record", body = crate::admin::schemas::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked (`conflict`), or it is the last active admin key, and disabling it would lock everyone out of the admin API (`last_admin_key`): create another admin key first", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn disable_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Answer {
    record(
        st.keys
            .set_disabled_with(&actor(&req), &id, true, last_admin_rule(&st))
            .await,
    )
}

/// Enable a key
#[utoipa::path(
    post,
    path = "/admin/v1/keys/{id}/enable",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "The key's record", body = crate::admin::schemas::Key),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked (`conflict`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn enable_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Answer {
    record(st.keys.set_disabled(&actor(&req), &id, false).await)
}

fn rate_limit_or_null_schema() -> utoipa::openapi::Schema {
    rules::RATE_LIMIT.schema(
        true,
        "The new rate-limit override (as in `POST /admin/v1/keys`); `null` removes it, so the route's limit applies; left out: unchanged.",
    )
}

/// What to change on a key: each member given replaces that setting;
/// members left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    /// The new scopes (replacing the old ones). Not `null`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    scopes: Option<ScopeList>,
    /// Rate-limit override.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = rate_limit_or_null_schema)]
    rate_limit: Option<Option<String>>,
    /// Uses left, 1 to 2^53 - 1 (a number without a fraction); `null`:
    /// unlimited; left out: unchanged.
    #[serde(default, deserialize_with = "present_count")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 9007199254740991_i64)]
    uses: Option<Option<i64>>,
}

/// A member that may be `null`: given (`Some`, its value or `None` for
/// `null`) or left out (`None`, by `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// [`present`] for a count, read as [`count`] reads one.
fn present_count<'de, D>(d: D) -> Result<Option<Option<i64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None => Ok(Some(None)),
        Some(v) => count(v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Change a key's settings
///
/// Its scopes, rate-limit override and uses left, each replaced when
/// given; the key and its id stay the same. Every gateway sharing the
/// store applies the change within a second (revocation's path). Audited
/// as `key.update`. The last active admin key keeps the `admin` scope and
/// unlimited uses (409 `last_admin_key`).
#[utoipa::path(
    patch,
    path = "/admin/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The key's record", body = crate::admin::schemas::Key),
        (status = 404, description = "No key with that id, or the key is revoked (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The change would take the `admin` scope from, or put a number of uses on, the last active admin key (`last_admin_key`); or the key was revoked meanwhile (`conflict`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        JsonBody,
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn update_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Answer {
    let actor = actor(&req);
    let b: UpdateBody = read_json(req, false).await?;
    if let Some(Some(r)) = &b.rate_limit {
        rules::RATE_LIMIT.check("rate_limit", r).map_err(invalid)?;
    }
    let scopes = b.scopes.map(checked_scopes).transpose().map_err(invalid)?;
    // A revoked key is gone to this API, as `GET` says (404).
    if st.keys.show(&id).await.map_err(err)?.revoked_at.is_some() {
        return Err(Refused::from(problem(
            Problem::new(ErrorCode::ResourceNotFound)
                .detail(format!("{id} is revoked; revocation is final")),
        )));
    }
    // Members left out are left as they are, in the store's own write:
    // a use spent meanwhile is not written back.
    let settings = KeySettings {
        scopes,
        rate_limit: b.rate_limit,
        remaining_uses: b.uses,
    };
    record(
        st.keys
            .update(&actor, &id, &settings, last_admin_rule(&st))
            .await,
    )
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
        (status = 201, description = "The replacement's record and key, shown once", body = crate::admin::schemas::NewKey),
        (status = 404, description = "No key with that id (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked or expired (`conflict`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        JsonBody,
        (status = 500, description = "No randomness for the key (`internal_error`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn rotate_key(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    req: Request,
) -> Answer {
    let actor = actor(&req);
    let b: RotateBody = read_json(req, true).await?;
    if let Some(g) = b.grace.as_deref() {
        rules::GRACE.check("grace", g).map_err(invalid)?;
    }
    let grace = b
        .grace
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| invalid(format!("grace: {e}")))?
        .unwrap_or(86_400);
    let c = st.keys.rotate(&actor, &id, grace).await.map_err(err)?;
    Ok(json(StatusCode::CREATED, &created_json(&c)))
}
