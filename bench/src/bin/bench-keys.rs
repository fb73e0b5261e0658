//! Fills an existing Portcullis store with many API keys, fast, for the
//! "store with 1,000,000 keys" benchmarks: a SQLite file, or a Postgres
//! database (`--store postgres://USER:PASSWORD@HOST:PORT/DB`).
//!
//! Usage:
//! `bench-keys --store PATH|URL --count N --out FILE [--sample M] [--scopes "a b"]
//!  [--owner OWNER] [--name NAME] [--env ENV]`
//! (defaults: `--sample` 100 or N if smaller, `--scopes data:read`,
//! `--owner bench`, `--name bench`, `--env live`).
//!
//! Each row is what `KeyService::create` would store for the same spec
//! (same key format, hash, prefix, id format and column values). `M` of
//! the `N` keys, spread evenly from the first to the last, are written to
//! `FILE` (mode 0600), one per line; no key is ever printed. At the end it
//! prints `created N keys in S.SS s`, then opens the store through the
//! library and checks that the first and last sampled keys verify.
//!
//! SQLite gets batched multi-row INSERTs; Postgres gets `COPY … FROM
//! STDIN` (text format), one transaction per 100,000 rows, then `VACUUM
//! (ANALYZE)` of the table. Either store is first opened through the
//! library, so its migrations have run. The password in a Postgres URL is
//! never printed (errors show the URL redacted).
//!
//! Exit codes: 0 done, 1 failure (including a key that does not verify),
//! 2 bad arguments.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis::auth::keys::new_id;
use portcullis::auth::verifier::{KeyVerdict, Verifier, VerifierConfig};
use portcullis::clock::{Clock, SharedClock, SystemClock};
use portcullis::store::{Store, redact_url};
use portcullis_core::key::{RANDOM_BYTES, valid_env};
use portcullis_core::{ApiKey, Scopes};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr, SqlStr, SqliteConnection};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: bench-keys --store PATH|postgres://URL --count N --out FILE [--sample M] \
                     [--scopes \"a b\"] [--owner OWNER] [--name NAME] [--env ENV]";

/// Rows committed per transaction. The id and key_hash indexes take random
/// inserts, so a transaction dirties pages all over the file and each
/// commit copies every one of them to the WAL. For a million keys, 10,000
/// rows per transaction wrote 7 GB and took half as long again as 100,000
/// rows (1.2 GB); larger transactions gained little more while growing
/// the WAL.
const ROWS_PER_TX: usize = 100_000;
/// Rows per multi-row INSERT. Each statement is a round trip to sqlx's
/// SQLite worker thread, which costs more than inserting a row, so rows go
/// in batches: 16 parameters × 500 rows stays far below SQLite's limit of
/// 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;
/// The columns `insert_key` in crates/portcullis/src/store/sqlite/tx.rs
/// writes, in the same order. Keep the two in step.
const COLUMNS: &str = "id, key_hash, prefix, env, owner, name, scopes, created_at, expires_at, \
                       remaining_uses, rate_limit, metadata, rotated_from, \
                       refill_interval, refill_amount, refilled_at";
const COLUMN_COUNT: usize = 16;

/// Where the keys go.
enum Target {
    /// A SQLite file (an existing store).
    Sqlite(PathBuf),
    /// A Postgres database, by URL (it may hold a password).
    Postgres(String),
}

impl Target {
    fn parse(v: String) -> Target {
        if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            Target::Postgres(v)
        } else {
            Target::Sqlite(PathBuf::from(v))
        }
    }

    /// The URL the library opens.
    fn url(&self) -> String {
        match self {
            Target::Sqlite(p) => format!("sqlite://{}", p.display()),
            Target::Postgres(u) => u.clone(),
        }
    }
}

struct Args {
    store: Target,
    count: usize,
    sample: usize,
    out: PathBuf,
    scopes: Scopes,
    owner: String,
    name: String,
    env: String,
}

/// Either a usage error (exit 2) or a failure (exit 1); both are one line.
enum Fail {
    Usage(String),
    Run(String),
}

fn run_err(what: &str, e: impl std::fmt::Display) -> Fail {
    Fail::Run(format!("{what}: {e}"))
}

/// `KeySpec::check`'s rule for names and owners, which the library keeps
/// private: the CLI would refuse anything else, so refuse it here too.
fn check_label(field: &str, v: &str) -> Result<(), Fail> {
    if v.trim().is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
        return Err(Fail::Usage(format!(
            "{field}: must be 1-128 characters with no control characters"
        )));
    }
    Ok(())
}

fn parse_args() -> Result<Option<Args>, Fail> {
    let usage = |m: String| Fail::Usage(m);
    let mut store = None;
    let mut count = None;
    let mut out = None;
    let mut sample = None;
    let mut scopes = String::from("data:read");
    let mut owner = String::from("bench");
    let mut name = String::from("bench");
    let mut env = String::from("live");
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = inline
            .or_else(|| it.next())
            .ok_or_else(|| usage(format!("{flag} needs a value; {USAGE}")))?;
        let number = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| usage(format!("{flag}: not a positive integer: {v:?}")))
        };
        match flag.as_str() {
            "--store" => store = Some(Target::parse(value)),
            "--count" => count = Some(number(&value)?),
            "--sample" => sample = Some(number(&value)?),
            "--out" => out = Some(PathBuf::from(value)),
            "--scopes" => scopes = value,
            "--owner" => owner = value,
            "--name" => name = value,
            "--env" => env = value,
            other => return Err(usage(format!("unknown argument {other:?}; {USAGE}"))),
        }
    }
    let missing = |f: &str| usage(format!("{f} is required; {USAGE}"));
    let store = store.ok_or_else(|| missing("--store"))?;
    let count = count.ok_or_else(|| missing("--count"))?;
    let out = out.ok_or_else(|| missing("--out"))?;
    let sample = sample.unwrap_or(count.min(100));
    if sample > count {
        return Err(usage(format!(
            "--sample ({sample}) must not exceed --count ({count})"
        )));
    }
    let scopes =
        Scopes::parse(&scopes).map_err(|e| usage(format!("--scopes: bad scope {:?}", e.0)))?;
    check_label("--owner", &owner)?;
    check_label("--name", &name)?;
    if !valid_env(&env) {
        return Err(usage(
            "--env: use 1-16 lowercase letters or digits, like live or test".into(),
        ));
    }
    Ok(Some(Args {
        store,
        count,
        sample,
        out,
        scopes,
        owner,
        name,
        env,
    }))
}

/// The index of the `i`-th of `m` samples spread evenly over `0..n`, first
/// and last included, so the sample covers the whole run (`m <= n`).
fn sample_index(i: usize, m: usize, n: usize) -> usize {
    if m <= 1 {
        return 0;
    }
    // u128: `i * (n - 1)` can exceed usize for large runs.
    let idx = (i as u128) * ((n - 1) as u128) / ((m - 1) as u128);
    usize::try_from(idx).unwrap_or(n - 1)
}

fn insert_sql(rows: usize) -> SqlStr {
    let placeholders = format!("({})", vec!["?"; COLUMN_COUNT].join(", "));
    let values = vec![placeholders.as_str(); rows].join(", ");
    // Built only from the constants above: no outside input reaches it.
    AssertSqlSafe(format!("INSERT INTO api_keys ({COLUMNS}) VALUES {values}")).into_sql_str()
}

/// One generated key's row-specific values.
struct Row {
    id: String,
    hash: [u8; 32],
    prefix: String,
}

/// The rows of one INSERT statement.
struct Chunk {
    created_at: i64,
    rows: Vec<Row>,
}

/// Makes the keys, in chunks of `ROWS_PER_STATEMENT`, on its own thread so
/// that generating them (base62 encoding, SHA-256, ids: about a quarter of
/// the work) overlaps with SQLite inserting the previous chunk. Returns the
/// sampled keys; stops early, without error, if the inserter went away.
fn generate(
    env: &str,
    count: usize,
    sample: usize,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> Result<Vec<ApiKey>, String> {
    let clock = SystemClock;
    let mut samples = Vec::with_capacity(sample);
    let mut next_sample_at = sample_index(0, sample, count);
    let mut random = vec![0u8; ROWS_PER_STATEMENT * RANDOM_BYTES];
    let mut done = 0usize;
    while done < count {
        let n = ROWS_PER_STATEMENT.min(count - done);
        let random = random
            .get_mut(..n * RANDOM_BYTES)
            .ok_or("internal: random buffer too small")?;
        // One read of the OS CSPRNG per chunk instead of one per key: the
        // same source `KeyService::fresh` uses, far fewer syscalls.
        getrandom::fill(random).map_err(|e| format!("the system random source failed: {e}"))?;
        let mut rows = Vec::with_capacity(n);
        for bytes in random.chunks_exact(RANDOM_BYTES) {
            let bytes: &[u8; RANDOM_BYTES] =
                bytes.try_into().map_err(|_| "internal: bad random chunk")?;
            let key =
                ApiKey::generate(env, bytes).map_err(|e| format!("cannot build a key: {e}"))?;
            rows.push(Row {
                id: new_id("key_").map_err(|e| format!("cannot make a key id: {e}"))?,
                hash: key.hash().0,
                prefix: key.display_prefix(),
            });
            if done == next_sample_at && samples.len() < sample {
                samples.push(key);
                next_sample_at = sample_index(samples.len(), sample, count);
            }
            done += 1;
        }
        let chunk = Chunk {
            created_at: clock.now(),
            rows,
        };
        if tx.blocking_send(chunk).is_err() {
            break;
        }
    }
    Ok(samples)
}

/// Inserts one chunk with a single multi-row statement.
async fn insert_chunk(
    conn: &mut SqliteConnection,
    chunk: &Chunk,
    full_sql: &SqlStr,
    shared: &Shared<'_>,
) -> Result<(), Fail> {
    // Every full chunk reuses the SQL, and so sqlx's cached prepared
    // statement; only a run's last, short chunk needs its own.
    let sql = if chunk.rows.len() == ROWS_PER_STATEMENT {
        full_sql.clone()
    } else {
        insert_sql(chunk.rows.len())
    };
    let mut q = sqlx::query(sql);
    for r in &chunk.rows {
        // Values as KeyService::fresh sets them for a spec with no expiry,
        // unlimited uses, no refill, no rate limit and no metadata; NULLs
        // typed as insert_key binds them.
        q = q
            .bind(r.id.as_str())
            .bind(&r.hash[..])
            .bind(r.prefix.as_str())
            .bind(shared.env)
            .bind(shared.owner)
            .bind(shared.name)
            .bind(shared.scopes)
            .bind(chunk.created_at)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(None::<&str>)
            .bind(shared.metadata)
            .bind(None::<&str>)
            .bind(None::<&str>)
            .bind(None::<i64>)
            .bind(0i64);
    }
    q.execute(conn)
        .await
        .map_err(|e| run_err("insert failed", e))?;
    Ok(())
}

/// The column values every row shares.
struct Shared<'a> {
    env: &'a str,
    owner: &'a str,
    name: &'a str,
    scopes: &'a str,
    metadata: &'a str,
}

/// The out file, private because it holds secrets.
fn create_out(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

async fn fill_sqlite(args: &Args, path: &Path) -> Result<(Vec<ApiKey>, Duration), Fail> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // The id and key_hash indexes take random inserts; a page cache
        // that holds the whole file (about 220 MB for a million keys)
        // keeps them from thrashing. Negative means KiB.
        .pragma("cache_size", "-524288");
    let mut conn = SqliteConnection::connect_with(&opts)
        .await
        .map_err(|e| run_err("cannot open the store", e))?;
    let scopes = args.scopes.to_space_separated();
    let shared = Shared {
        env: &args.env,
        owner: &args.owner,
        name: &args.name,
        scopes: &scopes,
        // `KeySpec::new`'s metadata, `json!({})`, as insert_key writes it.
        metadata: "{}",
    };
    let full_sql = insert_sql(ROWS_PER_STATEMENT);

    let started = Instant::now();
    // A few chunks of slack so neither side waits on the other's jitter.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(8);
    let (env, count, sample) = (args.env.clone(), args.count, args.sample);
    let generator = std::thread::spawn(move || generate(&env, count, sample, &tx));

    let inserted = async {
        while let Some(first) = rx.recv().await {
            // IMMEDIATE, as the store's own writes: take the write lock up
            // front instead of failing half-way if a gateway writes too.
            let mut db = conn
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| run_err("cannot begin a transaction", e))?;
            insert_chunk(&mut db, &first, &full_sql, &shared).await?;
            let mut in_tx = first.rows.len();
            while in_tx < ROWS_PER_TX {
                let Some(chunk) = rx.recv().await else { break };
                insert_chunk(&mut db, &chunk, &full_sql, &shared).await?;
                in_tx += chunk.rows.len();
            }
            // Deliberately no key_changes or audit_events rows (insert_key
            // writes one of each per key). The change log only tells
            // running gateways to drop cached entries, and a brand-new
            // random key can be in no cache; a million audit rows would
            // double the writes and bury the store's real history. The
            // CLI's `keys create` remains the way to make audited keys.
            db.commit().await.map_err(|e| run_err("commit failed", e))?;
        }
        Ok::<(), Fail>(())
    }
    .await;
    // Dropping the receiver first stops a generator still sending (after
    // an insert failed), so the join below cannot hang.
    drop(rx);
    let generated = generator
        .join()
        .map_err(|_| Fail::Run("the key generator thread failed".into()))?;
    inserted?;
    let samples = generated.map_err(Fail::Run)?;
    let elapsed = started.elapsed();

    // Leave no WAL behind for the gateway to replay at start-up.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(|e| run_err("checkpoint failed", e))?;
    conn.close()
        .await
        .map_err(|e| run_err("cannot close the store", e))?;
    Ok((samples, elapsed))
}

/// `COPY` into the columns `insert_key` in
/// crates/portcullis/src/store/postgres/tx.rs writes (the same as SQLite's).
const COPY_SQL: &str = "COPY api_keys (id, key_hash, prefix, env, owner, name, scopes, created_at, \
                        expires_at, remaining_uses, rate_limit, metadata, rotated_from, \
                        refill_interval, refill_amount, refilled_at) FROM STDIN";

/// A value for COPY's text format: backslash, tab, newline and carriage
/// return escaped (owners and names may hold backslashes).
fn copy_text(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One chunk as COPY text rows, with the values `insert_chunk` binds.
fn copy_rows(out: &mut String, chunk: &Chunk, shared: &Shared<'_>) {
    use std::fmt::Write as _;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for r in &chunk.rows {
        copy_text(out, &r.id);
        // bytea's text form, `\x` + hex, with its backslash escaped.
        out.push_str("\t\\\\x");
        for b in r.hash {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        for v in [
            r.prefix.as_str(),
            shared.env,
            shared.owner,
            shared.name,
            shared.scopes,
        ] {
            out.push('\t');
            copy_text(out, v);
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "\t{}\t\\N\t\\N\t\\N\t", chunk.created_at);
        copy_text(out, shared.metadata);
        out.push_str("\t\\N\t\\N\t\\N\t0\n");
    }
}

/// The URL's password must not reach the output: sqlx's messages do not
/// quote the URL, but say only the redacted form if one ever does.
fn scrub(url: &str, e: impl std::fmt::Display) -> String {
    let m = e.to_string();
    if m.contains(url) {
        m.replace(url, &redact_url(url))
    } else {
        m
    }
}

async fn fill_postgres(args: &Args, url: &str) -> Result<(Vec<ApiKey>, Duration), Fail> {
    let pg_err = |what: &str, e: sqlx::Error| Fail::Run(format!("{what}: {}", scrub(url, e)));
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| pg_err(&format!("cannot connect to {}", redact_url(url)), e))?;
    let scopes = args.scopes.to_space_separated();
    let shared = Shared {
        env: &args.env,
        owner: &args.owner,
        name: &args.name,
        scopes: &scopes,
        metadata: "{}",
    };

    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(8);
    let (env, count, sample) = (args.env.clone(), args.count, args.sample);
    let generator = std::thread::spawn(move || generate(&env, count, sample, &tx));

    let inserted = async {
        let mut text = String::with_capacity(ROWS_PER_STATEMENT * 256);
        while let Some(first) = rx.recv().await {
            // A transaction per ROWS_PER_TX rows, as for SQLite: a failure
            // part-way leaves whole batches, and no one transaction's
            // WAL grows with the run.
            let mut db = conn
                .begin()
                .await
                .map_err(|e| pg_err("cannot begin a transaction", e))?;
            let mut copy = db
                .copy_in_raw(COPY_SQL)
                .await
                .map_err(|e| pg_err("cannot start COPY", e))?;
            let mut in_tx = 0;
            let mut next = Some(first);
            while let Some(chunk) = next.take() {
                text.clear();
                copy_rows(&mut text, &chunk, &shared);
                if let Err(e) = copy.send(text.as_bytes()).await {
                    let _ = copy.abort("bench-keys: send failed").await;
                    return Err(pg_err("COPY failed", e));
                }
                in_tx += chunk.rows.len();
                if in_tx < ROWS_PER_TX {
                    next = rx.recv().await;
                }
            }
            copy.finish().await.map_err(|e| pg_err("COPY failed", e))?;
            // No key_changes or audit_events rows, as for SQLite (see
            // fill_sqlite).
            db.commit().await.map_err(|e| pg_err("commit failed", e))?;
        }
        Ok::<(), Fail>(())
    }
    .await;
    drop(rx);
    let generated = generator
        .join()
        .map_err(|_| Fail::Run("the key generator thread failed".into()))?;
    inserted?;
    let samples = generated.map_err(Fail::Run)?;
    let elapsed = started.elapsed();

    // Hint bits, the visibility map and planner statistics, as a table in
    // service has them; otherwise the first reads of every page would
    // write it back during the benchmark.
    sqlx::raw_sql("VACUUM (ANALYZE) api_keys")
        .execute(&mut conn)
        .await
        .map_err(|e| pg_err("VACUUM failed", e))?;
    conn.close()
        .await
        .map_err(|e| pg_err("cannot close the connection", e))?;
    Ok((samples, elapsed))
}

/// Checks through the library, as the gateway would, that a sampled key
/// is accepted.
async fn check(store: &Store, key: &ApiKey, which: &str) -> Result<(), Fail> {
    let clock: SharedClock = Arc::new(SystemClock);
    let verifier = Verifier::new(store.clone(), clock, VerifierConfig::default())
        .await
        .map_err(|e| run_err("cannot build a verifier", e))?;
    // verify_unspent rather than verify: the keys have unlimited uses, so
    // the two agree, and a check should not write to the store.
    match verifier.verify_unspent(key.expose()).await {
        Ok(KeyVerdict::Valid(_)) => Ok(()),
        Ok(KeyVerdict::Rejected(r)) => Err(Fail::Run(format!(
            "the {which} sampled key ({}) does not verify: {r:?}",
            key.display_prefix()
        ))),
        Err(e) => Err(run_err("verification failed", e)),
    }
}

async fn run(args: Args) -> Result<(), Fail> {
    let url = args.store.url();
    // Opening through the library first refuses a missing file (create is
    // false) and brings an older store's schema up to date (on Postgres:
    // creates it), so the inserts below meet the columns they name.
    let store = Store::open(&url, false)
        .await
        .map_err(|e| run_err(&format!("cannot open the store {}", redact_url(&url)), e))?;
    // Created before the long part, so a bad path fails at once.
    let mut out = create_out(&args.out)
        .map_err(|e| run_err(&format!("cannot create {}", args.out.display()), e))?;

    let (samples, elapsed) = match &args.store {
        Target::Sqlite(path) => fill_sqlite(&args, path).await?,
        Target::Postgres(url) => fill_postgres(&args, url).await?,
    };

    let mut text = String::with_capacity(samples.len() * 72);
    for k in &samples {
        text.push_str(k.expose());
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| run_err(&format!("cannot write {}", args.out.display()), e))?;
    println!(
        "created {} keys in {:.2} s",
        args.count,
        elapsed.as_secs_f64()
    );

    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Err(Fail::Run("internal: no key was sampled".into()));
    };
    check(&store, first, "first").await?;
    check(&store, last, "last").await?;
    Ok(())
}

fn main() -> ExitCode {
    let result = match parse_args() {
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Some(args)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| run_err("cannot start the runtime", e))
            .and_then(|rt| rt.block_on(run(args))),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("bench-keys: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => {
            eprintln!("bench-keys: {m}");
            ExitCode::FAILURE
        }
    }
}
