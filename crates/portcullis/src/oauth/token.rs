//! `/oauth/token`: the password, client-credentials and refresh-token
//! grants (RFC 6749 §4.3, §4.4, §6), with refresh-token rotation.

use super::Ctx;
use super::wire::{
    OAuthError, authenticate_client, client_credentials, invalid_client, invalid_request,
    json_response, oauth_err, read_form, unavailable,
};
use crate::auth::identity::{Identity, Refusal, random_token};
use crate::store::identity::{RefreshGrant, RefreshOutcome};
use axum::body::Body;
use http::{Request, Response, StatusCode};
use portcullis_core::{KeyHash, Scopes, Secret};
use std::collections::HashMap;

fn requested_scopes(form: &HashMap<String, String>) -> Result<Option<Scopes>, OAuthError> {
    form.get("scope")
        .map(|s| Scopes::parse(s))
        .transpose()
        .map_err(|_| oauth_err(400, "invalid_scope", "the scope parameter is malformed"))
}

/// Granted = requested ∩ allowed (all allowed when none are requested).
fn grant_scopes(requested: Option<&Scopes>, allowed: &[&Scopes]) -> Scopes {
    let base: Vec<&str> = match requested {
        Some(r) => r.iter().collect(),
        None => allowed.first().map_or(Vec::new(), |a| a.iter().collect()),
    };
    let kept = base
        .into_iter()
        .filter(|s| allowed.iter().all(|a| a.contains(s)));
    Scopes::from_iter_checked(kept).unwrap_or_default()
}

fn token_body(access: &str, ttl: i64, scopes: &Scopes, refresh: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": ttl,
        "scope": scopes.to_space_separated(),
    });
    if let (Some(r), Some(m)) = (refresh, v.as_object_mut()) {
        m.insert("refresh_token".into(), r.into());
    }
    v.to_string()
}
pub(super) async fn token(
    id: &Identity,
    req: Request<Body>,
    ctx: Ctx<'_>,
) -> Result<(Response<Body>, String), OAuthError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| invalid_request("grant_type is required"))?
        .clone();
    let settings = id.tokens().settings().clone();
    if !settings.grants.serves(&grant_type) {
        return Err(oauth_err(
            400,
            "unsupported_grant_type",
            "this grant type is not enabled",
        ));
    }
    let client = authenticate_client(id, client_credentials(&headers, &form)?).await?;
    if let Some(c) = &client
        && !c.allows(&grant_type)
    {
        return Err(oauth_err(
            400,
            "unauthorized_client",
            "the client may not use this grant type",
        ));
    }
    let requested = requested_scopes(&form)?;
    let now = id.now();
    let client_id = client
        .as_ref()
        .map_or("", |c| c.client_id.as_str())
        .to_owned();
    let (subject, scopes, refresh_family) = match grant_type.as_str() {
        "client_credentials" => {
            let c = client.as_ref().ok_or_else(invalid_client)?;
            let scopes = grant_scopes(requested.as_ref(), &[&c.scopes]);
            (c.client_id.clone(), scopes, None)
        }
        "password" => {
            let (Some(user), Some(pw)) = (form.get("username"), form.get("password")) else {
                return Err(invalid_request("username and password are required"));
            };
            let pw = Secret::new(pw.clone());
            let u = match id
                .authenticate_user(user, &pw, ctx.client_ip)
                .await
                .map_err(unavailable)?
            {
                Ok(u) => u,
                Err(Refusal::Invalid(reason)) => {
                    return Err(OAuthError {
                        // A disabled user's right password is logged as
                        // such, and not counted against the address.
                        log_reason: (reason == "user_disabled").then_some(reason),
                        ..oauth_err(400, "invalid_grant", "invalid username or password")
                    });
                }
                Err(Refusal::Locked(secs)) => {
                    return Err(OAuthError {
                        retry_after: Some(secs),
                        ..oauth_err(
                            429,
                            "too_many_attempts",
                            "too many failed attempts; try again later",
                        )
                    });
                }
            };
            let mut allowed = vec![&u.scopes];
            if let Some(c) = &client {
                allowed.push(&c.scopes);
            }
            let scopes = grant_scopes(requested.as_ref(), &allowed);
            let refresh = settings.grants.refresh_token
                && client.as_ref().is_none_or(|c| c.allows("refresh_token"));
            let family = if refresh {
                Some(random_token("fam_").map_err(unavailable)?)
            } else {
                None
            };
            (u.username.clone(), scopes, family)
        }
        _ => {
            // refresh_token
            let presented = form
                .get("refresh_token")
                .ok_or_else(|| invalid_request("refresh_token is required"))?;
            let new = random_token("pcr_").map_err(unavailable)?;
            let outcome = id
                .store()
                .rotate_refresh(
                    &KeyHash::of(presented),
                    &KeyHash::of(&new),
                    &client_id,
                    requested.as_ref(),
                    now,
                )
                .await
                .map_err(unavailable)?;
            let g: RefreshGrant = match outcome {
                RefreshOutcome::Rotated(g) => g,
                RefreshOutcome::Reused => {
                    tracing::warn!(
                        target: "portcullis::security",
                        client_id = %client_id,
                        "refresh token reused: its family is revoked"
                    );
                    // Its holder once had it: logged apart from a token
                    // nobody issued, and not counted against the address.
                    return Err(OAuthError {
                        log_reason: Some("refresh_reused"),
                        ..oauth_err(400, "invalid_grant", "the refresh token is invalid")
                    });
                }
                RefreshOutcome::ScopeWidened => {
                    return Err(oauth_err(
                        400,
                        "invalid_scope",
                        "a refresh cannot add scopes",
                    ));
                }
                RefreshOutcome::Invalid => {
                    return Err(oauth_err(
                        400,
                        "invalid_grant",
                        "the refresh token is invalid",
                    ));
                }
            };
            // The user may have lost scopes (or been disabled) since.
            let scopes = if g.kind == "user" {
                match id
                    .store()
                    .user_auth(&g.subject)
                    .await
                    .map_err(unavailable)?
                {
                    Some(u) if !u.disabled => grant_scopes(Some(&g.scopes), &[&u.scopes]),
                    // A genuine token of a user since disabled or removed:
                    // not counted against the address.
                    _ => {
                        return Err(OAuthError {
                            log_reason: Some("user_disabled"),
                            ..oauth_err(400, "invalid_grant", "the refresh token is invalid")
                        });
                    }
                }
            } else {
                g.scopes.clone()
            };
            let access = id
                .tokens()
                .issue(&g.subject, &scopes, &client_id)
                .map_err(unavailable)?;
            let body = token_body(&access.0, settings.access_ttl, &scopes, Some(&new));
            return Ok((json_response(StatusCode::OK, body), g.subject));
        }
    };
    let (access, _jti) = id
        .tokens()
        .issue(&subject, &scopes, &client_id)
        .map_err(unavailable)?;
    let refresh = match refresh_family {
        Some(family) => {
            let token = random_token("pcr_").map_err(unavailable)?;
            id.store()
                .insert_refresh(
                    &KeyHash::of(&token),
                    &RefreshGrant {
                        family,
                        client_id: client_id.clone(),
                        subject: subject.clone(),
                        kind: "user".into(),
                        scopes: scopes.clone(),
                        created_at: now,
                        expires_at: now + settings.refresh_ttl,
                    },
                )
                .await
                .map_err(unavailable)?;
            Some(token)
        }
        None => None,
    };
    let body = token_body(&access, settings.access_ttl, &scopes, refresh.as_deref());
    Ok((json_response(StatusCode::OK, body), subject))
}
