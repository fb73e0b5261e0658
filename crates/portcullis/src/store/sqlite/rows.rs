//! Running SQLite queries and decoding their rows with the shared
//! decoders (`store/rows.rs`).

use crate::store::StoreError;
use sqlx::sqlite::SqliteRow;

pub(crate) use crate::store::rows::*;

/// A decoder of one row.
pub(super) type Decode<T> = fn(&SqliteRow) -> Result<T, StoreError>;

/// Runs a bound query for at most one row and decodes it.
pub(super) async fn one<'e, 'q: 'e, E, Q, T>(
    db: E,
    query: Q,
    decode: Decode<T>,
) -> Result<Option<T>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    Q: 'q + sqlx::Execute<'q, sqlx::Sqlite>,
{
    db.fetch_optional(query)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Runs a bound query and decodes every row.
pub(super) async fn all<'e, 'q: 'e, E, Q, T>(
    db: E,
    query: Q,
    decode: Decode<T>,
) -> Result<Vec<T>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    Q: 'q + sqlx::Execute<'q, sqlx::Sqlite>,
{
    db.fetch_all(query).await?.iter().map(decode).collect()
}
