//! `portcullis users …`, `clients …` and `tokens rotate-key`: password
//! logins, OAuth2 clients and token signing keys.

use super::UsageError;
use super::output::{clip, list, or_dash};
use crate::config::Config;
use crate::wiring::open_store;
use anyhow::{Context, Result};
use clap::Subcommand;
use portcullis::auth::identity::{Identity, IdentityError, check_username};
use portcullis::auth::jwt::SigningAlg;
use portcullis::auth::password::{PasswordError, check_length};
use portcullis::auth::specs::{client_created_json, parse_user_import, split_list};
use portcullis::store::StoreError;
use portcullis_core::time::rfc3339;
use portcullis_core::{Scopes, Secret};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub(super) enum UsersCmd {
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
pub(super) enum ClientsCmd {
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
pub(super) enum TokensCmd {
    /// Make a new signing key; prints its kid. The old key keeps verifying
    /// until the tokens it signed expire.
    RotateKey,
}

/// The identity service for the user, client and token commands.
async fn identity(cfg: &Config) -> Result<Arc<Identity>> {
    let store = open_store(cfg).await?;
    crate::wiring::identity(cfg, &store, None).await
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

pub(super) async fn users(cfg: &Config, cmd: UsersCmd) -> Result<()> {
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
            let header = format!(
                "{:<24} {:<24} {:<8} {:<9} CREATED",
                "USERNAME", "SCOPES", "DISABLED", "HASH"
            );
            list(&mut out, json, &users, &header, |u| {
                format!(
                    "{:<24} {:<24} {:<8} {:<9} {}",
                    clip(&u.username, 24),
                    clip(or_dash(&u.scopes), 24),
                    if u.disabled { "yes" } else { "no" },
                    u.hash_algorithm,
                    rfc3339(u.created_at)
                )
            })?;
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

pub(super) async fn clients(cfg: &Config, cmd: ClientsCmd) -> Result<()> {
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
            let header = format!(
                "{:<20} {:<20} {:<20} {:<42} {:<8} CREATED",
                "CLIENT ID", "NAME", "SCOPES", "GRANTS", "STATUS"
            );
            list(&mut out, json, &clients, &header, |c| {
                format!(
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
                )
            })?;
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

pub(super) async fn tokens(cfg: &Config, cmd: TokensCmd) -> Result<()> {
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
