//! The shapes the admin API answers, for the document: problem details
//! and the refusals every guarded operation or JSON body can answer
//! ([`Guarded`], [`JsonBody`]), and mirrors of the store's records
//! ([`Key`], [`User`], ...) that describe them without their hashes. The
//! handlers name these in their `#[utoipa::path]`; nothing builds them
//! (the handlers send the real records; a test in
//! [`crate::admin::openapi`] checks the mirrors against them). A leaf.

// Described, never built: the handlers send the real records and
// problems, so the variants here are never constructed.
#![allow(dead_code)]

use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

/// An error: RFC 9457 problem details with FastAPI's `detail` member, sent
/// as `application/problem+json`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Problem {
    /// `https://portcullis.dev/errors/{code}`.
    #[serde(rename = "type")]
    #[schema(
        format = "uri",
        example = "https://portcullis.dev/errors/resource_not_found"
    )]
    pub(crate) type_: String,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    pub(crate) title: String,
    /// The HTTP status.
    #[schema(example = 404)]
    pub(crate) status: u16,
    /// What went wrong, for people (FastAPI's member).
    #[schema(example = "no key with id \"key_nope\"")]
    pub(crate) detail: String,
    /// The stable error code (docs/errors.md).
    #[schema(example = "resource_not_found")]
    pub(crate) code: String,
    /// The request's id, where one was assigned (the admin API sends none).
    #[schema(value_type = String, required = false)]
    pub(crate) request_id: Option<String>,
}

/// The refusals of the admin check, which every guarded operation can
/// answer.
#[derive(IntoResponses)]
pub(crate) enum Guarded {
    /// More than one credential was presented (`ambiguous_credentials`).
    #[response(status = 400, content_type = "application/problem+json")]
    AmbiguousCredentials(Problem),
    /// No credential (`not_authenticated`), or one that is unknown,
    /// expired, revoked or disabled (`invalid_credentials`). Carries
    /// `WWW-Authenticate`.
    #[response(
        status = 401,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "The challenge"))
    )]
    NotAuthenticated(Problem),
    /// The credential lacks the `admin` scope (`insufficient_scope`).
    #[response(
        status = 403,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "Bearer error=\"insufficient_scope\", scope=\"admin\""))
    )]
    InsufficientScope(Problem),
    /// The admin key's limited uses are spent until its next refill
    /// (`quota_exceeded`).
    #[response(
        status = 429,
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds until the next refill"))
    )]
    QuotaExceeded(Problem),
    /// The credential store could not be reached (`store_unavailable`).
    #[response(status = 503, content_type = "application/problem+json")]
    StoreUnavailable(Problem),
}

/// The refusals of a JSON request body.
#[derive(IntoResponses)]
pub(crate) enum JsonBody {
    /// The body is larger than 64 KiB, or a new key's `metadata` larger
    /// than 4096 bytes as JSON (`payload_too_large`).
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    /// The body is not sent as `application/json` (`unsupported_media_type`).
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// The body does not parse, has an unknown member, or a member is
    /// invalid; `detail` names it (`validation_failed`).
    #[response(status = 422, content_type = "application/problem+json")]
    ValidationFailed(Problem),
}

// ---- mirrors of the store's records ------------------------------------

/// An API key as the admin API shows it: never the key itself or its hash.
#[derive(Serialize, ToSchema)]
pub(crate) struct Key {
    /// Public id (`key_…`).
    pub(crate) id: String,
    /// Display prefix (`pc_live_Ab12Cd`).
    pub(crate) prefix: String,
    /// Environment label (`live`, `test`, ...).
    pub(crate) env: String,
    /// Owner.
    pub(crate) owner: String,
    /// Name.
    pub(crate) name: String,
    /// Scopes, space-separated.
    pub(crate) scopes: String,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds; `null`: never expires.
    #[schema(required = true)]
    pub(crate) expires_at: Option<i64>,
    /// Unix seconds; `null`: not revoked.
    #[schema(required = true)]
    pub(crate) revoked_at: Option<i64>,
    /// Switched off.
    pub(crate) disabled: bool,
    /// Uses left; `null`: unlimited.
    #[schema(required = true)]
    pub(crate) remaining_uses: Option<i64>,
    /// `day` or `month`: the uses are refilled at the start of each;
    /// `null`: never refilled.
    #[schema(required = true)]
    pub(crate) refill: Option<String>,
    /// The uses the key gets at each refill.
    #[schema(required = true)]
    pub(crate) refill_amount: Option<i64>,
    /// Rate-limit override (`100/minute; 1000/day`).
    #[schema(required = true)]
    pub(crate) rate_limit: Option<String>,
    /// Free JSON metadata.
    #[schema(value_type = Object)]
    pub(crate) metadata: serde_json::Value,
    /// Last use (Unix seconds), written in batches; `null`: never used.
    #[schema(required = true)]
    pub(crate) last_used_at: Option<i64>,
    /// The id of the key this one replaced.
    #[schema(required = true)]
    pub(crate) rotated_from: Option<String>,
    /// The id of the key that replaced this one.
    #[schema(required = true)]
    pub(crate) rotated_to: Option<String>,
}

/// A key just created or issued by a rotation: its record and the key
/// itself, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct NewKey {
    /// The record.
    #[serde(flatten)]
    pub(crate) record: Key,
    /// The key (`pc_live_…`). Store it now: it is never shown again.
    pub(crate) key: String,
}

/// An audit event.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEvent {
    /// Sequence number.
    pub(crate) id: i64,
    /// Unix seconds.
    pub(crate) at: i64,
    /// Who: `cli`, or the acting admin key's id.
    pub(crate) actor: String,
    /// What (`key.create`, `key.revoke`, `user.create`, ...).
    pub(crate) action: String,
    /// The object's id or name.
    #[schema(required = true)]
    pub(crate) target: Option<String>,
    /// Non-secret detail.
    #[schema(value_type = Object)]
    pub(crate) detail: serde_json::Value,
}

/// A user: no password hash.
#[derive(Serialize, ToSchema)]
pub(crate) struct User {
    /// Login name.
    pub(crate) username: String,
    /// Scopes, space-separated.
    pub(crate) scopes: String,
    /// Switched off.
    pub(crate) disabled: bool,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds.
    pub(crate) updated_at: i64,
    /// The stored hash's algorithm (`argon2id`, `bcrypt`): an imported
    /// bcrypt user has not signed in since.
    pub(crate) hash_algorithm: String,
}

/// An OAuth2 client: no secret hash.
#[derive(Serialize, ToSchema)]
pub(crate) struct Client {
    /// Public id (`cl_…`).
    pub(crate) client_id: String,
    /// Name.
    pub(crate) name: String,
    /// Scopes, space-separated.
    pub(crate) scopes: String,
    /// Grant types, space-separated.
    pub(crate) grants: String,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds; `null`: not revoked.
    #[schema(required = true)]
    pub(crate) revoked_at: Option<i64>,
}

/// A client just created: its record and its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct NewClient {
    /// The record.
    #[serde(flatten)]
    pub(crate) record: Client,
    /// The client secret (`pcs_…`). Store it now: it is never shown again.
    pub(crate) client_secret: String,
}

/// Where the rate limiter counts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RateLimitBackend {
    /// In this process.
    Memory,
    /// In Redis, shared by every gateway.
    Redis,
}

/// What the limiter does while Redis is down (`[rate_limit]
/// on_backend_error`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnBackendError {
    /// Admit every request.
    Allow,
    /// Refuse every request (503 `limiter_unavailable`).
    Deny,
    /// Count in this process's memory.
    Local,
}

/// The state of the breaker in front of Redis.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BreakerState {
    /// Redis is asked.
    Closed,
    /// Redis is not asked until the cooldown ends.
    Open,
    /// The cooldown ended: one probe is asking.
    HalfOpen,
}
