//! SQLite's side of a store copy (`store/dump.rs`): every copied row as
//! typed values, and inserting them back.

use crate::store::StoreError;
use crate::store::dump::{Dump, TABLES, TableRows, Ty, Value, check_schema, decode_row};
use futures_util::TryStreamExt;
use sqlx::{Sqlite, SqlitePool};

/// Every row of every copied table, read in one read transaction (in WAL
/// mode a snapshot: writers carry on, and none of their later commits is
/// seen by half the tables).
pub(super) async fn export(pool: &SqlitePool) -> Result<Dump, StoreError> {
    let mut tx = pool.begin().await?;
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *tx)
    .await?;
    check_schema(&found)?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        // Names from the fixed schema list, never from input.
        let sql = sqlx::AssertSqlSafe(table.select_sql());
        // Decoded as they arrive: the database's own rows are never all
        // held beside the decoded ones.
        let mut rows = Vec::new();
        let mut stream = sqlx::query(sql).fetch(&mut *tx);
        while let Some(r) = stream.try_next().await? {
            rows.push(decode_row(table, &r)?);
        }
        drop(stream);
        tables.push(TableRows::new(table, rows)?);
    }
    tx.commit().await?;
    Ok(Dump { tables })
}

/// Inserts every row in one write transaction (`BEGIN IMMEDIATE`, as
/// every write), skipping rows whose key is there. An AUTOINCREMENT
/// table's sequence follows explicit ids by itself, so nothing more is
/// needed for the generated keys. Rows inserted per table.
pub(super) async fn import(pool: &SqlitePool, dump: &Dump) -> Result<Vec<u64>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut inserted = Vec::with_capacity(dump.tables.len());
    for t in &dump.tables {
        let mut n = 0;
        for chunk in t.rows.chunks(crate::store::dump::ROWS_PER_INSERT) {
            // Names from the fixed schema list; every value is bound.
            let sql = sqlx::AssertSqlSafe(t.table.insert_sql(chunk.len(), |i| format!("?{i}")));
            let mut query = sqlx::query::<Sqlite>(sql);
            for row in chunk {
                for (v, c) in row.iter().zip(t.table.columns) {
                    query = match (c.ty, v) {
                        (_, Value::Int(i)) => query.bind(*i),
                        (_, Value::Bool(b)) => query.bind(*b),
                        (_, Value::Text(s)) => query.bind(s.as_str()),
                        (_, Value::Bytes(b)) => query.bind(b.as_slice()),
                        (Ty::OptText, Value::Null) => query.bind(None::<&str>),
                        (_, Value::Null) => query.bind(None::<i64>),
                    };
                }
            }
            n += query.execute(&mut *tx).await?.rows_affected();
        }
        inserted.push(n);
    }
    tx.commit().await?;
    Ok(inserted)
}
