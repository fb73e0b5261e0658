//! A service that accepts the access tokens your OpenID provider already
//! issues: one builder call, `trust_issuer`, and the handlers ask for
//! `Verified<HttpBearer, Scopes>` as for Portcullis's own tokens.
//!
//! ```sh
//! ISSUER=https://login.example.com AUDIENCE=https://api.example.com \
//!   cargo run -p external_tokens
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/data
//! ```
//!
//! Keys come from `{ISSUER}/.well-known/openid-configuration` (its
//! `jwks_uri`), over HTTPS, cached for the provider's max-age, refetched
//! once when a token names a new `kid`. `SCOPE_CLAIM` picks where scopes
//! are read: `scope` (default), `scp` (Entra ID, Okta), `permissions`
//! (Auth0 RBAC) or another claim; `TYP=JWT` accepts providers that mark
//! access tokens `typ: JWT` (Auth0, Keycloak, Entra ID) beside RFC 9068's
//! `at+jwt`. `CA_FILE` trusts a private CA instead of the public roots.

use axum::{Router, routing::get};
use portcullis::auth::jwt::TrustedIssuer;
use portcullis::schemes::HttpBearer;
use portcullis::{Portcullis, Verified};

portcullis::scopes!(ReadData = ["data:read"]);

/// Any valid token of the provider, whatever its scopes.
async fn me(caller: Verified<HttpBearer>) -> String {
    let p = caller.principal();
    format!(
        "hello {} (scopes: {})\n",
        p.subject,
        p.scopes.to_space_separated()
    )
}

/// Needs `data:read` (403 without it, 401 without a valid token).
async fn data(_: Verified<HttpBearer, ReadData>) -> &'static str {
    "{\"data\": [1, 2, 3]}\n"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let issuer = var("ISSUER").ok_or_else(|| anyhow::anyhow!("set ISSUER"))?;
    let audience = var("AUDIENCE").ok_or_else(|| anyhow::anyhow!("set AUDIENCE"))?;
    let mut trusted = TrustedIssuer::discover(&issuer)
        .audience(&audience)
        .scope_claim(&var("SCOPE_CLAIM").unwrap_or_else(|| "scope".into()));
    if var("TYP").as_deref() == Some("JWT") {
        trusted = trusted.typ(&["at+jwt", "JWT"]);
    }
    if let Some(ca) = var("CA_FILE") {
        trusted = trusted.ca_file(ca);
    }
    let store = var("STORE").unwrap_or_else(|| "sqlite://external-tokens.db".into());
    let pc = Portcullis::builder()
        .store(&store)
        .trust_issuer(trusted)
        .build()
        .await?;
    let app = Router::new()
        .route("/me", get(me))
        .route("/data", get(data))
        .layer(pc.layer());
    let listen = var("LISTEN").unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
