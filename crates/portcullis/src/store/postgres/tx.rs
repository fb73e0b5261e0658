//! The Postgres write transaction: the statements the store's rules
//! compose into one atomic change. It holds the store's write lock (an
//! advisory lock taken first, see
//! [`Backend::begin`](crate::store::backend::Backend::begin)), so no other
//! writer changes what it reads before the commit.

use super::{all, one};
use crate::store::backend::{Fut, KeyState, RefreshRow, Tx};
use crate::store::identity::{NewClient, NewUser, RefreshGrant, SigningKeyRow};
use crate::store::rows::{self, STATE_COLUMNS};
use crate::store::{NewAudit, NewKey, StoreError};
use portcullis_core::KeyHash;
use sqlx::{Executor, Postgres, Row};

/// A write transaction holding the store's write lock.
pub(super) struct PgTx(pub(super) sqlx::Transaction<'static, Postgres>);

/// Stores one refresh token: a family's first, or a rotation's next.
pub(super) async fn insert_refresh<'e, E>(
    db: E,
    hash: &KeyHash,
    g: &RefreshGrant,
) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family, client_id, subject, kind, scopes, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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

/// One refresh token as stored.
pub(super) async fn refresh<'e, E>(db: E, hash: &KeyHash) -> Result<Option<RefreshRow>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let query = sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = $1").bind(&hash.0[..]);
    one(db, query, rows::refresh_row).await
}

impl PgTx {
    /// Runs one bound statement in the transaction; how many rows it
    /// changed.
    async fn apply<'q, Q>(&mut self, query: Q) -> Result<u64, StoreError>
    where
        Q: 'q + sqlx::Execute<'q, Postgres>,
    {
        Ok((&mut *self.0).execute(query).await?.rows_affected())
    }
}

/// The future of one statement whose count does not matter.
macro_rules! run {
    ($self:ident, $query:expr) => {
        Box::pin(async move {
            $self.apply($query).await?;
            Ok(())
        })
    };
}

/// The future of one statement that says whether it changed a row.
macro_rules! changed_any {
    ($self:ident, $query:expr) => {
        Box::pin(async move { Ok($self.apply($query).await? > 0) })
    };
}

impl Tx for PgTx {
    fn record_change<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                // NOTIFY is delivered when the transaction commits (and
                // never if it rolls back); repeats within one transaction
                // are folded into one.
                "WITH c AS (INSERT INTO key_changes (key_hash, changed_at) VALUES ($1, $2))
                 SELECT pg_notify($3, '')"
            )
            .bind(&hash.0[..])
            .bind(at)
            .bind(super::listen::CHANNEL)
        )
    }

    fn audit<'a>(&'a mut self, a: &'a NewAudit) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                "INSERT INTO audit_events (at, actor, action, target, detail)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(a.at)
            .bind(&a.actor)
            .bind(a.action)
            .bind(a.target.as_deref())
            .bind(a.detail.to_string())
        )
    }

    fn commit(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(async move {
            self.0.commit().await?;
            Ok(())
        })
    }

    fn key_state<'a>(&'a mut self, id: &'a str) -> Fut<'a, Option<KeyState>> {
        Box::pin(async move {
            let sql = format!("SELECT {STATE_COLUMNS} FROM api_keys WHERE id = $1");
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
            one(&mut *self.0, query, rows::key_state).await
        })
    }

    fn unrevoked_keys_with_scope<'a>(
        &'a mut self,
        scope: &'a str,
    ) -> Fut<'a, Vec<(String, KeyState)>> {
        Box::pin(async move {
            // `strpos` on the space-padded list: scopes are stored
            // space-separated, and `strpos` is case-sensitive as scopes are
            // (LIKE is not).
            let sql = format!(
                "SELECT {STATE_COLUMNS} FROM api_keys
                 WHERE revoked_at IS NULL AND strpos(' ' || scopes || ' ', $1) > 0"
            );
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(format!(" {scope} "));
            all(&mut *self.0, query, |r| {
                Ok((r.try_get("id")?, rows::key_state(r)?))
            })
            .await
        })
    }

    fn insert_key<'a>(&'a mut self, k: &'a NewKey) -> Fut<'a, ()> {
        run!(self, sqlx::query(
                "INSERT INTO api_keys (id, key_hash, prefix, env, owner, name, scopes, created_at,
                                       expires_at, remaining_uses, rate_limit, metadata, rotated_from,
                                       refill_interval, refill_amount, refilled_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(&k.id)
            .bind(&k.hash.0[..])
            .bind(&k.prefix)
            .bind(&k.env)
            .bind(&k.owner)
            .bind(&k.name)
            .bind(k.scopes.to_space_separated())
            .bind(k.created_at)
            .bind(k.expires_at)
            .bind(k.remaining_uses)
            .bind(k.rate_limit.as_deref())
            .bind(k.metadata.to_string())
            .bind(k.rotated_from.as_deref())
            .bind(k.refill.map(|r| r.every.as_str()))
            .bind(k.refill.map(|r| r.amount))
            .bind(k.refilled_at))
    }

    fn set_key_revoked<'a>(&'a mut self, id: &'a str, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
        )
    }

    fn set_key_disabled<'a>(&'a mut self, id: &'a str, disabled: bool) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query("UPDATE api_keys SET disabled = $2 WHERE id = $1")
                .bind(id)
                .bind(disabled)
        )
    }

    fn set_key_settings<'a>(
        &'a mut self,
        id: &'a str,
        scopes: Option<&'a str>,
        rate_limit: Option<Option<&'a str>>,
        remaining_uses: Option<Option<i64>>,
    ) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                "UPDATE api_keys SET scopes = COALESCE($2, scopes), \
                 rate_limit = CASE WHEN $3::boolean THEN $4 ELSE rate_limit END, \
                 remaining_uses = CASE WHEN $5::boolean THEN $6 ELSE remaining_uses END WHERE id = $1"
            )
            .bind(id)
            .bind(scopes)
            .bind(rate_limit.is_some())
            .bind(rate_limit.flatten())
            .bind(remaining_uses.is_some())
            .bind(remaining_uses.flatten())
        )
    }

    fn set_key_rotated<'a>(
        &'a mut self,
        id: &'a str,
        rotated_to: &'a str,
        expires_at: i64,
    ) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query("UPDATE api_keys SET rotated_to = $2, expires_at = $3 WHERE id = $1")
                .bind(id)
                .bind(rotated_to)
                .bind(expires_at)
        )
    }

    fn touch_key<'a>(&'a mut self, id: &'a str, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"
            )
            .bind(id)
            .bind(at)
        )
    }

    fn touch_keys<'a>(&'a mut self, batch: &'a [(String, i64)]) -> Fut<'a, ()> {
        let (ids, ats): (Vec<&str>, Vec<i64>) = batch.iter().map(|(i, a)| (i.as_str(), *a)).unzip();
        // One statement for the whole flush: a round trip per key would be
        // the store's main load once the caches are warm.
        run!(
            self,
            sqlx::query(
                "UPDATE api_keys AS k SET last_used_at = t.at
                 FROM unnest($1::text[], $2::bigint[]) AS t(id, at)
                 WHERE k.id = t.id AND (k.last_used_at IS NULL OR k.last_used_at < t.at)"
            )
            .bind(ids)
            .bind(ats)
        )
    }

    fn insert_user<'a>(&'a mut self, u: &'a NewUser) -> Fut<'a, bool> {
        changed_any!(self, sqlx::query(
                "INSERT INTO users (username, password_hash, scopes, disabled, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (username) DO NOTHING",
            )
            .bind(&u.username)
            .bind(&u.password_hash)
            .bind(u.scopes.to_space_separated())
            .bind(u.disabled)
            .bind(u.created_at))
    }

    fn set_password_hash<'a>(
        &'a mut self,
        username: &'a str,
        hash: &'a str,
        at: i64,
    ) -> Fut<'a, bool> {
        changed_any!(self, sqlx::query(
                "UPDATE users SET password_hash = $2, updated_at = $3 WHERE username = $1",
            )
            .bind(username)
            .bind(hash)
            .bind(at))
    }

    fn set_user_disabled<'a>(
        &'a mut self,
        username: &'a str,
        disabled: bool,
        at: i64,
    ) -> Fut<'a, bool> {
        changed_any!(
            self,
            sqlx::query("UPDATE users SET disabled = $2, updated_at = $3 WHERE username = $1")
                .bind(username)
                .bind(disabled)
                .bind(at)
        )
    }

    fn set_tokens_after<'a>(&'a mut self, username: &'a str, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query("UPDATE users SET tokens_after = $2 WHERE username = $1")
                .bind(username)
                .bind(at)
        )
    }

    fn revoke_user_sessions<'a>(&'a mut self, username: &'a str, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                "UPDATE sessions SET revoked_at = $2 WHERE username = $1 AND revoked_at IS NULL"
            )
            .bind(username)
            .bind(at)
        )
    }

    fn revoke_user_refresh<'a>(&'a mut self, username: &'a str, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2
             WHERE subject = $1 AND kind = 'user' AND revoked_at IS NULL"
            )
            .bind(username)
            .bind(at)
        )
    }

    fn insert_client<'a>(&'a mut self, c: &'a NewClient) -> Fut<'a, ()> {
        run!(self, sqlx::query(
                "INSERT INTO oauth_clients (client_id, secret_hash, name, scopes, grants, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&c.client_id)
            .bind(&c.secret_hash.0[..])
            .bind(&c.name)
            .bind(c.scopes.to_space_separated())
            .bind(&c.grants)
            .bind(c.created_at))
    }

    fn client_revoked_at<'a>(&'a mut self, client_id: &'a str) -> Fut<'a, Option<Option<i64>>> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT revoked_at FROM oauth_clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&mut *self.0)
                    .await?,
            )
        })
    }

    fn set_client_revoked<'a>(&'a mut self, client_id: &'a str, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query("UPDATE oauth_clients SET revoked_at = $2 WHERE client_id = $1")
                .bind(client_id)
                .bind(at)
        )
    }

    fn revoke_client_refresh<'a>(&'a mut self, client_id: &'a str, at: i64) -> Fut<'a, ()> {
        run!(self, sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL").bind(client_id).bind(at))
    }

    fn refresh<'a>(&'a mut self, hash: &'a KeyHash) -> Fut<'a, Option<RefreshRow>> {
        Box::pin(refresh(&mut *self.0, hash))
    }

    fn set_refresh_used<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
                .bind(&hash.0[..])
                .bind(at)
        )
    }

    fn insert_refresh<'a>(&'a mut self, hash: &'a KeyHash, grant: &'a RefreshGrant) -> Fut<'a, ()> {
        Box::pin(insert_refresh(&mut *self.0, hash, grant))
    }

    fn revoke_refresh_family<'a>(&'a mut self, family: &'a str, at: i64) -> Fut<'a, u64> {
        let query = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL",
        );
        Box::pin(self.apply(query.bind(family).bind(at)))
    }

    fn revoke_session<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                "UPDATE sessions SET revoked_at = $2 WHERE session_hash = $1 AND revoked_at IS NULL"
            )
            .bind(&hash.0[..])
            .bind(at)
        )
    }

    fn touch_session<'a>(&'a mut self, hash: &'a KeyHash, at: i64) -> Fut<'a, ()> {
        run!(self, sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE session_hash = $1 AND last_seen_at < $2").bind(&hash.0[..]).bind(at))
    }

    fn live_signing_keys<'a>(&'a mut self, alg: &'a str) -> Fut<'a, i64> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM signing_keys WHERE alg = $1 AND retired_at IS NULL",
            )
            .bind(alg)
            .fetch_one(&mut *self.0)
            .await?)
        })
    }

    fn retire_signing_keys(&mut self, at: i64, drop_after: i64) -> Fut<'_, ()> {
        run!(
            self,
            sqlx::query(
                "UPDATE signing_keys SET retired_at = $1, drop_after = $2 WHERE retired_at IS NULL",
            )
            .bind(at)
            .bind(drop_after)
        )
    }

    fn insert_signing_key<'a>(&'a mut self, k: &'a SigningKeyRow) -> Fut<'a, ()> {
        run!(
            self,
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, private_der, public_jwk, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&k.kid)
            .bind(&k.alg)
            .bind(&k.private_der)
            .bind(&k.public_jwk)
            .bind(k.created_at)
        )
    }
}
