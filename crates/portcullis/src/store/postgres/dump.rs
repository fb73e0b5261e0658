//! Postgres's side of a store copy (`store/dump.rs`): every copied row as
//! typed values, and inserting them back.

use crate::store::StoreError;
use crate::store::dump::{
    Dump, ROWS_PER_INSERT, TABLES, TableRows, Ty, Value, check_schema, decode_row,
};
use futures_util::TryStreamExt;
use sqlx::{PgPool, Postgres};

/// Every row of every copied table, read in one REPEATABLE READ, READ
/// ONLY transaction: one snapshot for every table, while writers carry
/// on.
pub(crate) async fn export(pool: &PgPool) -> Result<Dump, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    // A whole table in one SELECT can outlast the statement timeout
    // meant for a gateway's queries; this transaction takes no lock that
    // anyone waits on, so it may take as long as it needs.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
        .execute(&mut *tx)
        .await?;
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema()",
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

/// Inserts every row in one transaction, serialised with every façade
/// write (the same advisory lock), skipping rows whose key is there; then
/// moves each identity column's sequence past the inserted ids, so the
/// next audit event does not collide with a copied one. Rows inserted
/// per table.
pub(crate) async fn import(pool: &PgPool, dump: &Dump) -> Result<Vec<u64>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(super::WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    let mut inserted = Vec::with_capacity(dump.tables.len());
    for t in &dump.tables {
        let mut n = 0;
        for chunk in t.rows.chunks(ROWS_PER_INSERT) {
            // Names from the fixed schema list; every value is bound.
            let sql = sqlx::AssertSqlSafe(t.table.insert_sql(chunk.len(), |i| format!("${i}")));
            let mut query = sqlx::query::<Postgres>(sql);
            for row in chunk {
                for (v, c) in row.iter().zip(t.table.columns) {
                    // A NULL is bound with its column's type: Postgres
                    // refuses a BIGINT NULL for a TEXT column.
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
        if t.table.generated_key {
            // Never moves a sequence back: ids it handed out to
            // transactions that rolled back stay unused.
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT setval(s.seq, GREATEST(s.top, COALESCE(pg_sequence_last_value(s.seq), 0)))
                 FROM (SELECT pg_get_serial_sequence($1, $2)::regclass AS seq,
                              (SELECT MAX({key}) FROM {table}) AS top) s
                 WHERE s.top IS NOT NULL AND s.seq IS NOT NULL",
                key = t.table.key[0],
                table = t.table.name,
            ));
            sqlx::query(sql)
                .bind(t.table.name)
                .bind(t.table.key[0])
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(inserted)
}
