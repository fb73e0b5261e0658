//! `[tokens]`, `[sessions]` and `[brute_force]`: the settings of users,
//! OAuth2 clients, the tokens issued to them and their sessions.

use super::value::{dur, secs};
use super::{ConfigError, cerr};
use portcullis::auth::identity::SessionSettings;
use portcullis::auth::jwt::{
    Grants, JwksSource, ScopeClaim, SigningAlg, TokenSettings, TrustedIssuer,
};
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

/// One `[[tokens.trusted_issuers]]`: keys from OpenID Connect discovery
/// (`issuer` alone), a `jwks_url` or a `jwks_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustedIssuer {
    issuer: String,
    audience: OneOrMany,
    jwks_file: Option<String>,
    jwks_url: Option<String>,
    algorithms: Vec<String>,
    /// The older name of `kid_refetch_interval`.
    refetch_interval: Option<String>,
    kid_refetch_interval: Option<String>,
    min_refresh: Option<String>,
    max_refresh: Option<String>,
    stale_for: Option<String>,
    required_claims: Option<Vec<String>>,
    /// Claim name → accepted values (a string or a list).
    allowed_claims: Option<std::collections::BTreeMap<String, OneOrMany>>,
    leeway: Option<String>,
    subject_claim: Option<String>,
    scope_claim: Option<String>,
    typ: Option<OneOrMany>,
    ca_file: Option<String>,
    danger_allow_http: Option<bool>,
    connect_timeout: Option<String>,
    fetch_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
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
        let ti = trusted_issuer(i, ti, &issuer)?;
        // Tokens are routed to an issuer's keys by their `iss`: two
        // entries for one issuer would leave one of them unused.
        if trusted
            .iter()
            .any(|t: &TrustedIssuer| t.issuer == ti.issuer)
        {
            return Err(cerr(
                format!("tokens.trusted_issuers[{i}].issuer"),
                "is listed twice; give one entry every audience it may name",
            ));
        }
        trusted.push(ti);
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

fn trusted_issuer(
    i: usize,
    ti: &RawTrustedIssuer,
    own_issuer: &str,
) -> Result<TrustedIssuer, ConfigError> {
    let at = |k: &str| format!("tokens.trusted_issuers[{i}].{k}");
    if ti.issuer == own_issuer {
        return Err(cerr(at("issuer"), "is this gateway's own issuer"));
    }
    let mut algorithms = Vec::new();
    for a in &ti.algorithms {
        use jsonwebtoken::Algorithm as A;
        let alg = match a.as_str() {
            "EdDSA" => A::EdDSA,
            "RS256" => A::RS256,
            "RS384" => A::RS384,
            "RS512" => A::RS512,
            "PS256" => A::PS256,
            "PS384" => A::PS384,
            "PS512" => A::PS512,
            "ES256" => A::ES256,
            "ES384" => A::ES384,
            _ => {
                return Err(cerr(
                    at("algorithms"),
                    format!(
                        "{a:?}: a trusted issuer's keys must be asymmetric: EdDSA, RS256, RS384, RS512, PS256, PS384, PS512, ES256 or ES384 (never HS* or none)"
                    ),
                ));
            }
        };
        algorithms.push(alg);
    }
    let source = match (&ti.jwks_file, &ti.jwks_url) {
        (Some(_), Some(_)) => {
            return Err(cerr(
                at("jwks_url"),
                "set jwks_url or jwks_file, not both (or neither, for OpenID Connect discovery at the issuer)",
            ));
        }
        (Some(f), None) => JwksSource::File(f.into()),
        (None, Some(u)) => JwksSource::Url(u.clone()),
        (None, None) => JwksSource::Discover,
    };
    if ti.refetch_interval.is_some() && ti.kid_refetch_interval.is_some() {
        return Err(cerr(
            at("kid_refetch_interval"),
            "refetch_interval is its older name; set one",
        ));
    }
    let network = !matches!(source, JwksSource::File(_));
    let only_network = [
        ("ca_file", ti.ca_file.is_some()),
        ("danger_allow_http", ti.danger_allow_http.is_some()),
        ("min_refresh", ti.min_refresh.is_some()),
        ("max_refresh", ti.max_refresh.is_some()),
        ("stale_for", ti.stale_for.is_some()),
        ("connect_timeout", ti.connect_timeout.is_some()),
        ("fetch_timeout", ti.fetch_timeout.is_some()),
    ];
    if !network && let Some((k, _)) = only_network.iter().find(|(_, set)| *set) {
        return Err(cerr(
            at(k),
            "only used when keys come over the network (jwks_url or discovery), not with jwks_file",
        ));
    }
    let mut t = TrustedIssuer::jwks_file(&ti.issuer, "");
    t.source = source;
    t.audiences = ti.audience.list();
    t.algorithms = algorithms;
    let refetch = ti
        .kid_refetch_interval
        .clone()
        .or(ti.refetch_interval.clone());
    t.refetch_interval = dur(&at("kid_refetch_interval"), &refetch, t.refetch_interval)?;
    t.min_refresh = dur(&at("min_refresh"), &ti.min_refresh, t.min_refresh)?;
    t.max_refresh = dur(&at("max_refresh"), &ti.max_refresh, t.max_refresh)?;
    t.stale_for = dur(&at("stale_for"), &ti.stale_for, t.stale_for)?;
    t.connect_timeout = dur(
        &at("connect_timeout"),
        &ti.connect_timeout,
        t.connect_timeout,
    )?;
    t.fetch_timeout = dur(&at("fetch_timeout"), &ti.fetch_timeout, t.fetch_timeout)?;
    if t.connect_timeout.is_zero() || t.fetch_timeout.is_zero() {
        return Err(cerr(at("fetch_timeout"), "timeouts must be above zero"));
    }
    if let Some(l) = &ti.leeway {
        t.leeway = Some(secs(&at("leeway"), &Some(l.clone()), 0)?);
    }
    t.required_claims = ti.required_claims.clone().unwrap_or_default();
    t.allowed_claims = ti
        .allowed_claims
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.list()))
        .collect();
    if let Some(sc) = &ti.subject_claim {
        t.subject_claim = sc.clone();
    }
    if let Some(sc) = &ti.scope_claim {
        t.scope_claim = ScopeClaim::parse(sc).ok_or_else(|| {
            cerr(
                at("scope_claim"),
                "must name a claim (scope, scp, permissions or another)",
            )
        })?;
    }
    if let Some(typ) = &ti.typ {
        t.typ = typ.list();
    }
    t.ca_file = ti.ca_file.clone().map(Into::into);
    t.danger_allow_http = ti.danger_allow_http.unwrap_or(false);
    // The field names in the library's messages are the config keys.
    t.check().map_err(|e| {
        let (k, m) = e.split_once(": ").unwrap_or(("issuer", e.as_str()));
        cerr(at(k), m.to_owned())
    })?;
    Ok(t)
}
