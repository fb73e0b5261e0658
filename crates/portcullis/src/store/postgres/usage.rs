//! Postgres's side of the usage counts (`store/usage.rs`).

use crate::analytics::TopOrder;
use crate::store::StoreError;
use crate::store::usage::{
    ADD_ON_CONFLICT, Bucket, SERIES_SQL, TopRow, series_row, top_row, top_sql,
};
use sqlx::PgPool;

/// The shared statements' `?N` placeholders as Postgres writes them.
fn dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

/// Every bucket in one statement (`UNNEST` of one array per column): a
/// flush is one round trip, however many keys it carries. The rows come
/// unique and in key order, so two gateways flushing together lock them
/// in the same order.
pub(super) async fn add(pool: &PgPool, buckets: &[Bucket]) -> Result<(), StoreError> {
    let mut span = Vec::with_capacity(buckets.len());
    let mut start = Vec::with_capacity(buckets.len());
    let mut key = Vec::with_capacity(buckets.len());
    let mut subject = Vec::with_capacity(buckets.len());
    let mut outcome = Vec::with_capacity(buckets.len());
    let mut count = Vec::with_capacity(buckets.len());
    for b in buckets {
        span.push(b.span);
        start.push(b.start);
        key.push(b.key_id.as_str());
        subject.push(b.subject.as_str());
        outcome.push(b.outcome);
        count.push(b.count);
    }
    let sql = format!(
        "INSERT INTO usage (span, bucket_start, key_id, subject, outcome, count)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[])
         {ADD_ON_CONFLICT}"
    );
    // Fixed text; every value is bound.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(span)
        .bind(start)
        .bind(key)
        .bind(subject)
        .bind(outcome)
        .bind(count)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn series(
    pool: &PgPool,
    key_id: &str,
    span: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String, i64)>, StoreError> {
    let q = sqlx::query(sqlx::AssertSqlSafe(dollars(SERIES_SQL)))
        .bind(key_id)
        .bind(span)
        .bind(from)
        .bind(to);
    super::all(pool, q, series_row).await
}

pub(super) async fn top(
    pool: &PgPool,
    span: &str,
    from: i64,
    to: i64,
    order: TopOrder,
    limit: i64,
) -> Result<Vec<TopRow>, StoreError> {
    // Fixed text; `order` picks a column name.
    let q = sqlx::query(sqlx::AssertSqlSafe(dollars(&top_sql(order))))
        .bind(span)
        .bind(from)
        .bind(to)
        .bind(limit);
    super::all(pool, q, top_row).await
}

pub(super) async fn prune(
    pool: &PgPool,
    span: &str,
    before: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM usage WHERE ctid IN
            (SELECT ctid FROM usage WHERE span = $1 AND bucket_start < $2 LIMIT $3)",
    )
    .bind(span)
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
