//! What the gateway reports: the audit trail (`/admin/v1/audit`), the
//! rate limiter (`/admin/v1/rate-limit`) and the key caches
//! (`/admin/v1/stats`), each with its `#[utoipa::path]`.

use crate::admin::keys::err;
use crate::admin::reply::{Answer, invalid, json, problem};
use crate::admin::route::{AdminState, Route};
use crate::admin::schemas::Guarded;
use crate::auth::keys::KeyError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::on;
use http::{Method, StatusCode};
use portcullis_core::{ErrorCode, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The audit, rate-limit and stats routes. Each handler carries its
/// `#[utoipa::path]`.
pub(crate) const ROUTES: &[Route] = &[
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
    #[schema(value_type = Vec<crate::admin::schemas::AuditEvent>)]
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
        (status = 422, description = "An unknown or malformed query parameter (`validation_failed`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn list_audit(
    State(st): State<AdminState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Answer {
    let Query(q) = q.map_err(|_| invalid("query: expected before, limit"))?;
    let events = st
        .keys
        .store()
        .list_audit(q.before, q.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map_err(|e| err(KeyError::Store(e)))?;
    Ok(json(StatusCode::OK, &AuditList { events }))
}

/// The rate limiter's state.
#[derive(Serialize, ToSchema)]
pub(crate) struct RateLimitStatus {
    /// Where the counters are.
    #[schema(value_type = crate::admin::schemas::RateLimitBackend)]
    backend: &'static str,
    /// What happens while Redis is down.
    #[schema(value_type = crate::admin::schemas::OnBackendError)]
    on_backend_error: &'static str,
    /// The breaker in front of Redis.
    #[schema(value_type = crate::admin::schemas::BreakerState)]
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
        (status = 404, description = "This gateway has no rate limiter (`resource_not_found`)", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn rate_limit_status(State(st): State<AdminState>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(l) = &st.limiter else {
        return problem(Problem::new(ErrorCode::ResourceNotFound));
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
