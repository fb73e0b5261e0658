//! Per-key analytics: how many decisions of each outcome every key (and
//! every user or client) met, in minute buckets rolled up to hours and
//! days, kept for a configured retention in the store (`usage` table).
//!
//! - [`Analytics`] is the aggregator: a [`crate::pipeline::Observer`] that
//!   counts decisions in memory (`aggregate.rs`) and writes them to the
//!   store in one batch every flush interval, never one write per request.
//! - [`Store::usage_series`] and [`Store::usage_top`] read them back (the
//!   admin API's `/admin/v1/keys/{id}/usage` and `/admin/v1/usage`, the
//!   console's charts).
//!
//! What is counted, and under which row, is decided in `row_for`: only
//! credentials that verified are counted per key, so the rows an attacker
//! can make are bounded by the keys that exist.
//!
//! [`Store::usage_series`]: crate::store::Store::usage_series
//! [`Store::usage_top`]: crate::store::Store::usage_top

mod aggregate;

pub use aggregate::{Analytics, AnalyticsConfig, AnalyticsStats, Retention};

use portcullis_core::Outcome;
use serde::{Deserialize, Serialize};

/// The key id of the one row that counts what is not counted per key:
/// refusals of credentials that did not verify (their id is the
/// caller's to choose) and keys beyond the per-window cap.
pub const OVERFLOW_KEY: &str = "-";

/// A bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Span {
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds (UTC days).
    Day,
}

impl Span {
    /// Every span, narrowest first.
    pub const ALL: [Span; 3] = [Span::Minute, Span::Hour, Span::Day];

    /// The width in seconds.
    pub const fn seconds(self) -> i64 {
        match self {
            Span::Minute => 60,
            Span::Hour => 3_600,
            Span::Day => 86_400,
        }
    }

    /// As stored and written in queries: `minute`, `hour`, `day`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Span::Minute => "minute",
            Span::Hour => "hour",
            Span::Day => "day",
        }
    }

    /// The span named `s`, as [`Span::as_str`] writes it.
    pub fn parse(s: &str) -> Option<Span> {
        Span::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The start of the bucket holding `t` (Unix seconds; floors toward
    /// minus infinity, so times before 1970 land in the right bucket too).
    pub const fn start_of(self, t: i64) -> i64 {
        t.div_euclid(self.seconds()) * self.seconds()
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many outcomes there are ([`Outcome::ALL`]).
pub(crate) const OUTCOMES: usize = Outcome::ALL.len();

/// A count per outcome ([`Outcome::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutcomeCounts([u64; OUTCOMES]);

impl OutcomeCounts {
    /// The count of `o`.
    pub fn get(&self, o: Outcome) -> u64 {
        self.0[o.index()]
    }

    /// Adds `n` to `o`'s count (saturating).
    pub fn add(&mut self, o: Outcome, n: u64) {
        let c = &mut self.0[o.index()];
        *c = c.saturating_add(n);
    }

    /// Every decision.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// The refusals (every outcome but `valid`).
    pub fn refused(&self) -> u64 {
        self.total().saturating_sub(self.get(Outcome::Valid))
    }

    /// Each outcome with its count, in [`Outcome::ALL`] order (zeros
    /// included).
    pub fn iter(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        Outcome::ALL.iter().map(|o| (*o, self.get(*o)))
    }

    /// Whether every count is zero.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|c| *c == 0)
    }
}

/// Serialized as an object with every outcome's name as a member (zeros
/// included), so a chart has every series at every point.
impl Serialize for OutcomeCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(OUTCOMES))?;
        for (o, n) in self.iter() {
            m.serialize_entry(o.as_str(), &n)?;
        }
        m.end()
    }
}

/// One bucket of a key's series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsagePoint {
    /// The bucket's start, Unix seconds.
    pub start: i64,
    /// What was decided in it.
    pub counts: OutcomeCounts,
}

/// One key's totals over a range (the overview, [`TopOrder`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageTotal {
    /// The key's public id: `""` for a user's or client's own row (a
    /// password, session or token, not a key), [`OVERFLOW_KEY`] for what
    /// is not counted per key.
    pub key_id: String,
    /// The subject the key (or user, client) acts as: a key's owner, a
    /// user name, a client id; `""` when only refusals were counted before
    /// the subject was known (a revoked key).
    pub subject: String,
    /// What was decided.
    pub counts: OutcomeCounts,
}

/// How the overview orders keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopOrder {
    /// By decisions, most first.
    Requests,
    /// By refusals, most first.
    Refusals,
}

impl TopOrder {
    /// `requests` or `refusals`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TopOrder::Requests => "requests",
            TopOrder::Refusals => "refusals",
        }
    }
}

/// Outcomes that come only after the credential verified (it exists, and
/// the caller proved they hold it): only these are counted per key.
/// Others (unknown, malformed, invalid, ambiguous, unavailable, …) carry
/// an id the caller may have made up.
pub(crate) const fn verified(o: Outcome) -> bool {
    matches!(
        o,
        Outcome::Valid
            | Outcome::Revoked
            | Outcome::Expired
            | Outcome::Disabled
            | Outcome::UsedUp
            | Outcome::InsufficientScope
            | Outcome::CsrfFailed
            | Outcome::RateLimited
            | Outcome::QuotaExceeded
    )
}

/// The longest key id or subject a row of its own is kept under, in bytes.
pub(crate) const MAX_ROW_ID: usize = 256;

/// Which row a decision is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowOf<'a> {
    /// Not counted (no credential: the metrics count those).
    Skip,
    /// The overflow row ([`OVERFLOW_KEY`]).
    Overflow,
    /// A key's or a user's / client's own row: (key id, subject).
    Own(&'a str, &'a str),
}

/// Decides the row of a decision (`presented`: a credential was sent,
/// whether or not an id could be read from it):
/// - no credential (missing), or an anonymous decision (a route's limit
///   by address) → not counted per key: the metrics count those;
/// - a managed key (`key_…`) that verified → its own row, under its
///   subject when known;
/// - a user or client (a password, session or token: their ids are per
///   token) that verified and whose subject is known → the subject's own
///   row, key id `""`;
/// - anything else → the one overflow row.
pub(crate) fn row_for<'a>(
    outcome: Outcome,
    presented: bool,
    credential_id: Option<&'a str>,
    subject: Option<&'a str>,
) -> RowOf<'a> {
    let presented = presented || credential_id.is_some();
    if !presented || outcome == Outcome::Missing {
        return RowOf::Skip;
    }
    let Some(id) = credential_id.filter(|_| verified(outcome)) else {
        return RowOf::Overflow;
    };
    // A row's key id and subject are part of its primary key: one too long
    // for an index entry (Postgres: 2,704 bytes) would fail every batch it
    // is in. A subject that long (an external token's claim) is counted in
    // the overflow row.
    if id.len() > MAX_ROW_ID || subject.is_some_and(|s| s.len() > MAX_ROW_ID) {
        return RowOf::Overflow;
    }
    if id.starts_with("key_") {
        return RowOf::Own(id, subject.unwrap_or(""));
    }
    match subject {
        Some(s) if !s.is_empty() => RowOf::Own("", s),
        _ => RowOf::Overflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_trip_and_floor() {
        for s in Span::ALL {
            assert_eq!(Span::parse(s.as_str()), Some(s));
            assert_eq!(s.start_of(0), 0);
            assert_eq!(s.start_of(s.seconds() - 1), 0);
            assert_eq!(s.start_of(-1), -s.seconds());
        }
        assert_eq!(Span::Hour.start_of(7_300), 7_200);
    }

    #[test]
    fn counts_total_and_refused() {
        let mut c = OutcomeCounts::default();
        c.add(Outcome::Valid, 3);
        c.add(Outcome::Revoked, 2);
        assert_eq!((c.total(), c.refused()), (5, 2));
        let v = serde_json::to_value(c).unwrap_or_default();
        assert_eq!(v["valid"], 3);
        assert_eq!(v["revoked"], 2);
        assert_eq!(v.as_object().map(|m| m.len()), Some(OUTCOMES));
    }

    #[test]
    fn made_up_ids_never_get_their_own_row() {
        assert_eq!(row_for(Outcome::Missing, false, None, None), RowOf::Skip);
        assert_eq!(row_for(Outcome::Missing, true, None, None), RowOf::Skip);
        assert_eq!(
            row_for(Outcome::RateLimited, false, None, None),
            RowOf::Skip
        );
        assert_eq!(
            row_for(Outcome::Malformed, true, None, None),
            RowOf::Overflow
        );
        assert_eq!(
            row_for(Outcome::Unknown, true, Some("key_attacker"), None),
            RowOf::Overflow
        );
        assert_eq!(
            row_for(Outcome::Malformed, true, Some("key_x"), None),
            RowOf::Overflow
        );
        assert_eq!(
            row_for(Outcome::Unavailable, true, Some("key_x"), None),
            RowOf::Overflow
        );
        assert_eq!(
            row_for(Outcome::Revoked, true, Some("key_a"), None),
            RowOf::Own("key_a", "")
        );
        let long = "x".repeat(MAX_ROW_ID + 1);
        assert_eq!(
            row_for(Outcome::Valid, true, Some("jti"), Some(&long)),
            RowOf::Overflow
        );
        assert_eq!(
            row_for(Outcome::Valid, true, Some("key_a"), Some(&long)),
            RowOf::Overflow
        );
        assert_eq!(
            row_for(Outcome::Valid, true, Some("jti-123"), Some("alice")),
            RowOf::Own("", "alice")
        );
        assert_eq!(
            row_for(Outcome::Expired, true, Some("jti-123"), None),
            RowOf::Overflow
        );
    }
}
