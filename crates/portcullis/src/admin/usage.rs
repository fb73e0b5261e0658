//! Per-key analytics in the admin API: a key's outcome counts over time
//! (`/admin/v1/keys/{id}/usage`) and the overview across keys
//! (`/admin/v1/usage`), each with its `#[utoipa::path]`. The counts are
//! the analytics aggregator's (`crate::analytics`), written every flush
//! interval: the current minute is partial, and the last few seconds are
//! not there yet.

use crate::admin::keys::err;
use crate::admin::reply::{Answer, invalid, json};
use crate::admin::route::{AdminState, Route};
use crate::admin::schemas::Guarded;
use crate::analytics::{OutcomeCounts, Span, TopOrder, UsageTotal};
use crate::auth::keys::KeyError;
use crate::clock::{Clock, SystemClock};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::on;
use http::{Method, StatusCode};
use portcullis_core::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The usage routes. Each handler carries its `#[utoipa::path]`.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/admin/v1/keys/{id}/usage",
        handler: |m| on(m, key_usage),
    },
    Route {
        method: Method::GET,
        path: "/admin/v1/usage",
        handler: |m| on(m, usage_overview),
    },
];

/// The most buckets one answer holds: a day of minutes is 1,440.
pub(crate) const MAX_POINTS: i64 = 1_500;
/// The latest time a range may name: 9999-12-31T23:59:59Z.
const MAX_TIME: i64 = 253_402_300_799;
/// The range when none is given: the last 24 hours.
const DEFAULT_RANGE: i64 = 86_400;
/// Keys in the overview when no `limit` is given, and at most.
const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 100;

fn bucket_schema() -> utoipa::openapi::Schema {
    crate::admin::rules::choice(
        &["minute", "hour", "day"],
        false,
        "The bucket width (default `hour`). Minute buckets are kept 48 hours, hours 31 days, days 400 days by default (`[analytics]` retention).",
    )
}

fn order_schema() -> utoipa::openapi::Schema {
    crate::admin::rules::choice(
        &["requests", "refusals"],
        false,
        "Most decisions first, or most refusals first (default `requests`).",
    )
}

/// A range of buckets.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SeriesQuery {
    /// Start, Unix seconds: the bucket holding it is the first (default:
    /// `to` minus 24 hours).
    #[param(minimum = 0, maximum = 253402300799_i64)]
    from: Option<i64>,
    /// End, Unix seconds, exclusive (default: now). After `from`; at most
    /// 1,500 buckets between them.
    #[param(minimum = 0, maximum = 253402300799_i64)]
    to: Option<i64>,
    /// Bucket width.
    #[param(schema_with = bucket_schema)]
    bucket: Option<String>,
}

/// Which keys the overview lists.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TopQuery {
    /// Start, Unix seconds: the bucket holding it is the first (default:
    /// `to` minus 24 hours).
    #[param(minimum = 0, maximum = 253402300799_i64)]
    from: Option<i64>,
    /// End, Unix seconds, exclusive (default: now). After `from`; at most
    /// 1,500 buckets between them.
    #[param(minimum = 0, maximum = 253402300799_i64)]
    to: Option<i64>,
    /// Bucket width: which buckets are summed.
    #[param(schema_with = bucket_schema)]
    bucket: Option<String>,
    /// The order.
    #[param(schema_with = order_schema)]
    order: Option<String>,
    /// At most this many keys (default 10; clamped to 1-100).
    limit: Option<i64>,
}

/// A checked range: the first bucket's start, the exclusive end, the
/// width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) span: Span,
}

impl Range {
    /// The buckets of the range.
    pub(crate) fn points(&self) -> i64 {
        let w = self.span.seconds();
        (self.to - self.from + w - 1) / w
    }
}

/// Checks a range and fills in the defaults; `Err` is the `detail`.
pub(crate) fn range(
    from: Option<i64>,
    to: Option<i64>,
    bucket: Option<&str>,
    now: i64,
) -> Result<Range, String> {
    let span = match bucket {
        None => Span::Hour,
        Some(b) => Span::parse(b)
            .ok_or_else(|| format!("bucket: {b:?} is not one of minute, hour, day"))?,
    };
    for (name, v) in [("from", from), ("to", to)] {
        if let Some(v) = v
            && !(0..=MAX_TIME).contains(&v)
        {
            return Err(format!(
                "{name}: {v} is not a time between 0 and {MAX_TIME} (Unix seconds)"
            ));
        }
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to.saturating_sub(DEFAULT_RANGE).max(0));
    if from >= to {
        return Err(format!("from ({from}) must be before to ({to})"));
    }
    let r = Range {
        from: span.start_of(from),
        to,
        span,
    };
    if r.points() > MAX_POINTS {
        return Err(format!(
            "too many points: {} buckets of a {span} between from and to, at most {MAX_POINTS}: use a wider bucket or a shorter range",
            r.points()
        ));
    }
    Ok(r)
}

/// One bucket of a key's series.
#[derive(Serialize, ToSchema)]
pub(crate) struct Point {
    /// The bucket's start, Unix seconds.
    start: i64,
    /// Decisions in it.
    total: u64,
    /// Refusals in it (every outcome but `valid`).
    refused: u64,
    /// Decisions per outcome, every outcome named (zeros included).
    #[schema(schema_with = counts_schema)]
    counts: OutcomeCounts,
}

/// A key's outcome counts over time.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyUsage {
    /// The key's id.
    key_id: String,
    /// The bucket width.
    #[schema(schema_with = bucket_schema)]
    bucket: &'static str,
    /// The first bucket's start, Unix seconds (`from`, floored to the
    /// bucket).
    from: i64,
    /// The end, Unix seconds, exclusive.
    to: i64,
    /// Every bucket of the range, oldest first, with zeros where nothing
    /// was decided.
    points: Vec<Point>,
    /// The sums over the range.
    #[schema(schema_with = counts_schema)]
    totals: OutcomeCounts,
}

/// One key in the overview.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyTotal {
    /// The key's id; `""` for a user's or client's own row (a password,
    /// session or token, not a key); `-` for what is not counted per key
    /// (credentials that did not verify, keys beyond the per-minute cap).
    key_id: String,
    /// Who the key acts as: its owner, a user name, a client id (`""`
    /// when unknown).
    subject: String,
    /// Decisions.
    total: u64,
    /// Refusals.
    refused: u64,
    /// Decisions per outcome, every outcome named.
    #[schema(schema_with = counts_schema)]
    counts: OutcomeCounts,
}

/// The keys with the most decisions or refusals.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageOverview {
    /// The bucket width summed.
    #[schema(schema_with = bucket_schema)]
    bucket: &'static str,
    /// The first bucket's start, Unix seconds.
    from: i64,
    /// The end, Unix seconds, exclusive.
    to: i64,
    /// The order.
    #[schema(schema_with = order_schema)]
    order: &'static str,
    /// The keys, most first.
    keys: Vec<KeyTotal>,
}

/// An object with one non-negative integer per outcome name, all
/// required.
fn counts_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let mut b = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .description(Some(
            "Decisions per outcome (docs/analytics.md): every outcome is a member.",
        ));
    for o in Outcome::ALL {
        b = b
            .property(
                o.as_str(),
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Integer))
                    .minimum(Some(0)),
            )
            .required(o.as_str());
    }
    utoipa::openapi::Schema::Object(
        b.additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ))
        .build(),
    )
}

fn now() -> i64 {
    SystemClock.now()
}

const RANGE_422: &str = "An unknown or malformed query parameter, a range whose `from` is not before its `to`, or more than 1,500 buckets (`validation_failed`, `detail` says which)";

/// The 404 of a revoked key, naming where its counts still are.
fn invalid_key(id: &str, at: i64) -> axum::response::Response {
    crate::admin::reply::problem(
        portcullis_core::Problem::new(portcullis_core::ErrorCode::ResourceNotFound).detail(
            format!(
                "{id} was revoked at {}; GET /admin/v1/usage lists its counts",
                portcullis_core::time::rfc3339(at)
            ),
        ),
    )
}

/// Show a key's usage
///
/// Decisions per outcome (valid, and each refusal) in buckets of a
/// minute, hour or day: every bucket from the one holding `from` up to
/// `to`, zeros included. Default: the last 24 hours by hour. Counts are
/// written every flush interval (10 s by default), so the latest bucket
/// is partial. A revoked key is gone here, as from `GET
/// /admin/v1/keys/{id}` (404); its counts, the refusals after its
/// revocation included, stay in the overview (`GET /admin/v1/usage`).
#[utoipa::path(
    get,
    path = "/admin/v1/keys/{id}/usage",
    tag = "usage",
    params(("id" = String, Path, description = "The key's id (`key_…`)"), SeriesQuery),
    responses(
        (status = 200, description = "The key's outcome counts per bucket", body = KeyUsage),
        (status = 404, description = "No key with that id, or the key is revoked (`resource_not_found`): `GET /admin/v1/usage` lists a revoked key's counts", body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        (status = 422, description = RANGE_422, body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn key_usage(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Answer {
    let Query(q) = q.map_err(|_| {
        invalid("query: expected from and to (Unix seconds), bucket (minute, hour, day)")
    })?;
    let r = range(q.from, q.to, q.bucket.as_deref(), now()).map_err(invalid)?;
    let key = st.keys.show(&id).await.map_err(err)?;
    if let Some(at) = key.revoked_at {
        // Revocation is final, and `DELETE` is one: as `GET
        // /admin/v1/keys/{id}`, nothing under the key is found after it.
        // Its counts stay in the overview.
        return Err(invalid_key(&key.id, at).into());
    }
    let series = st
        .keys
        .store()
        .usage_series(&key.id, r.span, r.from, r.to)
        .await
        .map_err(|e| err(KeyError::Store(e)))?;
    let mut totals = OutcomeCounts::default();
    let mut points = Vec::with_capacity(usize::try_from(r.points()).unwrap_or(0));
    let mut stored = series.into_iter().peekable();
    let mut start = r.from;
    while start < r.to {
        let counts = match stored.next_if(|p| p.start == start) {
            Some(p) => p.counts,
            None => OutcomeCounts::default(),
        };
        for (o, n) in counts.iter() {
            totals.add(o, n);
        }
        points.push(Point {
            start,
            total: counts.total(),
            refused: counts.refused(),
            counts,
        });
        start += r.span.seconds();
    }
    Ok(json(
        StatusCode::OK,
        &KeyUsage {
            key_id: key.id,
            bucket: r.span.as_str(),
            from: r.from,
            to: r.to,
            points,
            totals,
        },
    ))
}

/// Show the top keys
///
/// The keys with the most decisions (`order=requests`) or refusals
/// (`order=refusals`) in the range, each with its subject and its counts
/// per outcome. Default: the last 24 hours, summed from hour buckets, the
/// first 10.
#[utoipa::path(
    get,
    path = "/admin/v1/usage",
    tag = "usage",
    params(TopQuery),
    responses(
        (status = 200, description = "The top keys, most first", body = UsageOverview),
        (status = 422, description = RANGE_422, body = crate::admin::schemas::Problem, content_type = "application/problem+json"),
        Guarded,
    ),
    security(("APIKeyHeader" = ["admin"]), ("HTTPBearer" = ["admin"]))
)]
pub(crate) async fn usage_overview(
    State(st): State<AdminState>,
    q: Result<Query<TopQuery>, QueryRejection>,
) -> Answer {
    let Query(q) = q.map_err(|_| {
        invalid("query: expected from and to (Unix seconds), bucket (minute, hour, day), order (requests, refusals), limit")
    })?;
    let r = range(q.from, q.to, q.bucket.as_deref(), now()).map_err(invalid)?;
    let order = match q.order.as_deref() {
        None | Some("requests") => TopOrder::Requests,
        Some("refusals") => TopOrder::Refusals,
        Some(o) => {
            return Err(invalid(format!("order: {o:?} is not one of requests, refusals")).into());
        }
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let top = st
        .keys
        .store()
        .usage_top(
            r.span,
            r.from,
            r.to,
            order,
            u32::try_from(limit).unwrap_or(10),
        )
        .await
        .map_err(|e| err(KeyError::Store(e)))?;
    let keys = top
        .into_iter()
        .map(|t: UsageTotal| KeyTotal {
            total: t.counts.total(),
            refused: t.counts.refused(),
            key_id: t.key_id,
            subject: t.subject,
            counts: t.counts,
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &UsageOverview {
            bucket: r.span.as_str(),
            from: r.from,
            to: r.to,
            order: order.as_str(),
            keys,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_check_and_cap() {
        let now = 1_900_000_000;
        let r = range(None, None, None, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.span, Span::Hour);
        assert_eq!(r.to, now);
        assert_eq!(r.from, Span::Hour.start_of(now - 86_400));
        assert_eq!(r.points(), 25);
        assert!(range(Some(10), Some(10), None, now).is_err());
        assert!(range(Some(-1), None, None, now).is_err());
        assert!(range(None, None, Some("week"), now).is_err());
        // 1,500 minutes is the most; one more is refused.
        assert!(range(Some(0), Some(1_500 * 60), Some("minute"), now).is_ok());
        let e = range(Some(0), Some(1_500 * 60 + 1), Some("minute"), now).unwrap_err();
        assert!(e.starts_with("too many points: 1501"), "{e}");
        assert!(range(Some(0), Some(MAX_TIME), Some("day"), now).is_err());
    }
}
