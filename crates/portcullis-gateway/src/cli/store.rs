//! `portcullis store backup|restore`: a consistent copy of a SQLite
//! store, and putting one back.

use crate::config::Config;
use anyhow::{Context, Result};
use clap::Subcommand;
use portcullis::store::Store;
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
}

fn print_counts(counts: &[(String, i64)]) {
    for (t, n) in counts {
        println!("{t}\t{n}");
    }
}

pub(super) async fn run(cfg: &Config, cmd: StoreCmd) -> Result<()> {
    let Some(path) = cfg
        .store_url
        .strip_prefix("sqlite://")
        .or_else(|| cfg.store_url.strip_prefix("sqlite:"))
    else {
        anyhow::bail!("store backup and restore work on SQLite stores");
    };
    let path = PathBuf::from(path);
    match cmd {
        StoreCmd::Backup { file } => {
            if file.exists() {
                anyhow::bail!("{} exists; name a new file", file.display());
            }
            let store = Store::open(&cfg.store_url, false)
                .await
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            let counts = store
                .backup(&file)
                .await
                .with_context(|| format!("cannot write the backup {}", file.display()))?;
            owner_only(&file).with_context(|| format!("cannot restrict {}", file.display()))?;
            print_counts(&counts);
            eprintln!("backed up {} to {}", path.display(), file.display());
            Ok(())
        }
        StoreCmd::Restore { file, replace } => {
            let counts = Store::inspect_backup(&file)
                .await
                .with_context(|| format!("{} is not a usable backup", file.display()))?;
            if path.exists() && !replace {
                anyhow::bail!(
                    "{} exists; stop every gateway using it, then run again with --replace",
                    path.display()
                );
            }
            // Copy beside the store, then rename over it: the store is
            // never half-written. Its WAL files belong to the old database.
            let tmp = path.with_extension("restore-tmp");
            std::fs::copy(&file, &tmp)
                .with_context(|| format!("cannot copy to {}", tmp.display()))?;
            owner_only(&tmp)?;
            for suffix in ["-wal", "-shm"] {
                let mut side = path.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(side);
            }
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
            // Opening applies any migration the backup predates.
            Store::open(&cfg.store_url, false).await?;
            print_counts(&counts);
            eprintln!("restored {} from {}", path.display(), file.display());
            Ok(())
        }
    }
}

/// A copy of the store holds key hashes and password hashes: it is made
/// readable by its owner alone.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
