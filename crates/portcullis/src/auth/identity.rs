//! Users, OAuth2 clients and browser sessions: creating and changing them,
//! and checking the credentials they present (passwords, client secrets,
//! session cookies, access tokens).
//!
//! Like the key verifier, every check is served from memory once warm:
//! the state of each user and client is cached (so a revoked client's or
//! disabled user's tokens stop working within one change-log poll), and
//! so are sessions and recent Basic successes. Basic successes are keyed
//! by an HMAC of name and password under a per-process random key: the
//! cache never holds a password, and its keys are useless outside this
//! process.

use crate::auth::jwt::{AccessGrant, TokenReject, Tokens};
use crate::auth::keys::{KeyError, new_id};
use crate::auth::password::{PasswordError, Passwords, check_length, is_supported_hash};
use crate::auth::throttle::Throttle;
use crate::clock::SharedClock;
use crate::store::identity::{
    ClientAuth, ClientRecord, NewClient, NewUser, SessionRow, UserAuth, UserRecord, subject_hash,
};
use crate::store::{NewAudit, Store, StoreError};
use hmac::{Hmac, Mac};
use moka::sync::Cache;
use portcullis_core::csrf::{self, CsrfError};
use portcullis_core::{KeyHash, Principal, PrincipalKind, Scopes, Secret};
use sha2::Sha256;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// `SameSite` for the session and CSRF cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites.
    Lax,
    /// Never sent cross-site.
    Strict,
}

/// Session and Basic settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Idle expiry, seconds.
    pub idle_ttl: i64,
    /// Absolute expiry, seconds.
    pub absolute_ttl: i64,
    /// Cookie `SameSite`.
    pub same_site: SameSite,
    /// Origins besides our own allowed to send unsafe cookie requests.
    pub trusted_origins: Vec<String>,
    /// How long a Basic success is remembered.
    pub basic_cache_ttl: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            idle_ttl: 1800,
            absolute_ttl: 12 * 3600,
            same_site: SameSite::Lax,
            trusted_origins: Vec::new(),
            basic_cache_ttl: Duration::from_secs(60),
        }
    }
}

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "__Host-portcullis_session";
/// The CSRF cookie's name.
pub const CSRF_COOKIE: &str = "__Host-portcullis_csrf";

/// Failures of identity operations that are not a refusal.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A password problem.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A caller mistake, said plainly.
    #[error("{0}")]
    Invalid(String),
    /// Randomness failed.
    #[error("no randomness available")]
    Random,
}

impl From<KeyError> for IdentityError {
    fn from(_: KeyError) -> Self {
        IdentityError::Random
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong, unknown, expired, revoked or disabled: one answer for all.
    Invalid(&'static str),
    /// Locked out for this many seconds.
    Locked(i64),
}

#[derive(Debug, Clone)]
enum SubjectState {
    User {
        disabled: bool,
        tokens_after: i64,
        scopes: Scopes,
    },
    Client {
        revoked: bool,
    },
    Gone,
}

#[derive(Debug)]
struct CachedSession {
    row: SessionRow,
    last_seen: AtomicI64,
    last_written: AtomicI64,
}

#[derive(Debug)]
struct BasicHit {
    username: String,
    at: i64,
}

/// A new client's id and secret.
pub struct NewClientSecret {
    /// The record.
    pub record: ClientRecord,
    /// The secret, shown once.
    pub secret: Secret<String>,
}

/// A new session.
pub struct NewSession {
    /// The cookie value.
    pub token: Secret<String>,
    /// The CSRF token bound to it.
    pub csrf: String,
    /// Seconds until the absolute expiry.
    pub expires_in: i64,
}

/// Users, clients, sessions and the checks on them.
pub struct Identity {
    store: Store,
    clock: SharedClock,
    passwords: Passwords,
    tokens: Arc<Tokens>,
    settings: SessionSettings,
    throttle: Throttle,
    subjects: Cache<KeyHash, Arc<SubjectState>>,
    sessions: Cache<KeyHash, Arc<CachedSession>>,
    basic: Cache<[u8; 32], Arc<BasicHit>>,
    basic_key: [u8; 32],
    csrf_key: Secret<Vec<u8>>,
    // Bumped before every invalidation from the change log. A lookup that
    // read the store before a change but inserts after the change's
    // invalidation (likely with NOTIFY: the wake-up can beat the insert)
    // sees the bump and keeps nothing, as the key verifier does.
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| IdentityError::Random)?;
    Ok(b)
}

/// `prefix` and 43 base62 characters (256 random bits).
pub(crate) fn random_token(prefix: &str) -> Result<String, IdentityError> {
    let b: [u8; 32] = random()?;
    let mut s = String::with_capacity(prefix.len() + 43);
    s.push_str(prefix);
    portcullis_core::base62::encode_fixed(&b, 43, &mut s);
    Ok(s)
}

/// Checks a user name: 1–64 characters, no control characters, no colon
/// (Basic could not carry it), no surrounding space.
pub fn check_username(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name.trim() == name
        && !name.chars().any(|c| c.is_control() || c == ':');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::Invalid(
            "a user name is 1-64 characters, with no colon, control characters or surrounding spaces".into(),
        ))
    }
}

/// The grant types a client may have (the admin API's document lists
/// the same ones).
pub(crate) const GRANTS: [&str; 3] = ["client_credentials", "refresh_token", "password"];

impl Identity {
    /// Builds the identity service; the CSRF key is generated on first
    /// start and kept in the store so every gateway sharing it agrees.
    pub async fn new(
        store: Store,
        clock: SharedClock,
        passwords: Passwords,
        tokens: Arc<Tokens>,
        settings: SessionSettings,
        throttle: Throttle,
    ) -> Result<Arc<Identity>, IdentityError> {
        let fresh: [u8; 32] = random()?;
        let csrf_key = store.secret("csrf_hmac", &fresh, clock.now()).await?;
        Ok(Arc::new(Identity {
            subjects: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            sessions: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(
                    u64::try_from(settings.idle_ttl.max(1)).unwrap_or(1800),
                ))
                .build(),
            basic: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(settings.basic_cache_ttl)
                .build(),
            basic_key: random()?,
            generation: std::sync::atomic::AtomicU64::new(0),
            csrf_key: Secret::new(csrf_key),
            store,
            clock,
            passwords,
            tokens,
            settings,
            throttle,
        }))
    }

    /// The token service.
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// The settings.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The password hasher.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Drops whatever the change log says changed.
    pub async fn on_changes(&self, changed: &[KeyHash]) {
        self.bump();
        for h in changed {
            self.subjects.invalidate(h);
            self.sessions.invalidate(h);
        }
        if !changed.is_empty() {
            // Basic hits are keyed by an HMAC we cannot map back to a user;
            // they are few and cheap to rebuild.
            self.basic.invalidate_all();
        }
        self.tokens.on_changes(changed).await;
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops every cached user, session and token verdict: the change log
    /// went unread for longer than `stale_grace`, so any of them may have
    /// been revoked meanwhile. The next request asks the store.
    pub fn drop_cached(&self) {
        self.bump();
        self.subjects.invalidate_all();
        self.sessions.invalidate_all();
        self.basic.invalidate_all();
        self.tokens.drop_cached();
    }

    fn audit(actor: &str, at: i64, action: &'static str, target: &str) -> NewAudit {
        NewAudit {
            at,
            actor: actor.to_owned(),
            action,
            target: Some(target.to_owned()),
            detail: serde_json::json!({}),
        }
    }

    // ---- users -------------------------------------------------------

    /// Adds a user with a new password.
    pub async fn add_user(
        &self,
        username: &str,
        password: &Secret<String>,
        scopes: Scopes,
        actor: &str,
    ) -> Result<UserRecord, IdentityError> {
        check_username(username)?;
        let hash = self.passwords.hash(password).await?;
        let now = self.clock.now();
        let mut audit = Self::audit(actor, now, "user.create", username);
        audit.detail = serde_json::json!({ "scopes": scopes.to_space_separated() });
        self.store
            .insert_users(
                &[NewUser {
                    username: username.to_owned(),
                    password_hash: hash,
                    scopes,
                    disabled: false,
                    created_at: now,
                }],
                &audit,
            )
            .await?;
        Ok(self.store.get_user(username).await?)
    }

    /// Imports users with existing hashes (Argon2id or bcrypt), all or
    /// none.
    pub async fn import_users(
        &self,
        users: Vec<(String, String, Scopes, bool)>,
        actor: &str,
    ) -> Result<usize, IdentityError> {
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(users.len());
        let mut seen = std::collections::HashSet::new();
        for (name, hash, scopes, disabled) in users {
            check_username(&name)
                .map_err(|e| IdentityError::Invalid(format!("user {name:?}: {e}")))?;
            if !is_supported_hash(&hash) {
                return Err(IdentityError::Invalid(format!(
                    "user {name:?}: unsupported password hash (expected $argon2id$… or bcrypt $2b$…)"
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(IdentityError::Invalid(format!(
                    "user {name:?} appears twice"
                )));
            }
            rows.push(NewUser {
                username: name,
                password_hash: hash,
                scopes,
                disabled,
                created_at: now,
            });
        }
        let mut audit = Self::audit(actor, now, "user.import", "");
        audit.target = None;
        audit.detail = serde_json::json!({ "count": rows.len() });
        self.store.insert_users(&rows, &audit).await?;
        Ok(rows.len())
    }

    /// Sets a user's password; ends their sessions and tokens.
    pub async fn set_password(
        &self,
        username: &str,
        password: &Secret<String>,
        actor: &str,
    ) -> Result<(), IdentityError> {
        let hash = self.passwords.hash(password).await?;
        let audit = Self::audit(actor, self.clock.now(), "user.password", username);
        self.store.set_password(username, &hash, &audit).await?;
        self.forget_subject("user", username);
        Ok(())
    }

    /// Disables or enables a user; disabling ends their sessions and
    /// tokens.
    pub async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
        actor: &str,
    ) -> Result<UserRecord, IdentityError> {
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        let audit = Self::audit(actor, self.clock.now(), action, username);
        let r = self
            .store
            .set_user_disabled(username, disabled, &audit)
            .await?;
        self.forget_subject("user", username);
        Ok(r)
    }

    fn forget_subject(&self, kind: &str, name: &str) {
        // This process applies its own changes at once; others within a
        // change-log poll.
        self.subjects.invalidate(&subject_hash(kind, name));
        self.basic.invalidate_all();
    }

    /// Checks a user's password, with brute-force throttling and the
    /// dummy check for unknown names. Upgrades old hashes on success.
    pub async fn authenticate_user(
        &self,
        username: &str,
        password: &Secret<String>,
        ip: Option<IpAddr>,
    ) -> Result<Result<UserAuth, Refusal>, IdentityError> {
        let ip = ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Err(secs) = self.throttle.check(username, ip) {
            return Ok(Err(Refusal::Locked(secs)));
        }
        let delay = self.throttle.delay(username);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let user = self.store.user_auth(username).await?;
        let checked = self
            .passwords
            .verify(user.as_ref().map(|u| u.password_hash.as_str()), password)
            .await?;
        let Some(user) = user.filter(|u| checked.ok && !u.disabled) else {
            self.throttle.failure(username, ip);
            // The answer is the same either way (no telling a disabled
            // account from a wrong password); the log reason tells them
            // apart so a disabled user's right password is not counted
            // as a guess against the address (pipeline::abuse).
            let reason = if checked.ok {
                "user_disabled"
            } else {
                "bad_password"
            };
            return Ok(Err(Refusal::Invalid(reason)));
        };
        self.throttle.success(username, ip);
        if checked.needs_rehash && check_length(password.expose(), false).is_ok() {
            match self.passwords.hash(password).await {
                Ok(new) => {
                    if let Err(e) = self
                        .store
                        .upgrade_hash(username, &user.password_hash, &new, self.clock.now())
                        .await
                    {
                        tracing::warn!(error = %e, "could not upgrade a password hash");
                    }
                }
                // A password shorter than today's minimum still logs in;
                // its hash is upgraded when it is changed.
                Err(PasswordError::TooShort) => {}
                Err(e) => tracing::warn!(error = %e, "could not upgrade a password hash"),
            }
        }
        Ok(Ok(user))
    }

    /// Users, for lists.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, IdentityError> {
        Ok(self.store.list_users().await?)
    }

    // ---- clients -----------------------------------------------------

    /// Adds a client; the secret is returned once.
    pub async fn add_client(
        &self,
        name: &str,
        scopes: Scopes,
        grants: &[String],
        actor: &str,
    ) -> Result<NewClientSecret, IdentityError> {
        // The same rule as key names (and the admin API's document).
        if crate::auth::keys::check_label("name", name).is_err() {
            return Err(IdentityError::Invalid(
                "a client name is 1-128 characters, not only spaces, with no control characters"
                    .into(),
            ));
        }
        let grants = if grants.is_empty() {
            vec!["client_credentials".to_owned(), "refresh_token".to_owned()]
        } else {
            grants.to_vec()
        };
        for g in &grants {
            if !GRANTS.contains(&g.as_str()) {
                return Err(IdentityError::Invalid(format!(
                    "unknown grant type {g:?}: use client_credentials, refresh_token or password"
                )));
            }
        }
        let client_id = new_id("cl_")?;
        let secret = Secret::new(random_token("pcs_")?);
        let now = self.clock.now();
        let mut audit = Self::audit(actor, now, "client.create", &client_id);
        audit.detail = serde_json::json!({ "name": name, "scopes": scopes.to_space_separated(), "grants": grants.join(" ") });
        let record = self
            .store
            .insert_client(
                &NewClient {
                    client_id,
                    secret_hash: KeyHash::of(secret.expose()),
                    name: name.to_owned(),
                    scopes,
                    grants: grants.join(" "),
                    created_at: now,
                },
                &audit,
            )
            .await?;
        Ok(NewClientSecret { record, secret })
    }

    /// Revokes a client and its refresh tokens; its access tokens stop
    /// working too.
    pub async fn revoke_client(
        &self,
        client_id: &str,
        actor: &str,
    ) -> Result<ClientRecord, IdentityError> {
        let audit = Self::audit(actor, self.clock.now(), "client.revoke", client_id);
        let r = self.store.revoke_client(client_id, &audit).await?;
        self.forget_subject("client", client_id);
        Ok(r)
    }

    /// Clients, for lists.
    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>, IdentityError> {
        Ok(self.store.list_clients().await?)
    }

    /// Checks a client's secret (a SHA-256 compare in constant time; the
    /// secret has 256 random bits, so no slow hash is needed).
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &Secret<String>,
    ) -> Result<Option<ClientAuth>, IdentityError> {
        if client_id.len() > 64 || secret.expose().len() > 256 {
            return Ok(None);
        }
        let Some(c) = self.store.client_auth(client_id).await? else {
            return Ok(None);
        };
        let ok = c.secret_hash.ct_eq(&KeyHash::of(secret.expose())) && !c.revoked;
        Ok(ok.then_some(c))
    }

    // ---- subject state -------------------------------------------------

    async fn subject(&self, kind: &str, name: &str) -> Result<Arc<SubjectState>, StoreError> {
        let h = subject_hash(kind, name);
        if let Some(s) = self.subjects.get(&h) {
            return Ok(s);
        }
        let generation = self.generation();
        let s = Arc::new(match kind {
            "user" => match self.store.user_auth(name).await? {
                Some(u) => SubjectState::User {
                    disabled: u.disabled,
                    tokens_after: u.tokens_after,
                    scopes: u.scopes,
                },
                None => SubjectState::Gone,
            },
            _ => match self.store.client_auth(name).await? {
                Some(c) => SubjectState::Client { revoked: c.revoked },
                None => SubjectState::Gone,
            },
        });
        self.subjects.insert(h, s.clone());
        if self.generation() != generation {
            // A change was applied while we read: answer from the read,
            // keep nothing.
            self.subjects.invalidate(&h);
        }
        Ok(s)
    }

    /// Whether a user may still act on something issued at `issued`.
    async fn user_ok(&self, username: &str, issued: i64) -> Result<Option<Scopes>, StoreError> {
        Ok(match &*self.subject("user", username).await? {
            SubjectState::User {
                disabled: false,
                tokens_after,
                scopes,
            } if issued >= *tokens_after => Some(scopes.clone()),
            _ => None,
        })
    }

    // ---- presented credentials ----------------------------------------

    /// Verifies a JWT access token, ours or a trusted issuer's.
    pub async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<Result<Principal, &'static str>, StoreError> {
        let g: Arc<AccessGrant> = match self.tokens.verify_fetching(token).await {
            Ok(g) => g,
            // A trusted issuer's keys are past their stale bound: not the
            // caller's fault, answered 503 like a store outage.
            Err(TokenReject::IssuerUnavailable) => {
                return Err(StoreError::Unavailable(
                    "a trusted issuer's keys are out of date (provider unreachable past stale_for)",
                ));
            }
            Err(r) => return Ok(Err(TokenReject::reason(r))),
        };
        if g.ours {
            let ok = match g.kind {
                PrincipalKind::Client => matches!(
                    &*self.subject("client", &g.subject).await?,
                    SubjectState::Client { revoked: false }
                ),
                _ => self.user_ok(&g.subject, g.iat).await?.is_some(),
            };
            // A user's token also dies with its client.
            let client_ok = match (&g.kind, &g.client_id) {
                (PrincipalKind::User, Some(c)) => matches!(
                    &*self.subject("client", c).await?,
                    SubjectState::Client { revoked: false }
                ),
                _ => true,
            };
            if !ok || !client_ok {
                return Ok(Err("jwt_subject_revoked"));
            }
        }
        Ok(Ok(Principal {
            subject: g.subject.as_str().into(),
            kind: g.kind,
            scopes: g.scopes.clone(),
            credential_id: g.token_id.as_str().into(),
            rate_limit: None,
            issuer: (!g.ours).then(|| g.issuer.clone()),
        }))
    }

    /// Verifies HTTP Basic credentials for a user.
    pub async fn verify_basic(
        &self,
        username: &str,
        password: &Secret<String>,
        ip: Option<IpAddr>,
    ) -> Result<Result<Principal, Refusal>, IdentityError> {
        let key = self.basic_key(username, password);
        if let Some(hit) = self.basic.get(&key) {
            if let Some(scopes) = self.user_ok(&hit.username, hit.at).await? {
                return Ok(Ok(user_principal(&hit.username, scopes, "basic")));
            }
            self.basic.invalidate(&key);
        }
        match self.authenticate_user(username, password, ip).await? {
            Ok(u) => {
                self.basic.insert(
                    key,
                    Arc::new(BasicHit {
                        username: u.username.clone(),
                        at: self.clock.now(),
                    }),
                );
                Ok(Ok(user_principal(&u.username, u.scopes, "basic")))
            }
            Err(r) => Ok(Err(r)),
        }
    }

    fn basic_key(&self, username: &str, password: &Secret<String>) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&self.basic_key) {
            m.update(&(username.len() as u64).to_be_bytes());
            m.update(username.as_bytes());
            m.update(password.expose().as_bytes());
            out.copy_from_slice(&m.finalize().into_bytes());
        }
        out
    }

    /// Starts a session after a password check.
    pub async fn login(
        &self,
        username: &str,
        password: &Secret<String>,
        ip: Option<IpAddr>,
    ) -> Result<Result<NewSession, Refusal>, IdentityError> {
        let user = match self.authenticate_user(username, password, ip).await? {
            Ok(u) => u,
            Err(r) => return Ok(Err(r)),
        };
        let token = Secret::new(random_token("")?);
        let hash = KeyHash::of(token.expose());
        let now = self.clock.now();
        let row = SessionRow {
            username: user.username,
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.settings.absolute_ttl,
            revoked: false,
        };
        self.store.insert_session(&hash, &row).await?;
        let csrf = self.csrf_token(&hash)?;
        Ok(Ok(NewSession {
            token,
            csrf,
            expires_in: self.settings.absolute_ttl,
        }))
    }

    /// Verifies a session cookie. Returns the principal and the session's
    /// hash (which CSRF tokens are bound to).
    pub async fn verify_session(
        &self,
        cookie: &str,
    ) -> Result<Result<Principal, &'static str>, StoreError> {
        if cookie.len() != 43 || !portcullis_core::base62::is_base62(cookie.as_bytes()) {
            return Ok(Err("session_malformed"));
        }
        let hash = KeyHash::of(cookie);
        let s = match self.sessions.get(&hash) {
            Some(s) => s,
            None => {
                let generation = self.generation();
                let Some(row) = self.store.session(&hash).await? else {
                    return Ok(Err("session_unknown"));
                };
                let s = Arc::new(CachedSession {
                    last_seen: AtomicI64::new(row.last_seen_at),
                    last_written: AtomicI64::new(row.last_seen_at),
                    row,
                });
                self.sessions.insert(hash, s.clone());
                if self.generation() != generation {
                    self.sessions.invalidate(&hash);
                }
                s
            }
        };
        let now = self.clock.now();
        if s.row.revoked {
            return Ok(Err("session_ended"));
        }
        if s.row.expires_at <= now {
            return Ok(Err("session_expired"));
        }
        if s.last_seen.load(Ordering::Acquire) + self.settings.idle_ttl <= now {
            return Ok(Err("session_idle"));
        }
        let Some(scopes) = self.user_ok(&s.row.username, s.row.created_at).await? else {
            return Ok(Err("session_user_disabled"));
        };
        s.last_seen.fetch_max(now, Ordering::AcqRel);
        // Idle time is enforced from memory; the store hears of activity
        // at most once a minute per session (enough for other gateways,
        // which see the idle limit in minutes).
        let written = s.last_written.load(Ordering::Acquire);
        if now - written >= 60
            && s.last_written
                .compare_exchange(written, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_sessions(&[(hash, now)]).await {
                    tracing::warn!(error = %e, "could not record session activity");
                }
            });
        }
        let mut p = user_principal(&s.row.username, scopes, "session");
        p.credential_id = format!("sess_{}", hash.fingerprint()).into();
        Ok(Ok(p))
    }

    /// Ends a session.
    pub async fn logout(&self, cookie: &str) -> Result<(), StoreError> {
        let hash = KeyHash::of(cookie);
        self.store.revoke_session(&hash, self.clock.now()).await?;
        self.sessions.invalidate(&hash);
        Ok(())
    }

    /// A CSRF token bound to a cookie credential's hash.
    pub fn csrf_token(&self, binding: &KeyHash) -> Result<String, IdentityError> {
        let r: [u8; csrf::RANDOM_BYTES] = random()?;
        Ok(csrf::issue(self.csrf_key.expose(), binding, &r))
    }

    /// Checks an unsafe cookie-authenticated request: where it came from,
    /// then the token bound to the cookie credential.
    pub fn check_csrf(
        &self,
        headers: &http::HeaderMap,
        own_origin: Option<&str>,
        cookie_value: &str,
    ) -> Result<(), CsrfError> {
        csrf::check_origin(headers, own_origin, &self.settings.trusted_origins)?;
        let mut it = headers.get_all(csrf::HEADER).iter();
        let token = it.next().and_then(|v| v.to_str().ok());
        if it.next().is_some() {
            return Err(CsrfError::BadToken);
        }
        csrf::verify(self.csrf_key.expose(), &KeyHash::of(cookie_value), token)
    }
}

fn user_principal(username: &str, scopes: Scopes, via: &str) -> Principal {
    Principal {
        subject: username.into(),
        kind: PrincipalKind::User,
        scopes,
        credential_id: format!("{via}:{username}").into(),
        rate_limit: None,
        issuer: None,
    }
}
