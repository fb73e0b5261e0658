//! `portcullis store backup|restore`: a consistent copy of a SQLite
//! store, and putting one back; `portcullis store copy`: every row of one
//! store moved into another (SQLite to Postgres), proven by checksums.

use crate::config::Config;
use anyhow::{Context, Result};
use clap::Subcommand;
use portcullis::store::dump::CopyReport;
use portcullis::store::{Listen, Store, StoreOptions, redact_url};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub(super) enum StoreCmd {
    /// Write a consistent copy of the store to FILE while gateways keep
    /// running (SQLite's VACUUM INTO); prints each table's row count.
    Backup {
        /// Where to write the copy (must not exist).
        file: PathBuf,
    },
    /// Replace the store with a backup. Stop every gateway that uses the
    /// store first: they keep their open files. The backup is checked
    /// (integrity and row counts) before anything is replaced.
    Restore {
        /// The backup to restore.
        file: PathBuf,
        /// Confirm that the store's current contents are to be replaced.
        #[arg(long)]
        replace: bool,
    },
    /// Copy every key, user, client, refresh token, session, signing key,
    /// secret and audit event from one store into another (SQLite to
    /// Postgres), keeping ids; the destination is created and migrated.
    /// Both are then read back and compared: prints each table's rows,
    /// the rows new to the destination and a SHA-256 of its rows, and a
    /// total line. A destination that holds other rows is refused before
    /// anything is written; copying again writes nothing. Put a Postgres
    /// password in PGPASSWORD or ~/.pgpass rather than on the command
    /// line.
    Copy {
        /// The store to copy from: sqlite://PATH or postgres://USER@HOST/DB.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The store to copy into (created if it does not exist).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// The file of a `sqlite://PATH` (or `sqlite:PATH`) URL.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(PathBuf::from)
}

fn print_counts(counts: &[(String, i64)]) {
    for (t, n) in counts {
        println!("{t}\t{n}");
    }
}

pub(super) async fn run(cfg: &Config, cmd: StoreCmd) -> Result<()> {
    match cmd {
        StoreCmd::Backup { file } => backup(cfg, &file).await,
        StoreCmd::Restore { file, replace } => restore(cfg, &file, replace).await,
        StoreCmd::Copy { from, to, json } => copy(&from, &to, json).await,
    }
}

/// The configured store's file: backup and restore work on SQLite.
fn configured_file(cfg: &Config) -> Result<PathBuf> {
    sqlite_path(&cfg.store_url).context(
        "store backup and restore work on SQLite stores (store copy moves a store to Postgres)",
    )
}

async fn backup(cfg: &Config, file: &Path) -> Result<()> {
    let path = configured_file(cfg)?;
    if file.exists() {
        anyhow::bail!("{} exists; name a new file", file.display());
    }
    let store = Store::open(&cfg.store_url, false)
        .await
        .with_context(|| format!("cannot open the store {}", path.display()))?;
    let counts = store
        .backup(file)
        .await
        .with_context(|| format!("cannot write the backup {}", file.display()))?;
    owner_only(file).with_context(|| format!("cannot restrict {}", file.display()))?;
    print_counts(&counts);
    eprintln!("backed up {} to {}", path.display(), file.display());
    Ok(())
}

async fn restore(cfg: &Config, file: &Path, replace: bool) -> Result<()> {
    let path = configured_file(cfg)?;
    let counts = Store::inspect_backup(file)
        .await
        .with_context(|| format!("{} is not a usable backup", file.display()))?;
    if path.exists() && !replace {
        anyhow::bail!(
            "{} exists; stop every gateway using it, then run again with --replace",
            path.display()
        );
    }
    // Copy beside the store, then rename over it: the store is never
    // half-written. Its WAL files belong to the old database.
    let tmp = path.with_extension("restore-tmp");
    std::fs::copy(file, &tmp).with_context(|| format!("cannot copy to {}", tmp.display()))?;
    owner_only(&tmp)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.clone().into_os_string();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    // Opening applies any migration the backup predates.
    Store::open(&cfg.store_url, false).await?;
    print_counts(&counts);
    eprintln!("restored {} from {}", path.display(), file.display());
    Ok(())
}

/// Whether two URLs name one store: the same SQLite file (however the
/// path is spelled), or the same Postgres URL (either scheme). A URL
/// spelled otherwise (another host name for the same server) is not
/// caught, and needs not be: copying a store into itself finds every row
/// in place and writes nothing.
fn same_store(a: &str, b: &str) -> bool {
    let file = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    match (sqlite_path(a), sqlite_path(b)) {
        (Some(x), Some(y)) => file(x) == file(y),
        (None, None) => {
            let url = |u: &str| u.replacen("postgresql://", "postgres://", 1);
            url(a.trim_end_matches('/')) == url(b.trim_end_matches('/'))
        }
        _ => false,
    }
}

/// `store copy --json`: the report, and which stores (passwords removed).
#[derive(Serialize)]
struct CopyJson<'a> {
    from: String,
    to: String,
    #[serde(flatten)]
    report: &'a CopyReport,
}

async fn copy(from: &str, to: &str, json: bool) -> Result<()> {
    let (from_shown, to_shown) = (redact_url(from), redact_url(to));
    if same_store(from, to) {
        return Err(super::UsageError(format!(
            "--from and --to name the same store ({from_shown}): name another destination"
        ))
        .into());
    }
    // A copy needs no change wake-ups: no listening connection.
    let options = StoreOptions {
        listen: Listen::Off,
        ..StoreOptions::default()
    };
    let source = Store::open_with(from, false, &options)
        .await
        .with_context(|| format!("cannot open the source store {from_shown}"))?;
    let dest = Store::open_with(to, true, &options)
        .await
        .with_context(|| format!("cannot open or create the destination store {to_shown}"))?;
    let report = source
        .copy_to(&dest)
        .await
        .with_context(|| format!("cannot copy {from_shown} to {to_shown}"))?;
    if json {
        let out = CopyJson {
            from: from_shown.clone(),
            to: to_shown.clone(),
            report: &report,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for t in &report.tables {
            println!("{}\t{}\t{}\t{}", t.table, t.rows, t.new, t.sha256);
        }
        println!("total\t{}\t{}\t{}", report.rows, report.new, report.sha256);
    }
    eprintln!(
        "copied {from_shown} to {to_shown}: {} rows, {} new; the destination reads back the same (SHA-256 {})",
        report.rows, report.new, report.sha256
    );
    Ok(())
}

/// A copy of the store holds key hashes and password hashes: it is made
/// readable by its owner alone.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
