//! `portcullis init` and `portcullis keys …`: the first admin key, and
//! creating, listing, revoking, rotating and switching API keys.

use super::UsageError;
use super::output::{clip, list};
use crate::config::Config;
use crate::wiring::{clock, open_store};
use anyhow::Result;
use clap::Subcommand;
use portcullis::auth::keys::{CreatedKey, KeyService};
use portcullis::auth::specs::{KeyRequest, created_json};
use portcullis::clock::SystemClock;
use portcullis::store::{KeyFilter, KeyRecord, KeySettings, LastAdmin};
use portcullis_core::Scopes;
use portcullis_core::time::{parse_duration, rfc3339};
use std::io::Write;

#[derive(Subcommand)]
pub(super) enum KeysCmd {
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
    /// Change a key's scopes, rate limit or uses; what is not given stays.
    /// Running gateways apply it within 1 s.
    Update {
        /// Key id.
        id: String,
        /// The new scopes, comma- or space-separated (replacing the old).
        #[arg(long)]
        scopes: Option<String>,
        /// The key's own rate limit, like 100/minute; `none` removes it.
        #[arg(long)]
        rate: Option<String>,
        /// Uses left; `unlimited` removes the count.
        #[arg(long)]
        uses: Option<String>,
        /// Change it even if it is the last active admin key (which
        /// otherwise keeps the admin scope and unlimited uses).
        #[arg(long)]
        force_last_admin: bool,
    },
}

pub(super) async fn init(cfg: &Config) -> Result<()> {
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

pub(super) async fn run(cfg: &Config, cmd: KeysCmd) -> Result<()> {
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
            print_created(&mut out, json, &created, || {
                format!(
                    "created {} ({}), owner {}; the key is shown once:",
                    created.record.id, created.record.prefix, created.record.owner
                )
            })?;
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
            let now = portcullis::clock::Clock::now(&SystemClock);
            let header = format!(
                "{:<21} {:<16} {:<16} {:<20} {:<20} {:<9} {:<20} LAST USED",
                "ID", "PREFIX", "OWNER", "NAME", "SCOPES", "STATUS", "EXPIRES"
            );
            list(&mut out, json, &keys, &header, |k| {
                format!(
                    "{:<21} {:<16} {:<16} {:<20} {:<20} {:<9} {:<20} {}",
                    k.id,
                    k.prefix,
                    clip(&k.owner, 16),
                    clip(&k.name, 20),
                    clip(&k.scopes, 20),
                    status(k, now),
                    k.expires_at.map_or("never".into(), rfc3339),
                    k.last_used_at.map_or("never".into(), rfc3339)
                )
            })?;
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
        KeysCmd::Update {
            id,
            scopes,
            rate,
            uses,
            force_last_admin,
        } => {
            if scopes.is_none() && rate.is_none() && uses.is_none() {
                return Err(UsageError(
                    "keys update: give at least one of --scopes, --rate, --uses".into(),
                )
                .into());
            }
            let mut settings = KeySettings::default();
            if let Some(s) = scopes {
                settings.scopes = Some(
                    Scopes::parse(&s.replace(',', " "))
                        .map_err(|e| UsageError(format!("--scopes: {e}")))?,
                );
            }
            if let Some(r) = rate {
                settings.rate_limit = Some((r != "none").then_some(r));
            }
            if let Some(u) = uses {
                settings.remaining_uses = Some(match u.as_str() {
                    "unlimited" => None,
                    n => Some(n.parse::<i64>().map_err(|_| {
                        UsageError(format!(
                            "--uses: {n:?} is not a whole number or `unlimited`"
                        ))
                    })?),
                });
            }
            let k = svc
                .update("cli", &id, &settings, last_admin(force_last_admin))
                .await
                .map_err(key_err)?;
            eprintln!(
                "updated {} ({}): scopes {:?}, rate limit {}, uses {}; running gateways apply it within 1 s",
                k.id,
                k.prefix,
                k.scopes,
                k.rate_limit.as_deref().unwrap_or("the route's"),
                k.remaining_uses
                    .map_or("unlimited".to_owned(), |n| n.to_string())
            );
        }
        KeysCmd::Rotate { id, grace, json } => {
            let grace = parse_duration(&grace).map_err(|e| UsageError(format!("--grace: {e}")))?;
            let created = svc.rotate("cli", &id, grace).await.map_err(key_err)?;
            print_created(&mut out, json, &created, || {
                format!(
                    "rotated {id} to {} ({}); the old key works for {grace} s more; the new key is shown once:",
                    created.record.id, created.record.prefix
                )
            })?;
        }
    }
    Ok(())
}

/// A new key: its record as JSON for scripts, else `note` on stderr and
/// the key alone on stdout (it is shown once).
fn print_created(
    out: &mut impl Write,
    json: bool,
    created: &CreatedKey,
    note: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        writeln!(out, "{}", created_json(created))?;
    } else {
        eprintln!("{}", note());
        writeln!(out, "{}", created.key.expose())?;
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
