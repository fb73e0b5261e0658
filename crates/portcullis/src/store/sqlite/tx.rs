//! SQLite side of the identity records. Same rules as the key tables:
//! bound parameters only, and every multi-row change in one
//! `BEGIN IMMEDIATE` transaction with its change-log and audit rows.

use super::identity::{
    ClientAuth, ClientRecord, NewClient, NewUser, RefreshGrant, RefreshOutcome, SessionRow,
    SigningKeyRow, UserAuth, UserRecord, hash_algorithm, signing_keys_hash, subject_hash,
};
use super::sqlite::{SqliteStore, Tx, log_change, write_audit};
use super::{NewAudit, StoreError};
use portcullis_core::{KeyHash, Scopes};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

fn scopes(r: &SqliteRow, col: &'static str) -> Result<Scopes, StoreError> {
    Scopes::parse(r.try_get::<&str, _>(col)?).map_err(|_| StoreError::Corrupt(col))
}

fn user_record(r: &SqliteRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: r.try_get("username")?,
        scopes: r.try_get("scopes")?,
        disabled: r.try_get("disabled")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        hash_algorithm: hash_algorithm(r.try_get::<&str, _>("password_hash")?),
    })
}

fn client_record(r: &SqliteRow) -> Result<ClientRecord, StoreError> {
    Ok(ClientRecord {
        client_id: r.try_get("client_id")?,
        name: r.try_get("name")?,
        scopes: r.try_get("scopes")?,
        grants: r.try_get("grants")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn refresh_grant(r: &SqliteRow) -> Result<RefreshGrant, StoreError> {
    Ok(RefreshGrant {
        family: r.try_get("family")?,
        client_id: r.try_get("client_id")?,
        subject: r.try_get("subject")?,
        kind: r.try_get("kind")?,
        scopes: scopes(r, "scopes")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

fn hash32(r: &SqliteRow, col: &'static str) -> Result<KeyHash, StoreError> {
    let b: &[u8] = r.try_get(col)?;
    Ok(KeyHash(b.try_into().map_err(|_| StoreError::Corrupt(col))?))
}

/// Ends a user's sessions and refresh tokens and refuses their earlier
/// access tokens. Part of the caller's transaction.
async fn end_user_tokens(tx: &mut Tx, username: &str, at: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET tokens_after = ?2 WHERE username = ?1")
        .bind(username)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE sessions SET revoked_at = ?2 WHERE username = ?1 AND revoked_at IS NULL")
        .bind(username)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = ?2
         WHERE subject = ?1 AND kind = 'user' AND revoked_at IS NULL",
    )
    .bind(username)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    log_change(tx, &subject_hash("user", username), at).await
}

/// Stores one refresh token: a family's first, or a rotation's next.
async fn insert_refresh_row<'e, E>(
    db: E,
    hash: &KeyHash,
    g: &RefreshGrant,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family, client_id, subject, kind, scopes, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .bind(&hash.0[..])
    .bind(&g.family)
    .bind(&g.client_id)
    .bind(&g.subject)
    .bind(&g.kind)
    .bind(g.scopes.to_space_separated())
    .bind(g.created_at)
    .bind(g.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

impl SqliteStore {
    pub(super) async fn insert_users(
        &self,
        users: &[NewUser],
        audit: &NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for u in users {
            let done = sqlx::query(
                "INSERT INTO users (username, password_hash, scopes, disabled, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (username) DO NOTHING",
            )
            .bind(&u.username)
            .bind(&u.password_hash)
            .bind(u.scopes.to_space_separated())
            .bind(u.disabled)
            .bind(u.created_at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                // Dropping the transaction rolls back the users already
                // inserted: an import is all or nothing.
                return Err(StoreError::Conflict("a user with that name exists"));
            }
            log_change(&mut tx, &subject_hash("user", &u.username), u.created_at).await?;
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_user(&self, username: &str) -> Result<UserRecord, StoreError> {
        let r = sqlx::query("SELECT * FROM users WHERE username = ?1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        user_record(&r)
    }

    pub(super) async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_record)
            .collect()
    }

    pub(super) async fn user_auth(&self, username: &str) -> Result<Option<UserAuth>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT username, password_hash, scopes, disabled, tokens_after FROM users WHERE username = ?1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(UserAuth {
            username: r.try_get("username")?,
            password_hash: r.try_get("password_hash")?,
            scopes: scopes(&r, "scopes")?,
            disabled: r.try_get("disabled")?,
            tokens_after: r.try_get("tokens_after")?,
        }))
    }

    pub(super) async fn set_password(
        &self,
        username: &str,
        hash: &str,
        audit: &NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let n =
            sqlx::query("UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE username = ?1")
                .bind(username)
                .bind(hash)
                .bind(audit.at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        end_user_tokens(&mut tx, username, audit.at).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn upgrade_hash(
        &self,
        username: &str,
        old: &str,
        new: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET password_hash = ?3, updated_at = ?4 WHERE username = ?1 AND password_hash = ?2",
        )
        .bind(username)
        .bind(old)
        .bind(new)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
        audit: &NewAudit,
    ) -> Result<UserRecord, StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE users SET disabled = ?2, updated_at = ?3 WHERE username = ?1")
            .bind(username)
            .bind(disabled)
            .bind(audit.at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        if disabled {
            end_user_tokens(&mut tx, username, audit.at).await?;
        } else {
            log_change(&mut tx, &subject_hash("user", username), audit.at).await?;
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.get_user(username).await
    }

    pub(super) async fn insert_client(
        &self,
        c: &NewClient,
        audit: &NewAudit,
    ) -> Result<ClientRecord, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, secret_hash, name, scopes, grants, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&c.client_id)
        .bind(&c.secret_hash.0[..])
        .bind(&c.name)
        .bind(c.scopes.to_space_separated())
        .bind(&c.grants)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;
        log_change(&mut tx, &subject_hash("client", &c.client_id), c.created_at).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.get_client(&c.client_id).await
    }

    pub(super) async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        sqlx::query("SELECT * FROM oauth_clients ORDER BY created_at, client_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(client_record)
            .collect()
    }

    pub(super) async fn get_client(&self, client_id: &str) -> Result<ClientRecord, StoreError> {
        let r = sqlx::query("SELECT * FROM oauth_clients WHERE client_id = ?1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        client_record(&r)
    }

    pub(super) async fn client_auth(
        &self,
        client_id: &str,
    ) -> Result<Option<ClientAuth>, StoreError> {
        let Some(r) = sqlx::query("SELECT * FROM oauth_clients WHERE client_id = ?1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(ClientAuth {
            client_id: r.try_get("client_id")?,
            secret_hash: hash32(&r, "secret_hash")?,
            scopes: scopes(&r, "scopes")?,
            grants: r.try_get("grants")?,
            revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        }))
    }

    pub(super) async fn revoke_client(
        &self,
        client_id: &str,
        audit: &NewAudit,
    ) -> Result<ClientRecord, StoreError> {
        let mut tx = self.begin().await?;
        let r = sqlx::query("SELECT revoked_at FROM oauth_clients WHERE client_id = ?1")
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if r.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Err(StoreError::Conflict("the client is revoked already"));
        }
        sqlx::query("UPDATE oauth_clients SET revoked_at = ?2 WHERE client_id = ?1")
            .bind(client_id)
            .bind(audit.at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
        )
        .bind(client_id)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?;
        log_change(&mut tx, &subject_hash("client", client_id), audit.at).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        self.get_client(client_id).await
    }

    pub(super) async fn insert_refresh(
        &self,
        hash: &KeyHash,
        g: &RefreshGrant,
    ) -> Result<(), StoreError> {
        insert_refresh_row(&self.pool, hash, g).await
    }

    pub(super) async fn rotate_refresh(
        &self,
        old: &KeyHash,
        new: &KeyHash,
        client_id: &str,
        want: Option<&Scopes>,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        // IMMEDIATE: of two requests racing with the same token, the second
        // waits for the first to commit and then sees used_at set.
        let mut tx = self.begin().await?;
        let Some(r) = sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = ?1")
            .bind(&old.0[..])
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        let grant = refresh_grant(&r)?;
        let used: Option<i64> = r.try_get("used_at")?;
        let revoked: Option<i64> = r.try_get("revoked_at")?;
        if grant.client_id != client_id {
            // Someone else's token: refuse, but do not let a wrong client
            // burn the rightful client's family.
            return Ok(RefreshOutcome::Invalid);
        }
        if used.is_some() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
            )
            .bind(&grant.family)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        if revoked.is_some() || grant.expires_at <= now {
            return Ok(RefreshOutcome::Invalid);
        }
        let scopes = match want {
            Some(w) if !grant.scopes.covers(w) => return Ok(RefreshOutcome::ScopeWidened),
            Some(w) => w.clone(),
            None => grant.scopes.clone(),
        };
        sqlx::query("UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1")
            .bind(&old.0[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let next = RefreshGrant {
            scopes,
            created_at: now,
            ..grant
        };
        insert_refresh_row(&mut *tx, new, &next).await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated(next))
    }

    pub(super) async fn refresh_grant(
        &self,
        hash: &KeyHash,
        now: i64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        let r = sqlx::query(
            "SELECT * FROM refresh_tokens WHERE token_hash = ?1
               AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?2",
        )
        .bind(&hash.0[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(refresh_grant).transpose()
    }

    pub(super) async fn revoke_refresh(
        &self,
        hash: &KeyHash,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ?3
             WHERE revoked_at IS NULL AND family IN
               (SELECT family FROM refresh_tokens WHERE token_hash = ?1 AND client_id = ?2)",
        )
        .bind(&hash.0[..])
        .bind(client_id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub(super) async fn insert_session(
        &self,
        hash: &KeyHash,
        s: &SessionRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (session_hash, username, created_at, last_seen_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&hash.0[..])
        .bind(&s.username)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn session(&self, hash: &KeyHash) -> Result<Option<SessionRow>, StoreError> {
        let Some(r) = sqlx::query("SELECT * FROM sessions WHERE session_hash = ?1")
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(SessionRow {
            username: r.try_get("username")?,
            created_at: r.try_get("created_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            expires_at: r.try_get("expires_at")?,
            revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        }))
    }

    pub(super) async fn touch_sessions(&self, batch: &[(KeyHash, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (h, at) in batch {
            sqlx::query(
                "UPDATE sessions SET last_seen_at = ?2 WHERE session_hash = ?1 AND last_seen_at < ?2",
            )
            .bind(&h.0[..])
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn revoke_session(&self, hash: &KeyHash, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = ?2 WHERE session_hash = ?1 AND revoked_at IS NULL",
        )
        .bind(&hash.0[..])
        .bind(now)
        .execute(&mut *tx)
        .await?;
        log_change(&mut tx, hash, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM signing_keys WHERE drop_after IS NULL OR drop_after > ?1
             ORDER BY created_at DESC, kid DESC",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRow {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    private_der: r.try_get("private_der")?,
                    public_jwk: r.try_get("public_jwk")?,
                    created_at: r.try_get("created_at")?,
                    retired_at: r.try_get("retired_at")?,
                    drop_after: r.try_get("drop_after")?,
                })
            })
            .collect()
    }

    pub(super) async fn add_signing_key(
        &self,
        k: &SigningKeyRow,
        drop_after: i64,
        only_if_none: bool,
        audit: &NewAudit,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if only_if_none {
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM signing_keys WHERE alg = ?1 AND retired_at IS NULL",
            )
            .bind(&k.alg)
            .fetch_one(&mut *tx)
            .await?;
            if live > 0 {
                return Ok(false);
            }
        }
        sqlx::query(
            "UPDATE signing_keys SET retired_at = ?1, drop_after = ?2 WHERE retired_at IS NULL",
        )
        .bind(k.created_at)
        .bind(drop_after)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_der, public_jwk, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.private_der)
        .bind(&k.public_jwk)
        .bind(k.created_at)
        .execute(&mut *tx)
        .await?;
        log_change(&mut tx, &signing_keys_hash(), k.created_at).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: i64,
    ) -> Result<Vec<u8>, StoreError> {
        // Insert-or-keep, then read: two processes starting together agree
        // on whichever value landed first.
        sqlx::query(
            "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
