//! The command line.

use crate::config::{self, Config, LogFormat};
use crate::gateway::App;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis::admin::{self, AdminState};
use portcullis::auth::guard::Guard;
use portcullis::auth::identity::{Identity, IdentityError, check_username};
use portcullis::auth::jwt::SigningAlg;
use portcullis::auth::keys::KeyService;
use portcullis::auth::password::{PasswordError, check_length};
use portcullis::auth::specs::{
    KeyRequest, client_created_json, created_json, parse_user_import, split_list,
};
use portcullis::auth::verifier::Verifier;
use portcullis::clock::{SharedClock, SystemClock};
use portcullis::store::StoreError;
use portcullis::store::{KeyFilter, KeyRecord, LastAdmin, Store};
use portcullis_core::time::{parse_duration, rfc3339};
use portcullis_core::{Scopes, Secret};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// A command-line mistake (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "API security gateway: API keys, scopes, and a decision endpoint for nginx, Traefik and Caddy"
)]
struct Cli {
    /// Config file (TOML). Without one, built-in defaults apply.
    #[arg(long, short, global = true, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway and the admin API.
    Serve,
    /// Create the store and print a one-time admin key.
    Init,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage users (password logins).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage OAuth2 clients.
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// Manage token signing keys.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Back the store up, or restore it.
    #[command(subcommand)]
    Store(StoreCmd),
}

#[derive(Subcommand)]
enum StoreCmd {
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

#[derive(Subcommand)]
enum UsersCmd {
    /// Add a user. Password: the first line of stdin, or a prompt (twice,
    /// not echoed) when stdin is a terminal.
    Add {
        /// Login name.
        name: String,
        /// Scopes, comma- or space-separated.
        #[arg(long)]
        scopes: Option<String>,
        /// Print the user's record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password (ends their sessions and tokens). Password as
    /// for `add`.
    Passwd {
        /// Login name.
        name: String,
    },
    /// Switch a user off (ends their sessions and tokens).
    Disable {
        /// Login name.
        name: String,
    },
    /// Switch a disabled user back on.
    Enable {
        /// Login name.
        name: String,
    },
    /// List users.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Import users with existing hashes (Argon2id or bcrypt), all or none.
    /// FILE is JSON: [{"username","hashed_password","scopes"?,"disabled"?}]
    /// or {"name": {...}} (FastAPI's fake_users_db shape).
    Import {
        /// The JSON file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClientsCmd {
    /// Add a client; prints its id, then its secret, one per line.
    Add {
        /// A name for people.
        name: String,
        /// Scopes, comma- or space-separated.
        #[arg(long)]
        scopes: Option<String>,
        /// Grant types, comma-separated: client_credentials, refresh_token,
        /// password (default: client_credentials,refresh_token).
        #[arg(long)]
        grants: Option<String>,
        /// Print the id, secret and record as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client and its refresh tokens (final).
    Revoke {
        /// Client id.
        id: String,
    },
}

#[derive(Subcommand)]
enum TokensCmd {
    /// Make a new signing key; prints its kid. The old key keeps verifying
    /// until the tokens it signed expire.
    RotateKey,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the config and explain each route.
    Check,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key; prints the key alone on stdout.
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// Who the key acts for (default: the name).
        #[arg(long)]
        owner: Option<String>,
        /// Scopes, comma- or space-separated.
        #[arg(long)]
        scopes: Option<String>,
        /// Lifetime, like 30d or 12h.
        #[arg(long)]
        expires: Option<String>,
        /// Number of uses.
        #[arg(long)]
        uses: Option<i64>,
        /// Refill the uses every `day` or `month` (UTC), to --uses.
        #[arg(long)]
        refill: Option<String>,
        /// The key's own rate limit, like 100/minute, replacing routes'
        /// per-caller limits.
        #[arg(long)]
        rate: Option<String>,
        /// Environment label in the key (live, test).
        #[arg(long)]
        env: Option<String>,
        /// Free JSON metadata (an object).
        #[arg(long)]
        metadata: Option<String>,
        /// Print the created key and its record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys.
    List {
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one key.
    Show {
        /// Key id.
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key now (final). The last active admin key is refused
    /// unless --force-last-admin is given.
    Revoke {
        /// Key id.
        id: String,
        /// Revoke it even if it is the last active admin key. Nobody can
        /// use the admin API afterwards, until an admin key is made here
        /// with `keys create --scopes admin`.
        #[arg(long)]
        force_last_admin: bool,
    },
    /// Issue a replacement; the old key works until the grace ends.
    Rotate {
        /// Key id.
        id: String,
        /// How long the old key keeps working.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Print the new key and its record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Switch a key off. The last active admin key is refused unless
    /// --force-last-admin is given.
    Disable {
        /// Key id.
        id: String,
        /// Disable it even if it is the last active admin key. Nobody can
        /// use the admin API afterwards, until it is enabled again or an
        /// admin key is made here with `keys create --scopes admin`.
        #[arg(long)]
        force_last_admin: bool,
    },
    /// Switch a disabled key back on.
    Enable {
        /// Key id.
        id: String,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    // Every variable: `tokens.secret_env` may name one without the
    // prefix (only `PORTCULLIS_SECTION__KEY` ones override the file).
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(config::load(path.map(PathBuf::as_path), &env)?)
}

pub async fn run() -> Result<()> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            return Ok(());
        }
        Err(e) => {
            let msg = e.to_string();
            let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_owned();
            // "the following required arguments were not provided:" names
            // them on the next line.
            if first.ends_with(':')
                && let Some(next) = lines.next()
            {
                first.push(' ');
                first.push_str(next);
            }
            return Err(UsageError(format!("{first} (see portcullis --help)")).into());
        }
    };
    let cfg = load_config(cli.config.as_ref())?;
    match cli.cmd {
        Cmd::Serve => serve(cfg).await,
        Cmd::Config(ConfigCmd::Check) => {
            // What `serve` would refuse beyond the file itself: the
            // certificate and key, read and matched as serve reads them.
            if let Some(t) = &cfg.tls {
                crate::tls::load(&t.cert, &t.key).context("tls")?;
            }
            for (i, t) in cfg.identity.tokens.trusted.iter().enumerate() {
                portcullis::auth::jwt::check_jwks(t)
                    .with_context(|| format!("tokens.trusted_issuers[{i}]"))?;
            }
            print!("{}", config::explain(&cfg));
            eprintln!("config ok");
            Ok(())
        }
        Cmd::Init => init(&cfg).await,
        Cmd::Keys(k) => keys(&cfg, k).await,
        Cmd::Users(u) => users(&cfg, u).await,
        Cmd::Clients(c) => clients(&cfg, c).await,
        Cmd::Tokens(t) => tokens(&cfg, t).await,
        Cmd::Store(s) => store_cmd(&cfg, s).await,
    }
}

fn print_counts(counts: &[(String, i64)]) {
    for (t, n) in counts {
        println!("{t}\t{n}");
    }
}

async fn store_cmd(cfg: &Config, cmd: StoreCmd) -> Result<()> {
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
            // The copy holds key hashes and password hashes: owner-only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", file.display()))?;
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
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
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

async fn open_store(cfg: &Config) -> Result<Store> {
    Store::open(&cfg.store_url, true).await.with_context(|| {
        format!(
            "cannot open the store {}",
            portcullis::store::redact_url(&cfg.store_url)
        )
    })
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

async fn init(cfg: &Config) -> Result<()> {
    let store = open_store(cfg).await?;
    let existing = store
        .list_keys(&KeyFilter {
            limit: 1_000_000,
            ..KeyFilter::default()
        })
        .await?
        .into_iter()
        .any(|k| k.scopes.split(' ').any(|s| s == "admin"));
    if existing {
        // Revoked ones count too: init is for a new store, and an admin
        // key revoked with --force-last-admin is replaced with keys create.
        anyhow::bail!(
            "the store already has an admin key (active or not); create more with: portcullis keys create --name NAME --scopes admin"
        );
    }
    let svc = KeyService::new(store, clock(), None);
    let spec = KeyRequest {
        name: "initial admin".into(),
        owner: Some("admin".into()),
        scopes: Some("admin".into()),
        ..KeyRequest::default()
    }
    .into_spec()?;
    let created = svc.create("cli", &spec).await.map_err(key_err)?;
    eprintln!(
        "store ready at {}",
        portcullis::store::redact_url(&cfg.store_url)
    );
    eprintln!(
        "admin key {} (id {}): shown once, keep it safe",
        created.record.prefix, created.record.id
    );
    println!("{}", created.key.expose());
    Ok(())
}

async fn keys(cfg: &Config, cmd: KeysCmd) -> Result<()> {
    let svc = KeyService::new(open_store(cfg).await?, clock(), None);
    let mut out = std::io::stdout().lock();
    match cmd {
        KeysCmd::Create {
            name,
            owner,
            scopes,
            expires,
            uses,
            refill,
            rate,
            env,
            metadata,
            json,
        } => {
            let metadata = metadata
                .map(|m| {
                    serde_json::from_str(&m)
                        .map_err(|e| UsageError(format!("--metadata: not JSON: {e}")))
                })
                .transpose()?;
            let spec = KeyRequest {
                name,
                owner,
                scopes,
                env,
                expires_in: expires,
                uses,
                refill,
                refill_amount: None,
                rate_limit: rate,
                metadata,
            }
            .into_spec()
            .map_err(|e| UsageError(e.to_string()))?;
            let created = svc.create("cli", &spec).await.map_err(key_err)?;
            if json {
                writeln!(out, "{}", created_json(&created))?;
            } else {
                eprintln!(
                    "created {} ({}), owner {}; the key is shown once:",
                    created.record.id, created.record.prefix, created.record.owner
                );
                writeln!(out, "{}", created.key.expose())?;
            }
        }
        KeysCmd::List { owner, all, json } => {
            let mut keys = Vec::new();
            let mut after = None;
            loop {
                let page = svc
                    .list(&KeyFilter {
                        owner: owner.clone(),
                        include_revoked: all,
                        after: after.clone(),
                        limit: 1000,
                    })
                    .await?;
                let n = page.len();
                after = page.last().map(|k| k.id.clone());
                keys.extend(page);
                if n < 1000 {
                    break;
                }
            }
            if json {
                writeln!(out, "{}", serde_json::to_string(&keys)?)?;
            } else {
                let now = portcullis::clock::Clock::now(&SystemClock);
                writeln!(
                    out,
                    "{:<21} {:<16} {:<16} {:<20} {:<20} {:<9} {:<20} LAST USED",
                    "ID", "PREFIX", "OWNER", "NAME", "SCOPES", "STATUS", "EXPIRES"
                )?;
                for k in &keys {
                    writeln!(
                        out,
                        "{:<21} {:<16} {:<16} {:<20} {:<20} {:<9} {:<20} {}",
                        k.id,
                        k.prefix,
                        clip(&k.owner, 16),
                        clip(&k.name, 20),
                        clip(&k.scopes, 20),
                        status(k, now),
                        k.expires_at.map_or("never".into(), rfc3339),
                        k.last_used_at.map_or("never".into(), rfc3339)
                    )?;
                }
            }
        }
        KeysCmd::Show { id, json } => {
            let k = svc.show(&id).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&k)?)?;
            } else {
                show(&mut out, &k)?;
            }
        }
        KeysCmd::Revoke {
            id,
            force_last_admin,
        } => {
            let k = svc
                .revoke_with("cli", &id, last_admin(force_last_admin))
                .await
                .map_err(key_err)?;
            eprintln!(
                "revoked {} ({}); running gateways refuse it within 1 s",
                k.id, k.prefix
            );
        }
        KeysCmd::Disable {
            id,
            force_last_admin,
        } => {
            let k = svc
                .set_disabled_with("cli", &id, true, last_admin(force_last_admin))
                .await
                .map_err(key_err)?;
            eprintln!("disabled {} ({})", k.id, k.prefix);
        }
        KeysCmd::Enable { id } => {
            let k = svc.set_disabled("cli", &id, false).await?;
            eprintln!("enabled {} ({})", k.id, k.prefix);
        }
        KeysCmd::Rotate { id, grace, json } => {
            let grace = parse_duration(&grace).map_err(|e| UsageError(format!("--grace: {e}")))?;
            let created = svc.rotate("cli", &id, grace).await.map_err(key_err)?;
            if json {
                writeln!(out, "{}", created_json(&created))?;
            } else {
                eprintln!(
                    "rotated {id} to {} ({}); the old key works for {grace} s more; the new key is shown once:",
                    created.record.id, created.record.prefix
                );
                writeln!(out, "{}", created.key.expose())?;
            }
        }
    }
    Ok(())
}

fn last_admin(force: bool) -> LastAdmin {
    if force {
        LastAdmin::Allow
    } else {
        LastAdmin::Protect
    }
}

/// An invalid field is the caller's mistake (exit 2); anything else is a
/// failure (exit 1), with the last-admin refusal saying how to proceed.
fn key_err(e: portcullis::auth::keys::KeyError) -> anyhow::Error {
    match e {
        portcullis::auth::keys::KeyError::Invalid(m)
        | portcullis::auth::keys::KeyError::TooLarge(m) => UsageError(m).into(),
        e @ portcullis::auth::keys::KeyError::LastAdminKey { .. } => anyhow::anyhow!(
            "{e}; create another admin key first (portcullis keys create --name NAME --scopes admin), or pass --force-last-admin"
        ),
        e => e.into(),
    }
}

/// The identity service for the user, client and token commands.
async fn identity(cfg: &Config) -> Result<Arc<Identity>> {
    let store = open_store(cfg).await?;
    crate::identity_setup::build(cfg, &store, clock(), None).await
}

/// A caller's mistake (an invalid field, a password of the wrong length)
/// exits 2; a missing record says what is missing and exits 1, like
/// `keys show`; anything else exits 1.
fn identity_err(e: IdentityError, missing: impl FnOnce() -> String) -> anyhow::Error {
    match e {
        IdentityError::Invalid(m) => UsageError(m).into(),
        IdentityError::Password(p @ (PasswordError::TooShort | PasswordError::TooLong)) => {
            UsageError(p.to_string()).into()
        }
        IdentityError::Store(StoreError::NotFound) => anyhow::anyhow!(missing()),
        e => e.into(),
    }
}

fn no_user(name: &str) -> String {
    format!("no user named {name:?}")
}

/// A new password: the first line of stdin when it is not a terminal,
/// else typed twice at a prompt without echo. Its length is checked here,
/// before anything is opened.
fn read_new_password() -> Result<Secret<String>> {
    use std::io::{BufRead, IsTerminal};
    let pw = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")
            .context("cannot read the password from the terminal")?;
        check_length(&first, true).map_err(|e| UsageError(e.to_string()))?;
        let again = rpassword::prompt_password("Again: ")
            .context("cannot read the password from the terminal")?;
        if first != again {
            return Err(UsageError("the passwords do not match".into()).into());
        }
        first
    } else {
        let mut line = String::new();
        let n = std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        if n == 0 {
            return Err(UsageError("no password: stdin is empty".into()).into());
        }
        let end = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(end);
        line
    };
    check_length(&pw, true).map_err(|e| UsageError(e.to_string()))?;
    Ok(Secret::new(pw))
}

fn scopes_arg(s: Option<&str>) -> Result<Scopes> {
    Ok(Scopes::parse(s.unwrap_or("")).map_err(|e| UsageError(format!("--scopes: {e}")))?)
}

async fn users(cfg: &Config, cmd: UsersCmd) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        UsersCmd::Add { name, scopes, json } => {
            let scopes = scopes_arg(scopes.as_deref())?;
            check_username(&name).map_err(|e| UsageError(e.to_string()))?;
            let pw = read_new_password()?;
            let id = identity(cfg).await?;
            let r = id
                .add_user(&name, &pw, scopes, "cli")
                .await
                .map_err(|e| identity_err(e, || no_user(&name)))?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            }
            eprintln!("added user {} (scopes: {})", r.username, or_dash(&r.scopes));
        }
        UsersCmd::Passwd { name } => {
            let pw = read_new_password()?;
            let id = identity(cfg).await?;
            id.set_password(&name, &pw, "cli")
                .await
                .map_err(|e| identity_err(e, || no_user(&name)))?;
            eprintln!("password set for {name}; their sessions and tokens are ended");
        }
        UsersCmd::Disable { name } => {
            let id = identity(cfg).await?;
            let r = id
                .set_user_disabled(&name, true, "cli")
                .await
                .map_err(|e| identity_err(e, || no_user(&name)))?;
            eprintln!(
                "disabled {}; running gateways refuse their sessions and tokens within 1 s",
                r.username
            );
        }
        UsersCmd::Enable { name } => {
            let id = identity(cfg).await?;
            let r = id
                .set_user_disabled(&name, false, "cli")
                .await
                .map_err(|e| identity_err(e, || no_user(&name)))?;
            eprintln!("enabled {}", r.username);
        }
        UsersCmd::List { json } => {
            let id = identity(cfg).await?;
            let users = id
                .list_users()
                .await
                .map_err(|e| identity_err(e, String::new))?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&users)?)?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:<24} {:<8} {:<9} CREATED",
                    "USERNAME", "SCOPES", "DISABLED", "HASH"
                )?;
                for u in &users {
                    writeln!(
                        out,
                        "{:<24} {:<24} {:<8} {:<9} {}",
                        clip(&u.username, 24),
                        clip(or_dash(&u.scopes), 24),
                        if u.disabled { "yes" } else { "no" },
                        u.hash_algorithm,
                        rfc3339(u.created_at)
                    )?;
                }
            }
        }
        UsersCmd::Import { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
            let users = parse_user_import(&bytes).map_err(|e| match e {
                IdentityError::Invalid(m) => UsageError(format!("{}: {m}", file.display())),
                e => UsageError(e.to_string()),
            })?;
            if users.is_empty() {
                return Err(UsageError(format!("{}: no users in it", file.display())).into());
            }
            let id = identity(cfg).await?;
            // The store refuses the whole batch on a taken name without
            // saying which; name them here.
            let existing: std::collections::HashSet<String> = id
                .list_users()
                .await
                .map_err(|e| identity_err(e, String::new))?
                .into_iter()
                .map(|u| u.username)
                .collect();
            let taken: Vec<&str> = users
                .iter()
                .map(|u| u.0.as_str())
                .filter(|n| existing.contains(*n))
                .collect();
            if !taken.is_empty() {
                anyhow::bail!(
                    "{}: {} {} {} already; nothing was imported",
                    file.display(),
                    if taken.len() == 1 { "user" } else { "users" },
                    taken
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if taken.len() == 1 { "exists" } else { "exist" }
                );
            }
            let n = id
                .import_users(users, "cli")
                .await
                .map_err(|e| identity_err(e, String::new))?;
            eprintln!("imported {n} users");
        }
    }
    Ok(())
}

async fn clients(cfg: &Config, cmd: ClientsCmd) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ClientsCmd::Add {
            name,
            scopes,
            grants,
            json,
        } => {
            let scopes = scopes_arg(scopes.as_deref())?;
            let grants = grants.as_deref().map(split_list).unwrap_or_default();
            let id = identity(cfg).await?;
            let c = id
                .add_client(&name, scopes, &grants, "cli")
                .await
                .map_err(|e| identity_err(e, String::new))?;
            if json {
                writeln!(out, "{}", client_created_json(&c))?;
            } else {
                eprintln!(
                    "created client {} ({}), grants {}; the secret is shown once:",
                    c.record.client_id, c.record.name, c.record.grants
                );
                writeln!(out, "{}", c.record.client_id)?;
                writeln!(out, "{}", c.secret.expose())?;
            }
        }
        ClientsCmd::List { json } => {
            let id = identity(cfg).await?;
            let clients = id
                .list_clients()
                .await
                .map_err(|e| identity_err(e, String::new))?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&clients)?)?;
            } else {
                writeln!(
                    out,
                    "{:<20} {:<20} {:<20} {:<42} {:<8} CREATED",
                    "CLIENT ID", "NAME", "SCOPES", "GRANTS", "STATUS"
                )?;
                for c in &clients {
                    writeln!(
                        out,
                        "{:<20} {:<20} {:<20} {:<42} {:<8} {}",
                        c.client_id,
                        clip(&c.name, 20),
                        clip(or_dash(&c.scopes), 20),
                        clip(&c.grants, 42),
                        if c.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        rfc3339(c.created_at)
                    )?;
                }
            }
        }
        ClientsCmd::Revoke { id: client_id } => {
            let id = identity(cfg).await?;
            let c = id
                .revoke_client(&client_id, "cli")
                .await
                .map_err(|e| identity_err(e, || format!("no client with id {client_id:?}")))?;
            eprintln!(
                "revoked client {} ({}) and its refresh tokens; running gateways refuse its access tokens within 1 s",
                c.client_id, c.name
            );
        }
    }
    Ok(())
}

async fn tokens(cfg: &Config, cmd: TokensCmd) -> Result<()> {
    match cmd {
        TokensCmd::RotateKey => {
            let id = identity(cfg).await?;
            if id.tokens().settings().alg == SigningAlg::HS256 {
                return Err(UsageError(
                    "HS256 keys come from the environment (tokens.secret_env); change the secret to rotate".into(),
                )
                .into());
            }
            let kid = id.tokens().rotate_key("cli").await?;
            eprintln!(
                "new signing key {kid}; the previous key keeps verifying until the tokens it signed expire"
            );
            println!("{kid}");
        }
    }
    Ok(())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

fn status(k: &KeyRecord, now: i64) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.disabled {
        "disabled"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else if k.remaining_uses == Some(0) && k.refill.is_none() {
        "used up"
    } else {
        "active"
    }
}

fn show(out: &mut impl Write, k: &KeyRecord) -> std::io::Result<()> {
    let t = |v: Option<i64>| v.map_or("-".to_owned(), rfc3339);
    writeln!(out, "id            {}", k.id)?;
    writeln!(out, "prefix        {}", k.prefix)?;
    writeln!(out, "owner         {}", k.owner)?;
    writeln!(out, "name          {}", k.name)?;
    writeln!(out, "scopes        {}", k.scopes)?;
    writeln!(
        out,
        "status        {}",
        status(k, portcullis::clock::Clock::now(&SystemClock))
    )?;
    writeln!(out, "created       {}", rfc3339(k.created_at))?;
    writeln!(out, "expires       {}", t(k.expires_at))?;
    writeln!(out, "revoked       {}", t(k.revoked_at))?;
    writeln!(
        out,
        "uses left     {}",
        k.remaining_uses
            .map_or("unlimited".into(), |u| u.to_string())
    )?;
    if let (Some(every), Some(amount)) = (&k.refill, k.refill_amount) {
        writeln!(out, "refill        {amount} every {every} (UTC)")?;
    }
    writeln!(
        out,
        "rate limit    {}",
        k.rate_limit.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "last used     {}", t(k.last_used_at))?;
    writeln!(
        out,
        "rotated from  {}",
        k.rotated_from.as_deref().unwrap_or("-")
    )?;
    writeln!(
        out,
        "rotated to    {}",
        k.rotated_to.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "metadata      {}", k.metadata)
}

/// Installs the log subscriber. Lines are written to stdout in batches by
/// a dedicated thread (see [`crate::logwriter`]), so a request never waits
/// on a write; none is ever dropped. Keep the guard until the end:
/// dropping it writes what is pending.
fn init_logging(cfg: &Config) -> Result<(crate::logwriter::Flusher, crate::logwriter::BatchLog)> {
    // Dependencies stay at info or quieter even when ours are at trace:
    // their trace output can include raw header frames. An operator (or a
    // log-canary test) may raise them with log.dependency_level.
    let filter = match &cfg.dependency_log_level {
        None => format!(
            "{},hyper=info,hyper_util=info,h2=info,sqlx=warn,tower=info",
            cfg.log_level
        ),
        Some(d) => format!(
            "{},hyper={d},hyper_util={d},h2={d},sqlx={d},tower={d},rustls={d}",
            cfg.log_level
        ),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, flusher) = crate::logwriter::batch_log(std::io::stdout())
        .context("cannot start the log writer thread")?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone());
    let _ = match cfg.log_format {
        LogFormat::Json => b
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => b.try_init(),
    };
    Ok((flusher, writer))
}

async fn serve(cfg: Config) -> Result<()> {
    let (_log_flusher, log_sink) = init_logging(&cfg)?;
    // JSON access-log lines skip the subscriber's formatter (same shape).
    let access_sink = matches!(cfg.log_format, LogFormat::Json).then_some(log_sink);
    let store = open_store(&cfg).await?;
    let verifier = Verifier::new(store.clone(), clock(), cfg.verifier.clone()).await?;
    verifier.spawn_background();
    let admin_guard = Guard::new(verifier.clone(), cfg.names.clone());
    let identity = crate::identity_setup::build(&cfg, &store, clock(), Some(&verifier)).await?;
    if cfg.tls.is_none()
        && cfg.routes.iter().any(|r| {
            r.policy.schemes.schemes().iter().any(|s| {
                matches!(
                    s,
                    portcullis_core::Scheme::Session | portcullis_core::Scheme::ApiKeyCookie
                )
            })
        })
    {
        tracing::warn!(
            "cookies are set with the Secure attribute and the __Host- prefix, but this listener speaks plain HTTP: browsers keep such cookies only on localhost. Put Portcullis behind TLS for anything else"
        );
    }
    let guard = Guard::new(verifier.clone(), cfg.names.clone()).with_identity(identity.clone());
    let public = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let admin_l = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", cfg.admin_listen))?;
    let transport = match &cfg.tls {
        None => {
            crate::tls::handle_sighup(None);
            crate::serve::Transport::Plain
        }
        Some(t) => {
            let certs = crate::tls::Reloadable::new(t.cert.clone(), t.key.clone())
                .context("tls: cannot load the certificate")?;
            crate::tls::handle_sighup(Some(certs.clone()));
            crate::serve::Transport::Tls(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(certs)?,
            ))
        }
    };
    let redirect_l = match cfg.tls.as_ref().and_then(|t| t.redirect_http_from) {
        None => None,
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (tls.redirect_http_from)"))?,
        ),
    };
    let app = Arc::new(
        App::new(cfg.clone(), guard.clone(), store.clone())?.with_access_sink(access_sink),
    );
    let admin_router = admin::router(AdminState {
        keys: KeyService::new(store.clone(), clock(), Some(verifier.clone())),
        guard: admin_guard,
        identity: Some(identity.clone()),
        limiter: Some(app.limiter.clone()),
    });
    let cfg = Arc::new(cfg);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tracing::info!(listen = %public.local_addr()?, admin_listen = %admin_l.local_addr()?, tls = cfg.tls.is_some(), routes = cfg.routes.len(), "portcullis listening");
    let a = app.clone();
    let public_task = tokio::spawn(crate::serve::run(
        public,
        cfg.clone(),
        transport,
        move |conn, req| a.clone().handle(conn, req),
        rx.clone(),
    ));
    let redirect_task = redirect_l.map(|l| {
        let a = app.clone();
        tokio::spawn(crate::serve::run(
            l,
            cfg.clone(),
            crate::serve::Transport::Plain,
            move |conn, req| a.clone().handle(conn, req),
            rx.clone(),
        ))
    });
    let admin_app = app.clone();
    let admin_task = tokio::spawn(crate::serve::run(
        admin_l,
        cfg.clone(),
        crate::serve::Transport::Plain,
        move |conn: crate::serve::Conn, req| {
            let r = admin_router.clone();
            // Admin answers carry an X-Request-Id too, from the same
            // sequence as the public listener's.
            let rid = http::HeaderValue::from_str(&admin_app.request_id()).ok();
            async move {
                use tower::ServiceExt;
                // The admin listener refuses ambiguous framing as the
                // public one does.
                let mut resp = if let Some(a) = conn.ambiguity() {
                    let p =
                        portcullis_core::Problem::new(portcullis_core::ErrorCode::AmbiguousFraming)
                            .log_reason(a.log_reason());
                    let mut resp = portcullis::rejection::problem_response(&p, None);
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    resp
                } else {
                    match r.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                };
                if let Some(v) = rid {
                    resp.headers_mut().insert(crate::proxy::REQUEST_ID, v);
                }
                resp
            }
        },
        rx,
    ));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing open requests");
    let _ = tx.send(true);
    let _ = public_task.await;
    if let Some(t) = redirect_task {
        let _ = t.await;
    }
    let _ = admin_task.await;
    verifier.flush_last_used().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
