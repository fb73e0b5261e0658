//! `/oauth/revoke` (RFC 7009) and `/oauth/introspect` (RFC 7662), for
//! authenticated clients.

use super::wire::{
    OAuthError, authenticate_client, client_credentials, invalid_client, invalid_request,
    json_response, oauth_err, read_form, unavailable,
};
use crate::auth::identity::Identity;
use axum::body::Body;
use http::{Request, Response, StatusCode};
use portcullis_core::KeyHash;

pub(super) async fn revoke(
    id: &Identity,
    req: Request<Body>,
) -> Result<Response<Body>, OAuthError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    let client = authenticate_client(id, client_credentials(&headers, &form)?).await?;
    let token = form
        .get("token")
        .ok_or_else(|| invalid_request("token is required"))?;
    if token.starts_with("pcr_") {
        let client_id = client.as_ref().map_or("", |c| c.client_id.as_str());
        id.store()
            .revoke_refresh(&KeyHash::of(token), client_id, id.now())
            .await
            .map_err(unavailable)?;
    } else if token.matches('.').count() == 2 && client.is_some() {
        // Access tokens are self-contained and short-lived; revoking one
        // means revoking its client or user (RFC 7009 §2.2.1 lets a server
        // decline this token type).
        return Err(oauth_err(
            400,
            "unsupported_token_type",
            "access tokens expire on their own; revoke the client or disable the user to end them early",
        ));
    }
    // RFC 7009 §2.2: an unknown or invalid token is not an error.
    Ok(json_response(StatusCode::OK, String::new()))
}

pub(super) async fn introspect(
    id: &Identity,
    req: Request<Body>,
) -> Result<Response<Body>, OAuthError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    let Some(client) = authenticate_client(id, client_credentials(&headers, &form)?).await? else {
        return Err(invalid_client());
    };
    let token = form
        .get("token")
        .ok_or_else(|| invalid_request("token is required"))?;
    let inactive = || json_response(StatusCode::OK, r#"{"active":false}"#.into());
    if token.starts_with("pcr_") {
        let g = id
            .store()
            .refresh_grant(&KeyHash::of(token), id.now())
            .await
            .map_err(unavailable)?;
        return Ok(match g {
            // A refresh token is only described to the client holding it.
            Some(g) if g.client_id == client.client_id => json_response(
                StatusCode::OK,
                serde_json::json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": g.scopes.to_space_separated(),
                    "client_id": g.client_id,
                    "sub": g.subject,
                    "exp": g.expires_at,
                    "iat": g.created_at,
                    "iss": id.tokens().settings().issuer,
                })
                .to_string(),
            ),
            _ => inactive(),
        });
    }
    match id.verify_access_token(token).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Ok(inactive()),
        Err(e) => return Err(unavailable(e)),
    }
    let Ok(g) = id.tokens().verify(token) else {
        return Ok(inactive());
    };
    let aud = if g.ours {
        id.tokens().settings().audience.clone()
    } else {
        String::new()
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "active": true,
            "token_type": "access_token",
            "scope": g.scopes.to_space_separated(),
            "client_id": g.client_id.clone().unwrap_or_default(),
            "sub": g.subject,
            "exp": g.exp,
            "iat": g.iat,
            "iss": g.issuer,
            "aud": aud,
            "jti": g.token_id,
        })
        .to_string(),
    ))
}
