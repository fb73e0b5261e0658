//! `[store]`: where keys, users and the audit log live, how a networked
//! store (Postgres) is reached, and how long cached keys are trusted while
//! it cannot be read.
//!
//! The URL of a Postgres store holds its password, so it never appears in
//! an error, in `Debug` or in `config check`: it is kept in [`StoreUrl`],
//! whose `Debug` redacts it, and every message names it through
//! `redact_url`. It may come from the environment instead of the file:
//! `PORTCULLIS_STORE_URL`, or the file `PORTCULLIS_STORE_URL_FILE` names
//! (a container secret), read like every other secret
//! (`portcullis::secret_env`).

use super::value::{dur, positive};
use super::{ConfigError, cerr};
use portcullis::store::{Listen, StoreOptions, redact_url};
use serde::Deserialize;
use std::time::Duration;

/// The variable the store URL may be read from (and `{it}_FILE`).
pub(super) const URL_VAR: &str = "PORTCULLIS_STORE_URL";

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: Option<String>,
    pool_size: Option<u32>,
    connect_timeout: Option<String>,
    statement_timeout: Option<String>,
    listen: Option<String>,
    listen_url: Option<String>,
    stale_grace: Option<String>,
}

impl std::fmt::Debug for RawStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStore")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("listen", &self.listen)
            .field("listen_url", &self.listen_url.as_deref().map(redact_url))
            .field("stale_grace", &self.stale_grace)
            .finish()
    }
}

/// The store's URL. Reads as a `&str` (to open the store); its `Debug`
/// shows it without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl std::ops::Deref for StoreUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

/// What `[store]` configures.
pub(super) struct StoreSection {
    pub(super) url: StoreUrl,
    pub(super) options: StoreOptions,
    pub(super) stale_grace: Duration,
}

/// The defaults, stated once (docs/configuration.md repeats them).
const DEFAULT_URL: &str = "sqlite://portcullis.db";
const DEFAULT_STALE_GRACE: Duration = Duration::from_secs(30);

/// Reads `[store]`, with the URL from `PORTCULLIS_STORE_URL(_FILE)` when
/// set (over the file's `url`, as every environment setting is).
pub(super) fn parse(s: &RawStore, env: &[(String, String)]) -> Result<StoreSection, ConfigError> {
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let from_env =
        portcullis::secret_env::read(URL_VAR, lookup).map_err(|e| cerr(URL_VAR, e.to_string()))?;
    let (url, path) = match &from_env {
        Some(v) => (v.expose().trim().to_owned(), URL_VAR),
        None => (
            s.url.clone().unwrap_or_else(|| DEFAULT_URL.into()),
            "store.url",
        ),
    };
    let postgres = is_postgres(&url);
    if postgres {
        check_postgres_url(path, &url)?;
    } else if !url.starts_with("sqlite:") {
        return Err(cerr(
            path,
            format!(
                "{:?}: use sqlite://PATH or postgres://USER[:PASSWORD]@HOST:PORT/DB",
                redact_url(&url)
            ),
        ));
    }

    let defaults = StoreOptions::default();
    let pool_size = s.pool_size.unwrap_or(defaults.pool_size);
    if !(1..=1000).contains(&pool_size) {
        return Err(cerr("store.pool_size", "must be between 1 and 1000"));
    }
    let connect_timeout = positive(
        dur(
            "store.connect_timeout",
            &s.connect_timeout,
            defaults.connect_timeout,
        )?,
        "store.connect_timeout",
    )?;
    let statement_timeout = positive(
        dur(
            "store.statement_timeout",
            &s.statement_timeout,
            defaults.statement_timeout,
        )?,
        "store.statement_timeout",
    )?;
    let stale_grace = positive(
        dur("store.stale_grace", &s.stale_grace, DEFAULT_STALE_GRACE)?,
        "store.stale_grace",
    )?;
    let listen = match (s.listen.as_deref(), &s.listen_url) {
        (Some("off"), Some(_)) => {
            return Err(cerr(
                "store.listen_url",
                "has no use with listen = \"off\"; remove one of them",
            ));
        }
        (Some("off"), None) => Listen::Off,
        (None | Some("store"), None) => Listen::Store,
        (None | Some("store"), Some(u)) => {
            if !postgres {
                return Err(cerr("store.listen_url", "only for a postgres:// store"));
            }
            if !is_postgres(u) {
                return Err(cerr(
                    "store.listen_url",
                    format!(
                        "{:?}: use postgres://USER[:PASSWORD]@HOST:PORT/DB (a direct connection to the primary)",
                        redact_url(u)
                    ),
                ));
            }
            check_postgres_url("store.listen_url", u)?;
            Listen::Url(u.clone())
        }
        (Some(other), _) => {
            return Err(cerr(
                "store.listen",
                format!(
                    "{other:?}: use \"store\" (listen for changes on the store's connection) or \"off\" (poll only)"
                ),
            ));
        }
    };
    Ok(StoreSection {
        url: StoreUrl(url),
        options: StoreOptions {
            pool_size,
            connect_timeout,
            statement_timeout,
            listen,
        },
        stale_grace,
    })
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?PARAMS]`: a user, a host, a
/// numeric port when one is given, a database. Errors show the URL without
/// its password.
fn check_postgres_url(path: &str, url: &str) -> Result<(), ConfigError> {
    let bad = |what: &str| {
        cerr(
            path,
            format!(
                "{:?}: {what}; expected postgres://USER[:PASSWORD]@HOST:PORT/DB (percent-encode special characters in the password)",
                redact_url(url)
            ),
        )
    };
    let rest = url
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let Some((userinfo, hostpart)) = rest.rsplit_once('@') else {
        return Err(bad("no user"));
    };
    let user = userinfo.split(':').next().unwrap_or("");
    if user.is_empty() {
        return Err(bad("no user"));
    }
    let (authority, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |n| n == 0)
    {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    if db.is_empty() || db.contains('/') {
        return Err(bad("no database name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{explain, load_str};
    use super::*;

    const PG: &str = "postgres://portcullis:hunter2-secret@db.internal:5432/portcullis";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn store(body: &str) -> String {
        format!("[store]\n{body}\n")
    }

    #[test]
    fn defaults_are_sqlite_and_the_documented_options() {
        let c = load_str("", "t", &[]).unwrap();
        assert_eq!(&*c.store_url, "sqlite://portcullis.db");
        assert_eq!(c.store_options.pool_size, 16);
        assert_eq!(c.store_options.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.store_options.statement_timeout, Duration::from_secs(5));
        assert_eq!(c.store_options.listen, Listen::Store);
        assert_eq!(c.verifier.stale_grace, Duration::from_secs(30));
    }

    #[test]
    fn postgres_options_are_read() {
        let c = load_str(
            &store(&format!(
                "url = \"{PG}\"\npool_size = 64\nconnect_timeout = \"1s\"\nstatement_timeout = \"3s\"\nlisten_url = \"postgresql://l:pw@primary:5432/portcullis\"\nstale_grace = \"2m\""
            )),
            "t",
            &[],
        )
        .unwrap();
        assert_eq!(&*c.store_url, PG);
        let o = &c.store_options;
        assert_eq!(o.pool_size, 64);
        assert_eq!(o.connect_timeout, Duration::from_secs(1));
        assert_eq!(o.statement_timeout, Duration::from_secs(3));
        assert_eq!(
            o.listen,
            Listen::Url("postgresql://l:pw@primary:5432/portcullis".into())
        );
        assert_eq!(c.verifier.stale_grace, Duration::from_secs(120));
        let off = load_str(
            &store(&format!("url = \"{PG}\"\nlisten = \"off\"")),
            "t",
            &[],
        )
        .unwrap();
        assert_eq!(off.store_options.listen, Listen::Off);
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        for (body, path, says) in [
            (
                "url = \"mysql://x@h/db\"",
                "store.url",
                "use sqlite://PATH or postgres://",
            ),
            ("url = \"postgres://h:5432/db\"", "store.url", "no user"),
            ("url = \"postgres://u:pw@:5432/db\"", "store.url", "no host"),
            ("url = \"postgres://u:pw@h:54x/db\"", "store.url", "port"),
            (
                "url = \"postgres://u:pw@h:5432\"",
                "store.url",
                "no database name",
            ),
            ("pool_size = 0", "store.pool_size", "between 1 and 1000"),
            ("pool_size = 1001", "store.pool_size", "between 1 and 1000"),
            (
                "connect_timeout = \"0s\"",
                "store.connect_timeout",
                "at least 1s",
            ),
            (
                "statement_timeout = \"soon\"",
                "store.statement_timeout",
                "",
            ),
            ("stale_grace = \"0s\"", "store.stale_grace", "at least 1s"),
            ("listen = \"sometimes\"", "store.listen", "\"store\""),
            (
                "listen_url = \"postgres://u@h/db\"",
                "store.listen_url",
                "only for a postgres",
            ),
        ] {
            let e = load_str(&store(body), "t", &[]).unwrap_err();
            assert_eq!(e.path, path, "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
        let e = load_str(
            &store(&format!(
                "url = \"{PG}\"\nlisten = \"off\"\nlisten_url = \"{PG}\""
            )),
            "t",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.path, "store.listen_url", "{e}");
    }

    #[test]
    fn the_url_can_come_from_the_environment_or_a_file() {
        let c = load_str(
            &store("url = \"sqlite://file.db\""),
            "t",
            &env(&[(URL_VAR, PG)]),
        )
        .unwrap();
        assert_eq!(&*c.store_url, PG);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store-url");
        std::fs::write(&file, format!("{PG}\n")).unwrap();
        set_mode(&file, 0o600);
        let f = file.display().to_string();
        let c = load_str("", "t", &env(&[("PORTCULLIS_STORE_URL_FILE", &f)])).unwrap();
        assert_eq!(&*c.store_url, PG);

        // A secret file others can read is refused; so is setting both.
        set_mode(&file, 0o644);
        let e = load_str("", "t", &env(&[("PORTCULLIS_STORE_URL_FILE", &f)])).unwrap_err();
        assert!(e.message.contains("chmod 600"), "{e}");
        let e = load_str(
            "",
            "t",
            &env(&[(URL_VAR, PG), ("PORTCULLIS_STORE_URL_FILE", &f)]),
        )
        .unwrap_err();
        assert_eq!(e.path, URL_VAR, "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    fn set_mode(p: &std::path::Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The password is in the config, and nowhere a person or a log can
    /// read it: `config check`'s explanation, the config's `Debug`, the
    /// errors about the URL itself or about another key.
    #[test]
    fn the_password_never_shows() {
        let listen = "postgres://l:hunter2-listen@primary/portcullis";
        let c = load_str(
            &store(&format!("url = \"{PG}\"\nlisten_url = \"{listen}\"")),
            "t",
            &[],
        )
        .unwrap();
        let shown = [
            explain(&c),
            format!("{c:?}"),
            format!("{:?}", c.store_options),
        ];
        for s in &shown {
            assert!(!s.contains("hunter2"), "{s}");
        }
        assert!(explain(&c).contains("db.internal:5432/portcullis"));

        for body in [
            "url = \"postgres://u:hunter2@h:99999/db\"".to_owned(),
            "url = \"postgres://u:hunter2@h:5432\"".to_owned(),
            "url = \"mysql://u:hunter2@h/db\"".to_owned(),
            format!("url = \"{PG}\"\nlisten_url = \"mysql://u:hunter2@h/db\""),
            format!("url = \"{PG}\"\npool_size = -1"),
            "url = 5".to_owned(),
        ] {
            let e = load_str(&store(&body), "t", &[]).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{body}: {e}");
        }
        let e = load_str("", "t", &env(&[(URL_VAR, "mysql://u:hunter2@h/db")])).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.path, URL_VAR);
    }
}
