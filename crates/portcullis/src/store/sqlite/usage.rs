//! SQLite's side of the usage counts (`store/usage.rs`).

use crate::analytics::TopOrder;
use crate::store::StoreError;
use crate::store::usage::{
    ADD_ON_CONFLICT, Bucket, SERIES_SQL, TopRow, series_row, top_row, top_sql,
};
use sqlx::{Sqlite, SqlitePool};

/// Rows per INSERT: 6 values each, far below SQLite's limit on bound
/// values (32,766).
const ROWS_PER_INSERT: usize = 500;

/// Every bucket in one write transaction (`BEGIN IMMEDIATE`, as every
/// write here: no lock upgrade that could fail half-way).
pub(super) async fn add(pool: &SqlitePool, buckets: &[Bucket]) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for chunk in buckets.chunks(ROWS_PER_INSERT) {
        let values = (0..chunk.len())
            .map(|i| {
                let b = i * 6;
                format!(
                    "(?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // Placeholders only; every value is bound.
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO usage (span, bucket_start, key_id, subject, outcome, count)
             VALUES {values} {ADD_ON_CONFLICT}"
        ));
        let mut q = sqlx::query::<Sqlite>(sql);
        for b in chunk {
            q = q
                .bind(b.span)
                .bind(b.start)
                .bind(b.key_id.as_str())
                .bind(b.subject.as_str())
                .bind(b.outcome)
                .bind(b.count);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn series(
    pool: &SqlitePool,
    key_id: &str,
    span: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String, i64)>, StoreError> {
    let q = sqlx::query(SERIES_SQL)
        .bind(key_id)
        .bind(span)
        .bind(from)
        .bind(to);
    super::rows::all(pool, q, series_row).await
}

pub(super) async fn top(
    pool: &SqlitePool,
    span: &str,
    from: i64,
    to: i64,
    order: TopOrder,
    limit: i64,
) -> Result<Vec<TopRow>, StoreError> {
    // Fixed text; `order` picks a column name.
    let q = sqlx::query(sqlx::AssertSqlSafe(top_sql(order)))
        .bind(span)
        .bind(from)
        .bind(to)
        .bind(limit);
    super::rows::all(pool, q, top_row).await
}

pub(super) async fn prune(
    pool: &SqlitePool,
    span: &str,
    before: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM usage WHERE rowid IN
            (SELECT rowid FROM usage WHERE span = ?1 AND bucket_start < ?2 LIMIT ?3)",
    )
    .bind(span)
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
