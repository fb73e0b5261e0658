//! What a handler reads from a request: the acting key (set by the
//! admin check), a JSON body (415, 413 and 422 as the document says),
//! and the members that need more than serde: counts, members that may
//! be left out but are not `null`, and scopes by the admin API's rules.

use crate::admin::reply::problem;
use crate::admin::rules;
use crate::auth::specs::ScopeList;
use axum::body::to_bytes;
use axum::extract::Request;
use axum::response::Response;
use http::header::CONTENT_TYPE;
use portcullis_core::{ErrorCode, Problem, Scopes};
use serde::Deserialize;
use utoipa::ToSchema;

/// Largest admin request body.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Who acts: the admin key's (or token's) credential id, put on the
/// request by the admin check.
#[derive(Clone)]
pub(crate) struct Actor(pub(crate) String);

/// The acting credential's id, `admin` when the admin check set none.
pub(crate) fn actor(req: &Request) -> String {
    req.extensions()
        .get::<Actor>()
        .map(|a| a.0.clone())
        .unwrap_or_else(|| "admin".into())
}

/// Reads a JSON body: 415 if not JSON, 413 if too large, 422 naming the
/// problem if it does not parse.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request,
    empty_ok: bool,
) -> Result<T, Response> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        problem(
            Problem::new(ErrorCode::PayloadTooLarge)
                .detail(format!("the body is larger than {MAX_BODY} bytes")),
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
        return Err(problem(Problem::new(ErrorCode::UnsupportedMediaType)));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        problem(Problem::new(ErrorCode::ValidationFailed).detail(format!("invalid body: {e}")))
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
