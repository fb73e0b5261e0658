//! `[tokens]`, `[sessions]` and `[brute_force]`: the settings of users,
//! OAuth2 clients, the tokens issued to them and their sessions.

use super::value::{dur, secs};
use super::{ConfigError, cerr};
use portcullis::auth::identity::SessionSettings;
use portcullis::auth::jwt::{Grants, JwksSource, SigningAlg, TokenSettings, TrustedIssuer};
use portcullis::auth::throttle::ThrottleSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
    issuer: Option<String>,
    audience: Option<String>,
    access_ttl: Option<String>,
    refresh_ttl: Option<String>,
    algorithm: Option<String>,
    secret_env: Option<String>,
    grants: Option<Vec<String>>,
    leeway: Option<String>,
    #[serde(default)]
    trusted_issuers: Vec<RawTrustedIssuer>,
}

impl RawTokens {
    /// The variable the HS256 secret is read from (and `{it}_FILE`).
    pub(super) fn secret_var(&self) -> String {
        self.secret_env
            .clone()
            .unwrap_or_else(|| "PORTCULLIS_JWT_SECRET".into())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustedIssuer {
    issuer: String,
    audience: String,
    jwks_file: String,
    algorithms: Vec<String>,
    refetch_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSessions {
    idle_ttl: Option<String>,
    absolute_ttl: Option<String>,
    same_site: Option<String>,
    trusted_origins: Option<Vec<String>>,
    basic_cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBruteForce {
    per_account_ip: Option<u32>,
    per_ip: Option<u32>,
    per_account_slow: Option<u32>,
    max_lockout: Option<String>,
    hash_parallelism: Option<usize>,
}

/// Users, tokens and sessions.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Token settings.
    pub tokens: portcullis::auth::jwt::TokenSettings,
    /// Session settings.
    pub sessions: portcullis::auth::identity::SessionSettings,
    /// Brute-force thresholds.
    pub throttle: portcullis::auth::throttle::ThrottleSettings,
    /// Argon2 hashes run at once, at most.
    pub hash_parallelism: usize,
}

/// The three sections, in this order; the token issuer defaults to the
/// public listener's URL, and the HS256 secret is read from `env`.
pub(super) fn parse(
    t: &RawTokens,
    se: &RawSessions,
    b: &RawBruteForce,
    listen: SocketAddr,
    env: &[(String, String)],
) -> Result<IdentityConfig, ConfigError> {
    let tokens = tokens(t, listen, env)?;
    let sessions = sessions(se)?;
    let (throttle, hash_parallelism) = brute_force(b)?;
    Ok(IdentityConfig {
        tokens,
        sessions,
        throttle,
        hash_parallelism,
    })
}

fn tokens(
    t: &RawTokens,
    listen: SocketAddr,
    env: &[(String, String)],
) -> Result<TokenSettings, ConfigError> {
    let issuer = t
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{listen}"));
    if issuer.is_empty() || issuer.ends_with('/') {
        return Err(cerr(
            "tokens.issuer",
            "must be a URL without a trailing slash",
        ));
    }
    let audience = t.audience.clone().unwrap_or_else(|| "portcullis".into());
    if audience.is_empty() {
        return Err(cerr("tokens.audience", "must not be empty"));
    }
    let access_ttl = secs("tokens.access_ttl", &t.access_ttl, 900)?;
    if !(60..=86_400).contains(&access_ttl) {
        return Err(cerr(
            "tokens.access_ttl",
            "must be between 1m and 24h (short-lived access tokens are what make them safe to cache)",
        ));
    }
    let refresh_ttl = secs("tokens.refresh_ttl", &t.refresh_ttl, 30 * 86_400)?;
    if refresh_ttl < access_ttl {
        return Err(cerr(
            "tokens.refresh_ttl",
            "must be at least tokens.access_ttl",
        ));
    }
    let leeway = secs("tokens.leeway", &t.leeway, 30)?;
    if !(0..=portcullis_core::token::MAX_LEEWAY_SECS).contains(&leeway) {
        return Err(cerr("tokens.leeway", "must be between 0s and 60s"));
    }
    let alg_name = t.algorithm.as_deref().unwrap_or("EdDSA");
    let alg = SigningAlg::parse(alg_name).ok_or_else(|| {
        cerr(
            "tokens.algorithm",
            format!("{alg_name:?}: use \"EdDSA\", \"RS256\" or \"HS256\""),
        )
    })?;
    let hs_secret = if alg == SigningAlg::HS256 {
        let var = t.secret_var();
        let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let Some(v) = portcullis::secret_env::read(&var, lookup)
            .map_err(|e| cerr("tokens.secret_env", e.to_string()))?
        else {
            return Err(cerr(
                "tokens.secret_env",
                format!(
                    "HS256 needs a secret in the environment variable {var} (or a file named by {var}_FILE); neither is set"
                ),
            ));
        };
        portcullis::auth::jwt::check_hs_secret(v.expose().as_bytes())
            .map_err(|m| cerr("tokens.secret_env", format!("{var}: {m}")))?;
        Some(portcullis_core::Secret::new(v.expose().as_bytes().to_vec()))
    } else {
        if t.secret_env.is_some() {
            return Err(cerr(
                "tokens.secret_env",
                "only used with algorithm = \"HS256\"",
            ));
        }
        None
    };
    let mut grants = Grants {
        client_credentials: false,
        refresh_token: false,
        password: false,
    };
    let names = t
        .grants
        .clone()
        .unwrap_or_else(|| vec!["client_credentials".into(), "refresh_token".into()]);
    for (i, g) in names.iter().enumerate() {
        match g.as_str() {
            "client_credentials" => grants.client_credentials = true,
            "refresh_token" => grants.refresh_token = true,
            "password" => grants.password = true,
            _ => {
                return Err(cerr(
                    format!("tokens.grants[{i}]"),
                    format!("{g:?}: use client_credentials, refresh_token or password"),
                ));
            }
        }
    }
    let mut trusted = Vec::new();
    for (i, ti) in t.trusted_issuers.iter().enumerate() {
        let at = |k: &str| format!("tokens.trusted_issuers[{i}].{k}");
        if ti.issuer == issuer {
            return Err(cerr(at("issuer"), "is this gateway's own issuer"));
        }
        let mut algorithms = Vec::new();
        for a in &ti.algorithms {
            let alg = match a.as_str() {
                "EdDSA" => jsonwebtoken::Algorithm::EdDSA,
                "RS256" => jsonwebtoken::Algorithm::RS256,
                "RS384" => jsonwebtoken::Algorithm::RS384,
                "RS512" => jsonwebtoken::Algorithm::RS512,
                "PS256" => jsonwebtoken::Algorithm::PS256,
                _ => {
                    return Err(cerr(
                        at("algorithms"),
                        format!(
                            "{a:?}: a trusted issuer's keys must be asymmetric: EdDSA, RS256, RS384, RS512 or PS256"
                        ),
                    ));
                }
            };
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err(cerr(at("algorithms"), "name at least one algorithm"));
        }
        trusted.push(TrustedIssuer {
            issuer: ti.issuer.clone(),
            audience: ti.audience.clone(),
            algorithms,
            source: JwksSource::File(ti.jwks_file.clone().into()),
            refetch_interval: dur(
                &at("refetch_interval"),
                &ti.refetch_interval,
                Duration::from_secs(60),
            )?,
        });
    }
    Ok(TokenSettings {
        issuer,
        audience,
        access_ttl,
        refresh_ttl,
        alg,
        hs_secret,
        leeway,
        trusted,
        grants,
    })
}

fn sessions(se: &RawSessions) -> Result<SessionSettings, ConfigError> {
    let mut sessions = SessionSettings {
        idle_ttl: secs("sessions.idle_ttl", &se.idle_ttl, 1800)?,
        absolute_ttl: secs("sessions.absolute_ttl", &se.absolute_ttl, 12 * 3600)?,
        basic_cache_ttl: dur(
            "sessions.basic_cache_ttl",
            &se.basic_cache_ttl,
            Duration::from_secs(60),
        )?,
        ..Default::default()
    };
    if sessions.idle_ttl < 60 || sessions.absolute_ttl < sessions.idle_ttl {
        return Err(cerr(
            "sessions.absolute_ttl",
            "sessions.idle_ttl must be at least 1m and no longer than sessions.absolute_ttl",
        ));
    }
    if sessions.basic_cache_ttl > Duration::from_secs(300) {
        return Err(cerr(
            "sessions.basic_cache_ttl",
            "at most 5m: a changed password must take effect promptly",
        ));
    }
    sessions.same_site = match se.same_site.as_deref().unwrap_or("lax") {
        "lax" | "Lax" => portcullis::auth::identity::SameSite::Lax,
        "strict" | "Strict" => portcullis::auth::identity::SameSite::Strict,
        other => {
            return Err(cerr(
                "sessions.same_site",
                format!(
                    "{other:?}: use \"lax\" or \"strict\" (None would send the session cookie on cross-site requests)"
                ),
            ));
        }
    };
    for (i, o) in se
        .trusted_origins
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let ok = (o.starts_with("https://") || o.starts_with("http://"))
            && o.parse::<http::Uri>()
                .is_ok_and(|u| u.authority().is_some() && u.path() == "/" && !o.ends_with('/'));
        if !ok {
            return Err(cerr(
                format!("sessions.trusted_origins[{i}]"),
                format!(
                    "{o:?} is not an origin like https://app.example.com (scheme and host, no path, no wildcard)"
                ),
            ));
        }
        sessions.trusted_origins.push(o);
    }
    Ok(sessions)
}

/// The thresholds, and how many Argon2 hashes may run at once.
fn brute_force(b: &RawBruteForce) -> Result<(ThrottleSettings, usize), ConfigError> {
    let throttle = ThrottleSettings {
        per_account_ip: b.per_account_ip.unwrap_or(5).max(1),
        per_ip: b.per_ip.unwrap_or(20).max(1),
        per_account_slow: b.per_account_slow.unwrap_or(10).max(1),
        max_lockout: secs("brute_force.max_lockout", &b.max_lockout, 900)?.max(1),
    };
    let hash_parallelism = b
        .hash_parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    Ok((throttle, hash_parallelism.max(1)))
}
