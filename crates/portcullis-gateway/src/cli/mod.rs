//! The command line: the commands as clap reads them, and dispatch. Each
//! group of subcommands has its module ([`keys`]; users, clients and
//! signing keys in [`identity`]; [`store`]); `serve` is
//! [`crate::wiring::serve`].

mod identity;
mod keys;
mod output;
mod store;

use crate::config::{self, Config};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    Keys(keys::KeysCmd),
    /// Manage users (password logins).
    #[command(subcommand)]
    Users(identity::UsersCmd),
    /// Manage OAuth2 clients.
    #[command(subcommand)]
    Clients(identity::ClientsCmd),
    /// Manage token signing keys.
    #[command(subcommand)]
    Tokens(identity::TokensCmd),
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Back the store up, restore it, or copy it into another.
    #[command(subcommand)]
    Store(store::StoreCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the config and explain each route.
    Check,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    // Every variable: `tokens.secret_env` may name one without the
    // prefix (only `PORTCULLIS_SECTION__KEY` ones override the file).
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(config::load(path.map(PathBuf::as_path), &env)?)
}

pub async fn run() -> Result<()> {
    use std::io::Write;
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            // Not `print!`, which panics when the reader has gone
            // (`portcullis --help | head -1`): a closed pipe is its choice.
            let _ = write!(std::io::stdout().lock(), "{e}");
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
        Cmd::Serve => crate::wiring::serve(cfg).await,
        Cmd::Config(ConfigCmd::Check) => check_config(&cfg),
        Cmd::Init => keys::init(&cfg).await,
        Cmd::Keys(k) => keys::run(&cfg, k).await,
        Cmd::Users(u) => identity::users(&cfg, u).await,
        Cmd::Clients(c) => identity::clients(&cfg, c).await,
        Cmd::Tokens(t) => identity::tokens(&cfg, t).await,
        Cmd::Store(s) => store::run(&cfg, s).await,
    }
}

/// `config check`: the file, and what `serve` would refuse beyond it: the
/// certificate and key, read and matched as serve reads them, and the
/// trusted issuers' JWKS files.
fn check_config(cfg: &Config) -> Result<()> {
    if let Some(t) = &cfg.tls {
        crate::tls::load(&t.cert, &t.key).context("tls")?;
    }
    for (i, t) in cfg.identity.tokens.trusted.iter().enumerate() {
        portcullis::auth::jwt::check_jwks(t)
            .with_context(|| format!("tokens.trusted_issuers[{i}]"))?;
    }
    print!("{}", config::explain(cfg));
    eprintln!("config ok");
    Ok(())
}
