//! Identity records: users, OAuth2 clients, refresh tokens, browser
//! sessions, JWT signing keys and generated secrets.
//!
//! Every change that a running gateway must notice (a user disabled, a
//! client revoked, a session ended, a signing key rotated) appends the
//! subject's hash to the same change log keys use, in the same
//! transaction, so every gateway sharing the store drops what it cached
//! within one poll.

use super::rules::{self, RefreshStep};
use super::write::Write;
use super::{NewAudit, Store, StoreError};
use portcullis_core::{KeyHash, Scopes};
use serde::Serialize;

/// The change-log entry for a user, client or the signing keys: the hash
/// of a tagged name, so it can never equal a key's or session's hash.
pub fn subject_hash(kind: &str, name: &str) -> KeyHash {
    KeyHash::of(&format!("portcullis-subject\0{kind}\0{name}"))
}

/// The change-log entry announcing a signing-key rotation.
pub fn signing_keys_hash() -> KeyHash {
    subject_hash("signing_keys", "")
}

/// A user as lists show it. No password hash.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserRecord {
    /// Login name.
    pub username: String,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Switched off.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// The stored hash's algorithm (`argon2id`, `bcrypt`): tells an
    /// operator which imported users have not logged in since.
    pub hash_algorithm: &'static str,
}

/// What authentication needs about a user.
#[derive(Clone)]
pub struct UserAuth {
    /// Login name.
    pub username: String,
    /// PHC / modular-crypt hash.
    pub password_hash: String,
    /// Scopes.
    pub scopes: Scopes,
    /// Switched off.
    pub disabled: bool,
    /// Tokens and sessions from before this are refused.
    pub tokens_after: i64,
}

impl std::fmt::Debug for UserAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAuth")
            .field("username", &self.username)
            .field("password_hash", &"[REDACTED]")
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A user to insert.
#[derive(Clone)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// PHC / modular-crypt hash.
    pub password_hash: String,
    /// Scopes.
    pub scopes: Scopes,
    /// Start switched off.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A client as lists show it. No secret hash.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientRecord {
    /// Public id (`cl_…`).
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Grant types, space-separated.
    pub grants: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
}

/// What client authentication needs.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Public id.
    pub client_id: String,
    /// SHA-256 of the secret.
    pub secret_hash: KeyHash,
    /// Scopes.
    pub scopes: Scopes,
    /// Grant types, space-separated.
    pub grants: String,
    /// Revoked.
    pub revoked: bool,
}

impl ClientAuth {
    /// Whether the client may use a grant type.
    pub fn allows(&self, grant: &str) -> bool {
        self.grants.split(' ').any(|g| g == grant)
    }
}

/// A client to insert.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// Public id.
    pub client_id: String,
    /// SHA-256 of the secret.
    pub secret_hash: KeyHash,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Scopes,
    /// Grant types, space-separated.
    pub grants: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A refresh token's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshGrant {
    /// The family (one login).
    pub family: String,
    /// The client it is bound to (`""` = the public password flow).
    pub client_id: String,
    /// Who.
    pub subject: String,
    /// `user` or `client`.
    pub kind: String,
    /// Scopes granted.
    pub scopes: Scopes,
    /// Unix seconds.
    pub created_at: i64,
    /// The family's absolute expiry.
    pub expires_at: i64,
}

/// What happened to a presented refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Spent; the new token was stored in its place.
    Rotated(RefreshGrant),
    /// Already spent: its family is now revoked.
    Reused,
    /// Unknown, expired, revoked, or bound to another client.
    Invalid,
    /// Asked for scopes beyond the original grant; nothing changed.
    ScopeWidened,
}

/// A session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Whose.
    pub username: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub last_seen_at: i64,
    /// Absolute expiry.
    pub expires_at: i64,
    /// Ended.
    pub revoked: bool,
}

/// A JWT signing key row.
#[derive(Clone)]
pub struct SigningKeyRow {
    /// Key id.
    pub kid: String,
    /// JOSE algorithm name.
    pub alg: String,
    /// PKCS#8 private key.
    pub private_der: Vec<u8>,
    /// Public JWK, JSON.
    pub public_jwk: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Stopped signing.
    pub retired_at: Option<i64>,
    /// Leaves the JWKS.
    pub drop_after: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_der", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Inserts users and one audit event, all or none: a name that exists
    /// already fails the whole batch with `Conflict`.
    pub async fn insert_users(
        &self,
        users: &[NewUser],
        audit: &NewAudit,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        for u in users {
            if !w.insert_user(u).await? {
                // Dropping the transaction rolls back the users already
                // inserted: an import is all or nothing.
                return Err(StoreError::Conflict("a user with that name exists"));
            }
            w.changed(subject_hash("user", &u.username), u.created_at);
        }
        w.commit(Some(audit)).await
    }

    /// One user, for display.
    pub async fn get_user(&self, username: &str) -> Result<UserRecord, StoreError> {
        self.backend
            .get_user(username)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.backend.list_users().await
    }

    /// What authentication needs about a user.
    pub async fn user_auth(&self, username: &str) -> Result<Option<UserAuth>, StoreError> {
        self.backend.user_auth(username).await
    }

    /// Sets a new password hash and ends every session and refresh token of
    /// the user; tokens issued before `at` are refused.
    pub async fn set_password(
        &self,
        username: &str,
        hash: &str,
        audit: &NewAudit,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        if !w.set_password_hash(username, hash, audit.at).await? {
            return Err(StoreError::NotFound);
        }
        end_user_tokens(&mut w, username, audit.at).await?;
        w.commit(Some(audit)).await
    }

    /// Replaces a hash after a login proved the password, only if it is
    /// still `old` (a concurrent `passwd` wins). Ends nothing.
    pub async fn upgrade_hash(
        &self,
        username: &str,
        old: &str,
        new: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        self.backend.upgrade_hash(username, old, new, at).await
    }

    /// Disables (ending every session, refresh token and access token) or
    /// enables a user.
    pub async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
        audit: &NewAudit,
    ) -> Result<UserRecord, StoreError> {
        let mut w = self.write().await?;
        if !w.set_user_disabled(username, disabled, audit.at).await? {
            return Err(StoreError::NotFound);
        }
        if disabled {
            end_user_tokens(&mut w, username, audit.at).await?;
        } else {
            w.changed(subject_hash("user", username), audit.at);
        }
        w.commit(Some(audit)).await?;
        self.get_user(username).await
    }

    /// Inserts a client.
    pub async fn insert_client(
        &self,
        c: &NewClient,
        audit: &NewAudit,
    ) -> Result<ClientRecord, StoreError> {
        let mut w = self.write().await?;
        w.insert_client(c).await?;
        w.changed(subject_hash("client", &c.client_id), c.created_at);
        w.commit(Some(audit)).await?;
        self.get_client(&c.client_id).await
    }

    /// Every client.
    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.backend.list_clients().await
    }

    /// One client, for display.
    pub async fn get_client(&self, client_id: &str) -> Result<ClientRecord, StoreError> {
        self.backend
            .get_client(client_id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// What client authentication needs.
    pub async fn client_auth(&self, client_id: &str) -> Result<Option<ClientAuth>, StoreError> {
        self.backend.client_auth(client_id).await
    }

    /// Revokes a client and every refresh token issued to it.
    pub async fn revoke_client(
        &self,
        client_id: &str,
        audit: &NewAudit,
    ) -> Result<ClientRecord, StoreError> {
        let mut w = self.write().await?;
        rules::check_client_revocation(w.client_revoked_at(client_id).await?)?;
        w.set_client_revoked(client_id, audit.at).await?;
        w.revoke_client_refresh(client_id, audit.at).await?;
        w.changed(subject_hash("client", client_id), audit.at);
        w.commit(Some(audit)).await?;
        self.get_client(client_id).await
    }

    /// Stores a new refresh token (the start of a family).
    pub async fn insert_refresh(
        &self,
        hash: &KeyHash,
        grant: &RefreshGrant,
    ) -> Result<(), StoreError> {
        self.backend.insert_refresh(hash, grant).await
    }

    /// Spends `old` and stores `new` in its family, atomically; a token
    /// spent before revokes its family. `client_id` must match the
    /// binding; `scopes` (when given) must be covered by the grant and
    /// become the new token's.
    pub async fn rotate_refresh(
        &self,
        old: &KeyHash,
        new: &KeyHash,
        client_id: &str,
        scopes: Option<&Scopes>,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        // Serialised: of two requests racing with the same token, the
        // second waits for the first to commit and then sees it spent.
        let mut w = self.write().await?;
        let row = w.refresh(old).await?;
        match rules::refresh_step(row, client_id, scopes, now) {
            RefreshStep::Refuse(outcome) => Ok(outcome),
            RefreshStep::RevokeFamily(family) => {
                w.revoke_refresh_family(&family, now).await?;
                w.commit(None).await?;
                Ok(RefreshOutcome::Reused)
            }
            RefreshStep::Rotate(next) => {
                w.set_refresh_used(old, now).await?;
                w.insert_refresh(new, &next).await?;
                w.commit(None).await?;
                Ok(RefreshOutcome::Rotated(next))
            }
        }
    }

    /// A live refresh token's grant (for introspection).
    pub async fn refresh_grant(
        &self,
        hash: &KeyHash,
        now: i64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        let row = self.backend.refresh(hash).await?;
        Ok(row.and_then(|r| rules::live_refresh(r, now)))
    }

    /// Revokes a refresh token's whole family, if it is bound to
    /// `client_id`. `true` when something was revoked.
    pub async fn revoke_refresh(
        &self,
        hash: &KeyHash,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut w = self.write().await?;
        let Some(row) = w.refresh(hash).await? else {
            return Ok(false);
        };
        if row.grant.client_id != client_id {
            return Ok(false);
        }
        let revoked = w.revoke_refresh_family(&row.grant.family, now).await?;
        w.commit(None).await?;
        Ok(revoked > 0)
    }

    /// Stores a session.
    pub async fn insert_session(&self, hash: &KeyHash, row: &SessionRow) -> Result<(), StoreError> {
        self.backend.insert_session(hash, row).await
    }

    /// A session by hash.
    pub async fn session(&self, hash: &KeyHash) -> Result<Option<SessionRow>, StoreError> {
        self.backend.session(hash).await
    }

    /// Records activity on sessions, in one transaction.
    pub async fn touch_sessions(&self, batch: &[(KeyHash, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut w = self.write().await?;
        for (h, at) in batch {
            w.touch_session(h, *at).await?;
        }
        w.commit(None).await
    }

    /// Ends a session.
    pub async fn revoke_session(&self, hash: &KeyHash, now: i64) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        w.revoke_session(hash, now).await?;
        w.changed(*hash, now);
        w.commit(None).await
    }

    /// Signing keys still published, newest first.
    pub async fn signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRow>, StoreError> {
        self.backend.signing_keys(now).await
    }

    /// Adds a signing key; the one signing until now retires at `now` and
    /// leaves the JWKS at `drop_after`. With `only_if_none`, does nothing
    /// when a live key of `alg` exists (two processes starting at once).
    pub async fn add_signing_key(
        &self,
        row: &SigningKeyRow,
        drop_after: i64,
        only_if_none: bool,
        audit: &NewAudit,
    ) -> Result<bool, StoreError> {
        let mut w = self.write().await?;
        if only_if_none && w.live_signing_keys(&row.alg).await? > 0 {
            return Ok(false);
        }
        w.retire_signing_keys(row.created_at, drop_after).await?;
        w.insert_signing_key(row).await?;
        w.changed(signing_keys_hash(), row.created_at);
        w.commit(Some(audit)).await?;
        Ok(true)
    }

    /// A named secret, created from `fresh` on first use.
    pub async fn secret(&self, name: &str, fresh: &[u8], now: i64) -> Result<Vec<u8>, StoreError> {
        self.backend.secret(name, fresh, now).await
    }
}

/// What ending a user's tokens means (a password change, a disable): its
/// earlier access tokens are refused, its sessions and refresh tokens
/// end, and every gateway drops what it cached about the user. Part of
/// the caller's transaction.
async fn end_user_tokens(w: &mut Write, username: &str, at: i64) -> Result<(), StoreError> {
    w.set_tokens_after(username, at).await?;
    w.revoke_user_sessions(username, at).await?;
    w.revoke_user_refresh(username, at).await?;
    w.changed(subject_hash("user", username), at);
    Ok(())
}

/// The algorithm of a stored password hash.
pub fn hash_algorithm(hash: &str) -> &'static str {
    if hash.starts_with("$argon2id$") {
        "argon2id"
    } else if hash.starts_with("$2") {
        "bcrypt"
    } else {
        "unknown"
    }
}
