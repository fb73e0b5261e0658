//! The store's rules, decided in Rust once for every backend: which key
//! changes and rotations are refused, which admin keys count as lasting,
//! what a refresh token's presentation does, and the refill periods a
//! spend is measured against. Pure functions over what a backend read.

use super::backend::{KeyState, RefreshRow, Spend};
use super::identity::{RefreshGrant, RefreshOutcome};
use super::{ADMIN_SCOPE, KeyChange, KeySettings, LastAdmin, StoreError};
use portcullis_core::Scopes;
use portcullis_core::quota::Refill;

/// Whether the key opens the admin API at `now`: it holds the admin
/// scope and is not revoked, disabled, expired or used up (a refilled key
/// is never used up for good).
pub(super) fn active_admin(k: &KeyState, now: i64) -> bool {
    has_admin_scope(k)
        && k.revoked_at.is_none()
        && !k.disabled
        && k.expires_at.is_none_or(|e| e > now)
        && (k.remaining_uses.is_none_or(|u| u > 0) || k.refilled)
}

/// Whether the key is an admin key that will stay usable: not revoked or
/// disabled, never expiring, not running out of uses for good, and not
/// rotated away (a key in its rotation grace ends with the grace; its
/// replacement is the one that counts). A key created with
/// `expires_in = "3s"` must not let the last lasting admin key go (found
/// in review).
pub(super) fn lasting_admin(k: &KeyState) -> bool {
    has_admin_scope(k)
        && k.revoked_at.is_none()
        && !k.disabled
        && k.expires_at.is_none()
        && (k.remaining_uses.is_none() || k.refilled)
        && k.rotated_to.is_none()
}

fn has_admin_scope(k: &KeyState) -> bool {
    k.scopes.split(' ').any(|s| s == ADMIN_SCOPE)
}

/// Refuses a change of a revoked key (revocation is final), and with
/// [`LastAdmin::Protect`] a revoke or disable of an active admin key when
/// no other lasting one remains. `others` are the other keys holding the
/// admin scope, read in the change's own transaction.
pub(super) fn check_key_change(
    k: &KeyState,
    change: KeyChange,
    last_admin: LastAdmin,
    others: &[KeyState],
    now: i64,
) -> Result<(), StoreError> {
    if k.revoked_at.is_some() {
        return Err(StoreError::Conflict(
            "the key is revoked; revocation is final",
        ));
    }
    let removes_access = matches!(change, KeyChange::Revoke(_) | KeyChange::Disable);
    if last_admin == LastAdmin::Protect
        && removes_access
        && active_admin(k, now)
        && !others.iter().any(lasting_admin)
    {
        return Err(StoreError::LastAdminKey);
    }
    Ok(())
}

/// Refuses a settings change of a revoked key, and with
/// [`LastAdmin::Protect`] one that would leave no lasting admin key: the
/// last one losing the admin scope, or being given a number of uses (it
/// would lock everyone out when they run out). `others` as for
/// [`check_key_change`].
pub(super) fn check_key_update(
    k: &KeyState,
    settings: &KeySettings,
    last_admin: LastAdmin,
    others: &[KeyState],
    now: i64,
) -> Result<(), StoreError> {
    if k.revoked_at.is_some() {
        return Err(StoreError::Conflict(
            "the key is revoked; revocation is final",
        ));
    }
    let after = KeyState {
        scopes: settings
            .scopes
            .as_ref()
            .map_or_else(|| k.scopes.clone(), |s| s.to_space_separated()),
        remaining_uses: settings.remaining_uses.unwrap_or(k.remaining_uses),
        ..k.clone()
    };
    let loses = (active_admin(k, now) && !has_admin_scope(&after))
        || (lasting_admin(k) && !lasting_admin(&after));
    if last_admin == LastAdmin::Protect && loses && !others.iter().any(lasting_admin) {
        return Err(StoreError::LastAdminKey);
    }
    Ok(())
}

/// Refuses rotating a key that is revoked, already rotated, or expired
/// at `now`; otherwise the old key's new expiry: the grace end, or its
/// own expiry when that comes first.
pub(super) fn rotation(k: &KeyState, now: i64, grace_until: i64) -> Result<i64, StoreError> {
    if k.revoked_at.is_some() {
        return Err(StoreError::Conflict("a revoked key cannot be rotated"));
    }
    if k.rotated_to.is_some() {
        return Err(StoreError::Conflict(
            "the key was already rotated; rotate its replacement",
        ));
    }
    if k.expires_at.is_some_and(|e| e <= now) {
        return Err(StoreError::Conflict("an expired key cannot be rotated"));
    }
    Ok(k.expires_at.map_or(grace_until, |e| e.min(grace_until)))
}

/// The refill periods a spend at `now` is measured against.
pub(super) fn spend(cost: u32, now: i64) -> Spend {
    Spend {
        cost: i64::from(cost.max(1)),
        day_start: Refill::Daily.period_start(now),
        month_start: Refill::Monthly.period_start(now),
    }
}

/// What presenting a refresh token does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RefreshStep {
    /// Refuse, changing nothing.
    Refuse(RefreshOutcome),
    /// It was spent before: revoke its whole family.
    RevokeFamily(String),
    /// Spend it and store this grant under the new token.
    Rotate(RefreshGrant),
}

/// Decides a refresh-token presentation by `client_id` at `now`, asking
/// for `want` scopes (or the grant's).
pub(super) fn refresh_step(
    row: Option<RefreshRow>,
    client_id: &str,
    want: Option<&Scopes>,
    now: i64,
) -> RefreshStep {
    let Some(row) = row else {
        return RefreshStep::Refuse(RefreshOutcome::Invalid);
    };
    if row.grant.client_id != client_id {
        // Someone else's token: refuse, but do not let a wrong client
        // burn the rightful client's family.
        return RefreshStep::Refuse(RefreshOutcome::Invalid);
    }
    if row.used_at.is_some() {
        return RefreshStep::RevokeFamily(row.grant.family);
    }
    if row.revoked_at.is_some() || row.grant.expires_at <= now {
        return RefreshStep::Refuse(RefreshOutcome::Invalid);
    }
    let scopes = match want {
        Some(w) if !row.grant.scopes.covers(w) => {
            return RefreshStep::Refuse(RefreshOutcome::ScopeWidened);
        }
        Some(w) => w.clone(),
        None => row.grant.scopes.clone(),
    };
    RefreshStep::Rotate(RefreshGrant {
        scopes,
        created_at: now,
        ..row.grant
    })
}

/// The grant of a refresh token still usable at `now`: not spent, not
/// revoked, not expired.
pub(super) fn live_refresh(row: RefreshRow, now: i64) -> Option<RefreshGrant> {
    (row.used_at.is_none() && row.revoked_at.is_none() && row.grant.expires_at > now)
        .then_some(row.grant)
}

/// Refuses revoking a client that does not exist or is revoked already.
pub(super) fn check_client_revocation(revoked_at: Option<Option<i64>>) -> Result<(), StoreError> {
    match revoked_at {
        None => Err(StoreError::NotFound),
        Some(Some(_)) => Err(StoreError::Conflict("the client is revoked already")),
        Some(None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use portcullis_core::KeyHash;

    fn admin() -> KeyState {
        KeyState {
            hash: KeyHash([0; 32]),
            scopes: "data:read admin".into(),
            revoked_at: None,
            disabled: false,
            expires_at: None,
            remaining_uses: None,
            refilled: false,
            rotated_to: None,
        }
    }

    #[test]
    fn an_expiring_or_rotated_admin_key_is_not_lasting() {
        assert!(lasting_admin(&admin()));
        let expiring = KeyState {
            expires_at: Some(10),
            ..admin()
        };
        assert!(active_admin(&expiring, 5) && !lasting_admin(&expiring));
        let rotated = KeyState {
            rotated_to: Some("k2".into()),
            ..admin()
        };
        assert!(active_admin(&rotated, 5) && !lasting_admin(&rotated));
        let refilled = KeyState {
            remaining_uses: Some(0),
            refilled: true,
            ..admin()
        };
        assert!(active_admin(&refilled, 5) && lasting_admin(&refilled));
        let not_admin = KeyState {
            scopes: "administrator".into(),
            ..admin()
        };
        assert!(!active_admin(&not_admin, 5));
    }

    #[test]
    fn the_last_admin_is_protected_unless_allowed() {
        let me = admin();
        let revoke = KeyChange::Revoke(1);
        assert!(matches!(
            check_key_change(&me, revoke, LastAdmin::Protect, &[], 1),
            Err(StoreError::LastAdminKey)
        ));
        assert!(check_key_change(&me, revoke, LastAdmin::Allow, &[], 1).is_ok());
        assert!(check_key_change(&me, KeyChange::Enable, LastAdmin::Protect, &[], 1).is_ok());
        assert!(check_key_change(&me, revoke, LastAdmin::Protect, &[admin()], 1).is_ok());
    }

    #[test]
    fn rotation_keeps_the_earlier_end() {
        assert_eq!(rotation(&admin(), 0, 100).unwrap(), 100);
        let k = KeyState {
            expires_at: Some(50),
            ..admin()
        };
        assert_eq!(rotation(&k, 0, 100).unwrap(), 50);
        assert!(rotation(&k, 50, 100).is_err());
    }
}
