//! Per-key usage counts (`usage` table): the analytics aggregator's
//! batches in, series and overviews out (`crate::analytics`).
//!
//! One row per (span, bucket start, key id, subject, outcome) with a
//! count. A flush adds each minute count to its minute, hour and day rows
//! in one transaction (additive upserts: `count = count + excluded`), so
//! the roll-up needs no job that could fall behind or be lost, and
//! several gateways writing the same buckets sum correctly.

use super::{Store, StoreError};
use crate::analytics::{OutcomeCounts, Retention, Span, TopOrder, UsagePoint, UsageTotal};
use portcullis_core::Outcome;
use std::collections::BTreeMap;

/// One minute's count of one outcome for one key, as the aggregator
/// flushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The minute's start (Unix seconds; floored to the minute here).
    pub minute: i64,
    /// The key's public id (`""` for a user's or client's own row, `-`
    /// for the overflow row).
    pub key_id: String,
    /// The subject.
    pub subject: String,
    /// The outcome.
    pub outcome: Outcome,
    /// How many.
    pub count: u64,
}

/// One row to add to, as a backend writes it: unique and in primary-key
/// order within a batch (so two writers lock rows in the same order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub span: &'static str,
    pub start: i64,
    pub key_id: String,
    pub subject: String,
    pub outcome: &'static str,
    pub count: i64,
}

/// A row of the overview query: a key (or a user's / client's own row),
/// the subject to show, and one outcome's sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopRow {
    pub key_id: String,
    /// The subject that tells rows apart: the row's subject when the key
    /// id is `""`, else `""` (a key's rows are one whatever the subject).
    pub who: String,
    pub subject: String,
    pub outcome: String,
    pub count: i64,
}

/// How many rows one prune statement deletes: short statements, so the
/// writers a prune runs beside never wait long.
pub(crate) const PRUNE_BATCH: i64 = 5_000;

fn outcome_of(name: &str) -> Outcome {
    // A name this version does not know (written by a newer one) still
    // counts, as "other".
    Outcome::parse(name).unwrap_or(Outcome::Other)
}

fn clamp(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The minute, hour and day rows of a batch, summed per row, in
/// primary-key order.
pub(crate) fn roll_up(rows: &[UsageRow]) -> Vec<Bucket> {
    let mut sums: BTreeMap<(&'static str, i64, &str, &str, &'static str), i64> = BTreeMap::new();
    for r in rows {
        if r.count == 0 {
            continue;
        }
        let n = i64::try_from(r.count).unwrap_or(i64::MAX);
        for span in Span::ALL {
            let e = sums
                .entry((
                    span.as_str(),
                    span.start_of(r.minute),
                    &r.key_id,
                    &r.subject,
                    r.outcome.as_str(),
                ))
                .or_insert(0);
            *e = e.saturating_add(n);
        }
    }
    sums.into_iter()
        .map(|((span, start, k, s, o), count)| Bucket {
            span,
            start,
            key_id: k.to_owned(),
            subject: s.to_owned(),
            outcome: o,
            count,
        })
        .collect()
}

impl Store {
    /// Adds a batch of minute counts to their minute, hour and day rows,
    /// in one transaction (one statement on Postgres). Additive: writing
    /// the same counts twice counts them twice, and counts from several
    /// gateways sum.
    pub async fn record_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let buckets = roll_up(rows);
        if buckets.is_empty() {
            return Ok(());
        }
        self.backend.add_usage(&buckets).await
    }

    /// A key's counts per bucket of `span`, for every bucket that overlaps
    /// `[from, to)` (Unix seconds: from the bucket holding `from` up to
    /// the last one starting before `to`), oldest first. Buckets with no
    /// decision are absent. Rows of every subject of the key are summed.
    pub async fn usage_series(
        &self,
        key_id: &str,
        span: Span,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsagePoint>, StoreError> {
        let from = span.start_of(from);
        if to <= from {
            return Ok(Vec::new());
        }
        let rows = self
            .backend
            .usage_series(key_id, span.as_str(), from, to)
            .await?;
        let mut out: Vec<UsagePoint> = Vec::new();
        for (start, outcome, n) in rows {
            if out.last().is_none_or(|p| p.start != start) {
                out.push(UsagePoint {
                    start,
                    counts: OutcomeCounts::default(),
                });
            }
            if let Some(p) = out.last_mut() {
                p.counts.add(outcome_of(&outcome), clamp(n));
            }
        }
        Ok(out)
    }

    /// The `limit` keys with the most decisions (or refusals) in the
    /// buckets of `span` that overlap `[from, to)`, most first (ties by
    /// key id), each with its counts per outcome. A user's or client's
    /// own row (key id `""`) is one entry per subject; the overflow row
    /// ([`crate::analytics::OVERFLOW_KEY`]) takes part like a key.
    pub async fn usage_top(
        &self,
        span: Span,
        from: i64,
        to: i64,
        order: TopOrder,
        limit: u32,
    ) -> Result<Vec<UsageTotal>, StoreError> {
        let from = span.start_of(from);
        if to <= from || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .backend
            .usage_top(span.as_str(), from, to, order, i64::from(limit))
            .await?;
        let mut by: BTreeMap<(String, String), UsageTotal> = BTreeMap::new();
        for r in rows {
            let t = by
                .entry((r.key_id.clone(), r.who))
                .or_insert_with(|| UsageTotal {
                    key_id: r.key_id,
                    subject: r.subject,
                    counts: OutcomeCounts::default(),
                });
            t.counts.add(outcome_of(&r.outcome), clamp(r.count));
        }
        let mut out: Vec<UsageTotal> = by.into_values().collect();
        let rank = |t: &UsageTotal| match order {
            TopOrder::Requests => t.counts.total(),
            TopOrder::Refusals => t.counts.refused(),
        };
        // Stable: ties stay in (key id, subject) order, as the query's.
        out.sort_by_key(|t| std::cmp::Reverse(rank(t)));
        out.truncate(limit as usize);
        Ok(out)
    }

    /// Deletes the buckets of each span that ended before `now` minus its
    /// retention, a batch per statement. Returns the rows deleted.
    pub async fn prune_usage(&self, retention: &Retention, now: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        for span in Span::ALL {
            let keep = i64::try_from(retention.of(span).as_secs()).unwrap_or(i64::MAX);
            let before = span.start_of(now.saturating_sub(keep));
            loop {
                let n = self
                    .backend
                    .prune_usage(span.as_str(), before, PRUNE_BATCH)
                    .await?;
                total += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
                // Let the writers in between batches.
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }
}

/// A key's series, summed over its subjects (`?N` placeholders; the
/// Postgres backend writes them `$N`).
pub(crate) const SERIES_SQL: &str = "SELECT bucket_start, outcome, CAST(SUM(count) AS BIGINT) AS n
     FROM usage
     WHERE key_id = ?1 AND span = ?2 AND bucket_start >= ?3 AND bucket_start < ?4
     GROUP BY bucket_start, outcome ORDER BY bucket_start, outcome";

/// The overview: the top keys (`t`), then their sums per outcome. A key's
/// rows are one entry whatever their subject (`who` = `''`); a user's or
/// client's own rows (key id `''`) are one entry per subject. Built from
/// fixed text only: `order` picks one of two column names.
pub(crate) fn top_sql(order: TopOrder) -> String {
    let by = match order {
        TopOrder::Requests => "total",
        TopOrder::Refusals => "refused",
    };
    format!(
        "WITH t AS (
            SELECT key_id,
                   CASE WHEN key_id = '' THEN subject ELSE '' END AS who,
                   MAX(subject) AS subject,
                   CAST(SUM(count) AS BIGINT) AS total,
                   CAST(SUM(CASE WHEN outcome = 'valid' THEN 0 ELSE count END) AS BIGINT) AS refused
            FROM usage
            WHERE span = ?1 AND bucket_start >= ?2 AND bucket_start < ?3
            GROUP BY key_id, CASE WHEN key_id = '' THEN subject ELSE '' END
            ORDER BY {by} DESC, key_id, who
            LIMIT ?4)
         SELECT t.key_id AS key_id, t.who AS who, t.subject AS subject, u.outcome AS outcome,
                CAST(SUM(u.count) AS BIGINT) AS n
         FROM t JOIN usage u ON u.key_id = t.key_id AND (t.key_id <> '' OR u.subject = t.who)
         WHERE u.span = ?1 AND u.bucket_start >= ?2 AND u.bucket_start < ?3
         GROUP BY t.key_id, t.who, t.subject, u.outcome"
    )
}

/// The conflict clause of every usage upsert: add, never replace.
pub(crate) const ADD_ON_CONFLICT: &str =
    "ON CONFLICT (span, bucket_start, key_id, subject, outcome)
     DO UPDATE SET count = usage.count + excluded.count";

/// Decodes a row of [`top_sql`].
pub(crate) fn top_row(r: &impl super::rows::Cells) -> Result<TopRow, StoreError> {
    Ok(TopRow {
        key_id: r.get("key_id")?,
        who: r.get("who")?,
        subject: r.get("subject")?,
        outcome: r.get("outcome")?,
        count: r.get("n")?,
    })
}

/// Decodes a row of [`SERIES_SQL`].
pub(crate) fn series_row(r: &impl super::rows::Cells) -> Result<(i64, String, i64), StoreError> {
    Ok((r.get("bucket_start")?, r.get("outcome")?, r.get("n")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roll_up_sums_minutes_into_hours_and_days() {
        let row = |minute, n| UsageRow {
            minute,
            key_id: "key_a".into(),
            subject: "s".into(),
            outcome: Outcome::Valid,
            count: n,
        };
        let b = roll_up(&[row(3_600, 2), row(3_660, 3), row(7_200, 0)]);
        let of = |span: &str| -> Vec<(i64, i64)> {
            b.iter()
                .filter(|x| x.span == span)
                .map(|x| (x.start, x.count))
                .collect()
        };
        assert_eq!(of("minute"), [(3_600, 2), (3_660, 3)]);
        assert_eq!(of("hour"), [(3_600, 5)]);
        assert_eq!(of("day"), [(0, 5)]);
    }
}
