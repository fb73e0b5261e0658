//! Shared set-up: a real SQLite file in a temporary directory, a manual
//! clock, a verifier and a key service, plus a few ways to look at (or
//! break) the database from outside the library, as another process would.

use portcullis::auth::keys::{CreatedKey, KeyService, KeySpec};
use portcullis::auth::verifier::{CachedKey, KeyRejection, KeyVerdict, Verifier, VerifierConfig};
use portcullis::clock::{ManualClock, SharedClock};
use portcullis::core::{ApiKey, Scopes};
use portcullis::store::{NewAudit, NewKey, Store};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The manual clock's start: an arbitrary fixed moment (2030-03-17).
pub const T0: i64 = 1_900_000_000;

/// One "deployment": a database file and one process's view of it.
pub struct Env {
    /// Keeps the directory alive.
    pub _dir: tempfile::TempDir,
    /// The database file.
    pub path: PathBuf,
    /// `sqlite://PATH`.
    pub url: String,
    /// The clock every component of this env reads.
    pub clock: Arc<ManualClock>,
    /// The store handle of this "process".
    pub store: Store,
    /// Its verifier.
    pub verifier: Arc<Verifier>,
    /// Its key service, wired to the verifier (as the admin API is).
    pub keys: KeyService,
}

impl Env {
    pub async fn new() -> Env {
        Env::with_config(VerifierConfig::default()).await
    }

    pub async fn with_config(config: VerifierConfig) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.db");
        let url = format!("sqlite://{}", path.display());
        let clock = ManualClock::new(T0);
        let store = Store::open(&url, true).await.expect("open store");
        let verifier = Verifier::new(store.clone(), clock.clone(), config)
            .await
            .expect("verifier");
        let keys = KeyService::new(store.clone(), clock.clone(), Some(verifier.clone()));
        Env {
            _dir: dir,
            path,
            url,
            clock,
            store,
            verifier,
            keys,
        }
    }

    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// A second, separately opened store handle on the same file: what
    /// another process (the CLI, a second gateway) holds.
    pub async fn other_store(&self) -> Store {
        Store::open(&self.url, false)
            .await
            .expect("open second handle")
    }

    /// A verifier over a separately opened store handle: another gateway.
    pub async fn other_verifier(&self) -> Arc<Verifier> {
        Verifier::new(
            self.other_store().await,
            self.clock(),
            VerifierConfig::default(),
        )
        .await
        .expect("second verifier")
    }

    /// A key service over a separately opened store handle, with no
    /// verifier: the CLI.
    pub async fn cli(&self) -> KeyService {
        KeyService::new(self.other_store().await, self.clock(), None)
    }

    pub async fn create(&self, spec: &KeySpec) -> CreatedKey {
        self.keys.create("test", spec).await.expect("create key")
    }

    /// Runs one statement on a connection of its own, outside the library.
    pub async fn raw(&self, sql: &'static str) {
        raw_exec(&self.path, sql).await;
    }

    /// A number from a query run outside the library.
    pub async fn raw_count(&self, sql: &'static str) -> i64 {
        let mut c = raw_conn(&self.path).await;
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("raw query")
    }

    /// Makes every query that touches `api_keys` fail: the table is renamed
    /// away. A verification that still answers `Ok` while the table is
    /// hidden did not ask the store.
    pub async fn hide_keys_table(&self) {
        self.raw("ALTER TABLE api_keys RENAME TO api_keys_hidden")
            .await;
    }

    pub async fn restore_keys_table(&self) {
        self.raw("ALTER TABLE api_keys_hidden RENAME TO api_keys")
            .await;
    }
}

async fn raw_conn(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("raw connection")
}

pub async fn raw_exec(path: &Path, sql: &'static str) {
    let mut c = raw_conn(path).await;
    sqlx::query(sql)
        .execute(&mut c)
        .await
        .expect("raw statement");
}

pub fn scopes(s: &str) -> Scopes {
    Scopes::parse(s).expect("scopes")
}

/// A spec for owner `alice` with the given scopes.
pub fn spec(scope_list: &str) -> KeySpec {
    KeySpec::new("test key", "alice", scopes(scope_list))
}

/// A well-formed key that no store knows, from `seed`.
pub fn made_up_key(seed: u8) -> ApiKey {
    ApiKey::generate("live", &[seed; 32]).expect("generate")
}

/// A row for `Store::insert_key` for a key whose plaintext the test knows.
pub fn new_key_row(key: &ApiKey, owner: &str, scope_list: &str, at: i64) -> (NewKey, NewAudit) {
    let id = portcullis::auth::keys::new_id("key_").expect("id");
    let new = NewKey {
        id: id.clone(),
        hash: key.hash(),
        prefix: key.display_prefix(),
        env: "live".into(),
        owner: owner.into(),
        name: "inserted".into(),
        scopes: scopes(scope_list),
        created_at: at,
        expires_at: None,
        remaining_uses: None,
        refill: None,
        refilled_at: 0,
        rate_limit: None,
        metadata: serde_json::json!({}),
        rotated_from: None,
    };
    let audit = NewAudit {
        at,
        actor: "cli".into(),
        action: "key.create",
        target: Some(id),
        detail: serde_json::json!({}),
    };
    (new, audit)
}

/// Verifies `key`, expecting it to be valid.
pub async fn valid(v: &Verifier, key: &str) -> Arc<CachedKey> {
    match v.verify(key).await.expect("store error") {
        KeyVerdict::Valid(c) => c,
        KeyVerdict::Rejected(r) => panic!("expected a valid key, got {r:?} ({})", r.reason()),
    }
}

/// Verifies `key`, expecting a rejection.
pub async fn rejected(v: &Verifier, key: &str) -> KeyRejection {
    match v.verify(key).await.expect("store error") {
        KeyVerdict::Valid(c) => panic!("expected a rejection, got valid key {}", c.grant.key_id),
        KeyVerdict::Rejected(r) => r,
    }
}

/// The log reason of a rejection of `key`.
pub async fn reason(v: &Verifier, key: &str) -> &'static str {
    rejected(v, key).await.reason()
}

/// Serves `app` on a free loopback port, with the peer address available.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            l,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    addr
}
