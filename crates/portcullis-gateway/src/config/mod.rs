//! The config file: TOML, unknown keys refused, `PORTCULLIS_<SECTION>__<KEY>`
//! environment overrides, then parsed into the types the server runs on.
//! A bad config names the key path and the problem.

use http::Method;
use portcullis::auth::guard::Policy;
use portcullis_core::credential::CredentialNames;
use portcullis_core::net::Cidr;
use portcullis_core::ratelimit::Policy as RatePolicy;
use portcullis_core::route::PathPattern;
use portcullis_core::time::parse_duration;
use portcullis_core::{Scheme, SchemeSet, Scopes};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A config error: the key path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where (`routes[0].auth`), or the file.
    pub path: String,
    /// What.
    pub message: String,
}

fn cerr(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: without_passwords(&message.into()),
    }
}

/// A message with the userinfo of every `scheme://user:password@host` in
/// it redacted by the store's own rule ([`portcullis::store::redact_url`]):
/// errors quote values, and a URL's password is a secret.
fn without_passwords(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("://") {
        // The authority ends at the first '/', '?', '#', quote or space.
        let tail = &rest[i + 3..];
        let end = i
            + 3
            + tail
                .find(['/', '?', '#', '"', '\'', ' ', '`'])
                .unwrap_or(tail.len());
        out.push_str(&portcullis::store::redact_url(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    credentials: RawCredentials,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    sessions: RawSessions,
    #[serde(default)]
    brute_force: RawBruteForce,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    routes: Vec<RawRoute>,
    tls: Option<RawTls>,
    cors: Option<RawCors>,
    #[serde(default)]
    security_headers: RawSecurityHeaders,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    redirect_http_from: Option<String>,
    redirect_host: Option<String>,
    hsts_max_age: Option<String>,
    hsts_include_subdomains: Option<bool>,
    hsts_preload: Option<bool>,
    handshake_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    #[serde(default)]
    allow_origins: Vec<String>,
    allow_methods: Option<Vec<String>>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default)]
    allow_private_network: bool,
    max_age: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurityHeaders {
    #[serde(default)]
    proxied: std::collections::BTreeMap<String, String>,
    overwrite: Option<bool>,
}

/// Terminating TLS here.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// A plain-HTTP listener that redirects browsers to HTTPS.
    pub redirect_http_from: Option<SocketAddr>,
    /// The host named in redirects; else the request's (trusted) host.
    pub redirect_host: Option<String>,
    /// The `Strict-Transport-Security` value.
    pub hsts: http::HeaderValue,
}

/// Headers added to responses.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    /// Added to upstream responses.
    pub proxied: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Replace the upstream's own value (else only fill in missing ones).
    pub overwrite: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
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
struct RawSessions {
    idle_ttl: Option<String>,
    absolute_ttl: Option<String>,
    same_site: Option<String>,
    trusted_origins: Option<Vec<String>>,
    basic_cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    backend: Option<String>,
    default: Option<String>,
    legacy_headers: Option<bool>,
    max_counters: Option<u64>,
    on_backend_error: Option<String>,
    timeout_ms: Option<u64>,
    breaker_threshold: Option<u32>,
    breaker_cooldown: Option<String>,
    key_prefix: Option<String>,
    auth_endpoints: Option<String>,
}

/// Rate limiting.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// The policy for routes that name none; `None` = unlimited.
    pub default: Option<portcullis_core::ratelimit::Policy>,
    /// Also send `X-RateLimit-Limit/-Remaining/-Reset`.
    pub legacy_headers: bool,
    /// Counters held in memory, at most.
    pub max_counters: u64,
    /// Where counters live: `None` = this process's memory.
    pub redis: Option<portcullis::ratelimit::RedisSettings>,
    /// What to do while Redis cannot answer.
    pub on_backend_error: portcullis::ratelimit::OnBackendError,
    /// The per-address limit on `/oauth/token` and `/auth/login`.
    pub auth_endpoints: Option<portcullis_core::ratelimit::Policy>,
}

pub use portcullis::ratelimit::LimitBy;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBruteForce {
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    forwarded_header: Option<String>,
    header_read_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    shutdown_grace: Option<String>,
    trusted_hosts: Option<Vec<String>>,
    body_read_timeout: Option<String>,
    first_request_timeout: Option<String>,
    idle_timeout: Option<String>,
    send_timeout: Option<String>,
    h2c: Option<bool>,
    h2_max_streams: Option<u32>,
    h2_control_frames_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    api_key_header: Option<String>,
    api_key_query: Option<String>,
    api_key_cookie: Option<String>,
    allow_query_keys: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    negative_ttl: Option<String>,
    positive_ttl: Option<String>,
    sync_interval_ms: Option<u64>,
    last_used_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
    access_log: Option<bool>,
    dependency_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    connect_timeout: Option<String>,
    timeout: Option<String>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    queue_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: String,
    methods: Option<Vec<String>>,
    upstream: String,
    #[serde(default)]
    auth: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    timeout: Option<String>,
    rate_limit: Option<String>,
    rate_limit_by: Option<String>,
    cost: Option<u32>,
    max_body_bytes: Option<usize>,
    cors: Option<RawCors>,
    #[serde(default)]
    forward_override_headers: bool,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The built-in demo upstream.
    Demo,
    /// An HTTP server: `http://host:port` and an optional base path.
    Http {
        /// `http://host:port`
        origin: String,
        /// Prefix added to the request path, without a trailing `/`.
        base_path: String,
    },
}

/// A parsed route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file.
    pub index: usize,
    /// As written.
    pub path: String,
    /// The pattern.
    pub pattern: PathPattern,
    /// `None` = any method.
    pub methods: Option<Vec<Method>>,
    /// Where to.
    pub upstream: Upstream,
    /// Schemes and scopes.
    pub policy: Policy,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// The route's own rate-limit policy (else `rate_limit.default`).
    pub rate_limit: Option<portcullis_core::ratelimit::Policy>,
    /// Whose allowance the route's limit counts.
    pub rate_limit_by: LimitBy,
    /// What one request counts as.
    pub cost: u32,
    /// Largest request body forwarded.
    pub max_body_bytes: usize,
    /// The route's own CORS policy (else the global one).
    pub cors: Option<std::sync::Arc<portcullis_core::cors::Cors>>,
    /// Pass `X-HTTP-Method-Override`, `X-Original-URL` and their kind to
    /// the upstream (removed otherwise: they let a client re-method or
    /// re-route a request past `methods` and `path`).
    pub forward_override_headers: bool,
}

/// The deadlines and HTTP/2 limits every connection is held to (see
/// `serve.rs` and docs/security.md, "Hostile clients").
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// From accept to the first complete request head: TLS handshake,
    /// protocol detection and the HTTP/2 preface included.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight is closed after this
    /// (HTTP/1.1 keep-alive and HTTP/2 alike, PINGs or not).
    pub idle_timeout: Duration,
    /// A response the client does not read for this long closes the
    /// connection.
    pub send_timeout: Duration,
    /// Serve HTTP/2 with prior knowledge on plain listeners.
    pub h2c: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_streams: u32,
    /// Control frames (PING, SETTINGS, RST_STREAM, PRIORITY, empty
    /// frames) per second per connection before GOAWAY (0 = no limit).
    pub h2_control_frames_per_second: u32,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Human-readable.
    Text,
}

/// The parsed config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Peers whose `X-Forwarded-*` / `X-Original-*` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The header trusted proxies name the client in.
    pub forwarded_header: portcullis_core::net::ForwardedHeader,
    /// Slow clients are cut off after this.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Largest body on Portcullis's own endpoints.
    pub max_body_bytes: usize,
    /// Open connections at most, per listener.
    pub max_connections: usize,
    /// Open connections at most from one client address (0 = no cap).
    pub max_connections_per_ip: usize,
    /// Hosts requests may be addressed to (empty = any).
    pub trusted_hosts: portcullis_core::host::TrustedHosts,
    /// Time allowed for a whole request body to arrive.
    pub body_read_timeout: Duration,
    /// Deadlines and HTTP/2 limits of each connection.
    pub conn: ConnLimits,
    /// Open connections to one upstream at most (requests beyond wait).
    pub upstream_max_connections: usize,
    /// How long a request waits for an upstream connection before 503.
    pub upstream_queue_timeout: Duration,
    /// TLS, when Portcullis terminates it.
    pub tls: Option<TlsConfig>,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// The global CORS policy.
    pub cors: Option<std::sync::Arc<portcullis_core::cors::Cors>>,
    /// Headers added to responses.
    pub security_headers: SecurityHeaders,
    /// How long in-flight requests get on SIGTERM.
    pub shutdown_grace: Duration,
    /// `sqlite://…`
    pub store_url: String,
    /// Credential names.
    pub names: CredentialNames,
    /// Verifier tuning.
    pub verifier: portcullis::auth::verifier::VerifierConfig,
    /// Log level filter.
    pub log_level: String,
    /// Log level of the libraries underneath (hyper, h2, sqlx, tower):
    /// `None` keeps them at info or quieter.
    pub dependency_log_level: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// One line per request.
    pub access_log: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// Users, tokens and sessions.
    pub identity: IdentityConfig,
    /// Rate limiting.
    pub rate_limit: RateLimitConfig,
}

fn dur(path: &str, v: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s)
            .map(|n| Duration::from_secs(n as u64))
            .map_err(|e| cerr(path, e.to_string())),
    }
}

fn addr(path: &str, v: &Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = v.as_deref().unwrap_or(default);
    s.parse()
        .map_err(|_| cerr(path, format!("{s:?} is not an address like 127.0.0.1:8080")))
}

/// Reads a config file (or the built-in defaults when `path` is `None`),
/// applies environment overrides from `env`, and parses it.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let (text, source) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| {
                cerr(
                    p.display().to_string(),
                    format!("cannot read the config file: {e}"),
                )
            })?,
            p.display().to_string(),
        ),
        None => (String::new(), "built-in defaults".to_owned()),
    };
    load_str(&text, &source, env)
}

/// Reads a config from its text; `source` names it in errors.
pub fn load_str(text: &str, source: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let source = source.to_owned();
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| cerr(&source, format!("not valid TOML: {}", e.message())))?;
    apply_env(&mut table, env)?;
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let p = e.path().to_string();
            cerr(
                if p == "." { source.clone() } else { p },
                without_values(e.inner().message()),
            )
        })?;
    let secret_var = raw
        .tokens
        .secret_env
        .clone()
        .unwrap_or_else(|| "PORTCULLIS_JWT_SECRET".into());
    check_env_names(env, &secret_var)?;
    parse(raw, env)
}

/// The config's sections, as `PORTCULLIS_<SECTION>__<KEY>` names them.
const SECTIONS: &[&str] = &[
    "server",
    "store",
    "credentials",
    "cache",
    "log",
    "upstream",
    "tokens",
    "sessions",
    "brute_force",
    "rate_limit",
    "tls",
    "cors",
    "security_headers",
];

/// Refuses `PORTCULLIS_*` variables Portcullis does not read: a typo
/// (`PORTCULLIS_SERVER_LISTEN`, one underscore) must not be ignored
/// silently. `PORTCULLIS_<SECTION>__<KEY>` names are checked by the
/// config reader itself; the others must be `PORTCULLIS_CONFIG` or the
/// HS256 secret's variable (and its `_FILE`).
fn check_env_names(env: &[(String, String)], secret_var: &str) -> Result<(), ConfigError> {
    let file_var = format!("{secret_var}_FILE");
    for (k, _) in env {
        let Some(rest) = k.strip_prefix("PORTCULLIS_") else {
            continue;
        };
        if rest.contains("__") || k == "PORTCULLIS_CONFIG" || k == secret_var || *k == file_var {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let hint = SECTIONS
            .iter()
            .filter(|s| lower.starts_with(&format!("{s}_")))
            .max_by_key(|s| s.len())
            .map(|s| {
                format!(
                    "PORTCULLIS_{}__{}",
                    s.to_ascii_uppercase(),
                    &rest[s.len() + 1..]
                )
            })
            .unwrap_or_else(|| {
                let known = ["PORTCULLIS_CONFIG", secret_var, file_var.as_str()];
                known
                    .iter()
                    .min_by_key(|n| edit_distance(k, n))
                    .map_or_else(String::new, |n| (*n).to_owned())
            });
        return Err(cerr(
            k.as_str(),
            format!(
                "not a variable Portcullis reads; did you mean {hint}? (settings are PORTCULLIS_<SECTION>__<KEY>, two underscores)"
            ),
        ));
    }
    Ok(())
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            let del = prev[j + 1] + 1;
            let ins = cur[j] + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A serde message without the value it quotes (`invalid type: string
/// "…", expected u64`): a secret pasted under the wrong key must not be
/// printed back.
fn without_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("string \"") {
        let (head, tail) = rest.split_at(i + "string \"".len());
        out.push_str(head);
        match tail.rfind("\", expected") {
            Some(j) => {
                out.push('…');
                rest = &tail[j..];
            }
            None => {
                out.push_str("…\"");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// `PORTCULLIS_SERVER__LISTEN=…` sets `server.listen`. Values are read as
/// TOML when they parse (numbers, booleans, arrays) and as strings otherwise.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("PORTCULLIS_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section == "routes" {
            return Err(cerr(
                k,
                "routes cannot be set from the environment; write them in the config file",
            ));
        }
        let value = format!("v = {v}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(t) = entry.as_table_mut() else {
            return Err(cerr(k, format!("{section} is not a section")));
        };
        t.insert(key, value);
    }
    Ok(())
}

fn secs(path: &str, v: &Option<String>, default: i64) -> Result<i64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|e| cerr(path, e.to_string())),
    }
}

fn parse_identity(
    raw: &RawConfig,
    listen: SocketAddr,
    env: &[(String, String)],
) -> Result<IdentityConfig, ConfigError> {
    use portcullis::auth::jwt::{Grants, JwksSource, SigningAlg, TokenSettings, TrustedIssuer};
    let t = &raw.tokens;
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
        let var = t
            .secret_env
            .clone()
            .unwrap_or_else(|| "PORTCULLIS_JWT_SECRET".into());
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
    let tokens = TokenSettings {
        issuer,
        audience,
        access_ttl,
        refresh_ttl,
        alg,
        hs_secret,
        leeway,
        trusted,
        grants,
    };

    let se = &raw.sessions;
    let mut sessions = portcullis::auth::identity::SessionSettings {
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

    let b = &raw.brute_force;
    let throttle = portcullis::auth::throttle::ThrottleSettings {
        per_account_ip: b.per_account_ip.unwrap_or(5).max(1),
        per_ip: b.per_ip.unwrap_or(20).max(1),
        per_account_slow: b.per_account_slow.unwrap_or(10).max(1),
        max_lockout: secs("brute_force.max_lockout", &b.max_lockout, 900)?.max(1),
    };
    let hash_parallelism = b
        .hash_parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    Ok(IdentityConfig {
        tokens,
        sessions,
        throttle,
        hash_parallelism: hash_parallelism.max(1),
    })
}

fn policy(path: &str, v: Option<&str>) -> Result<Option<RatePolicy>, ConfigError> {
    match v {
        None | Some("off") => Ok(None),
        Some(s) => RatePolicy::parse(s)
            .map(Some)
            .map_err(|e| cerr(path, e.to_string())),
    }
}

fn parse_rate_limit(r: &RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
    use portcullis::ratelimit::RedisSettings;
    let redis = match r.backend.as_deref().unwrap_or("memory") {
        "memory" => None,
        b if b.starts_with("redis://") || b.starts_with("rediss://") => {
            if b.starts_with("rediss://") {
                return Err(cerr(
                    "rate_limit.backend",
                    "TLS to Redis (rediss://) is not supported in this version; reach Redis over loopback or a private network",
                ));
            }
            let mut s = RedisSettings::new(b);
            if let Some(ms) = r.timeout_ms {
                if !(1..=5000).contains(&ms) {
                    return Err(cerr("rate_limit.timeout_ms", "must be 1 to 5000"));
                }
                s.timeout = Duration::from_millis(ms);
            }
            if let Some(n) = r.breaker_threshold {
                if n == 0 {
                    return Err(cerr("rate_limit.breaker_threshold", "must be at least 1"));
                }
                s.breaker_threshold = n;
            }
            s.breaker_cooldown = dur(
                "rate_limit.breaker_cooldown",
                &r.breaker_cooldown,
                s.breaker_cooldown,
            )?;
            if let Some(p) = &r.key_prefix {
                s.key_prefix = p.clone();
            }
            // Parse the URL now, so a bad one stops start-up; the message
            // never repeats the URL (it may hold a password).
            portcullis::ratelimit::RedisLimiter::check_url(&s.url)
                .map_err(|e| cerr("rate_limit.backend", e.to_string()))?;
            Some(s)
        }
        _ => {
            return Err(cerr(
                "rate_limit.backend",
                "use \"memory\" or a redis://host:port URL",
            ));
        }
    };
    let on_backend_error = match r.on_backend_error.as_deref() {
        None => portcullis::ratelimit::OnBackendError::default(),
        Some(s) => s
            .parse()
            .map_err(|e: String| cerr("rate_limit.on_backend_error", e))?,
    };
    if redis.is_none() && r.on_backend_error.is_some() {
        return Err(cerr(
            "rate_limit.on_backend_error",
            "applies only with a Redis backend",
        ));
    }
    Ok(RateLimitConfig {
        default: policy("rate_limit.default", r.default.as_deref())?,
        legacy_headers: r.legacy_headers.unwrap_or(false),
        max_counters: r.max_counters.unwrap_or(1_000_000).max(1000),
        redis,
        on_backend_error,
        auth_endpoints: policy(
            "rate_limit.auth_endpoints",
            Some(r.auth_endpoints.as_deref().unwrap_or("60/minute")),
        )?,
    })
}

fn parse(raw: RawConfig, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let s = &raw.server;
    let listen = addr("server.listen", &s.listen, "127.0.0.1:8080")?;
    let admin_listen = addr("server.admin_listen", &s.admin_listen, "127.0.0.1:8081")?;
    if listen == admin_listen {
        return Err(cerr(
            "server.admin_listen",
            "must differ from server.listen: the admin API never shares the public listener",
        ));
    }
    let trusted_proxies = s
        .trusted_proxies
        .clone()
        .unwrap_or_else(|| vec!["127.0.0.1/32".into(), "::1/128".into()])
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.parse::<Cidr>()
                .map_err(|e| cerr(format!("server.trusted_proxies[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let forwarded_header = match s.forwarded_header.as_deref() {
        None => portcullis_core::net::ForwardedHeader::default(),
        Some(h) => portcullis_core::net::ForwardedHeader::parse(h).ok_or_else(|| {
            cerr(
                "server.forwarded_header",
                "use \"x-forwarded-for\" or \"forwarded\" (the one your proxy sets)",
            )
        })?,
    };
    let max_header_bytes = s.max_header_bytes.unwrap_or(16 * 1024);
    if !(8192..=1024 * 1024).contains(&max_header_bytes) {
        return Err(cerr(
            "server.max_header_bytes",
            "must be between 8192 and 1048576",
        ));
    }
    let max_body_bytes = s.max_body_bytes.unwrap_or(64 * 1024);
    let max_connections = s.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        return Err(cerr("server.max_connections", "must be at least 1"));
    }

    let store_url = raw
        .store
        .url
        .clone()
        .unwrap_or_else(|| "sqlite://portcullis.db".into());
    if !store_url.starts_with("sqlite:") {
        return Err(cerr(
            "store.url",
            "only sqlite://PATH is supported in this version",
        ));
    }

    let c = &raw.credentials;
    let header = c
        .api_key_header
        .clone()
        .unwrap_or_else(|| "X-API-Key".into());
    let header = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
        cerr(
            "credentials.api_key_header",
            format!("{header:?} is not a header name"),
        )
    })?;
    if [
        http::header::AUTHORIZATION,
        http::header::COOKIE,
        http::header::HOST,
    ]
    .contains(&header)
    {
        return Err(cerr(
            "credentials.api_key_header",
            "must not be Authorization, Cookie or Host",
        ));
    }
    let names = CredentialNames {
        header,
        query: nonempty(
            "credentials.api_key_query",
            c.api_key_query.clone(),
            "api_key",
        )?,
        cookie: nonempty(
            "credentials.api_key_cookie",
            c.api_key_cookie.clone(),
            "api_key",
        )?,
        ..CredentialNames::default()
    };
    let allow_query = c.allow_query_keys.unwrap_or(false);

    let mut verifier = portcullis::auth::verifier::VerifierConfig::default();
    let cache = &raw.cache;
    verifier.negative_ttl = dur(
        "cache.negative_ttl",
        &cache.negative_ttl,
        verifier.negative_ttl,
    )?;
    verifier.positive_ttl = dur(
        "cache.positive_ttl",
        &cache.positive_ttl,
        verifier.positive_ttl,
    )?;
    verifier.touch_interval = dur(
        "cache.last_used_interval",
        &cache.last_used_interval,
        verifier.touch_interval,
    )?;
    if let Some(ms) = cache.sync_interval_ms {
        if !(10..=1000).contains(&ms) {
            return Err(cerr(
                "cache.sync_interval_ms",
                "must be between 10 and 1000: it bounds how long a revoked key can still pass",
            ));
        }
        verifier.sync_interval = Duration::from_millis(ms);
    }
    if verifier.touch_interval.is_zero() {
        return Err(cerr("cache.last_used_interval", "must be at least 1s"));
    }

    let log_format = match raw.log.format.as_deref().unwrap_or("json") {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            return Err(cerr(
                "log.format",
                format!("{other:?}: use \"json\" or \"text\""),
            ));
        }
    };
    let log_level = raw.log.level.clone().unwrap_or_else(|| "info".into());
    let levels = ["trace", "debug", "info", "warn", "error"];
    if !levels.contains(&log_level.as_str()) {
        return Err(cerr("log.level", "use trace, debug, info, warn or error"));
    }
    let dependency_log_level = raw.log.dependency_level.clone();
    if let Some(l) = &dependency_log_level
        && !levels.contains(&l.as_str())
    {
        return Err(cerr(
            "log.dependency_level",
            "use trace, debug, info, warn or error",
        ));
    }

    let connect_timeout = dur(
        "upstream.connect_timeout",
        &raw.upstream.connect_timeout,
        Duration::from_secs(5),
    )?;
    let default_timeout = dur(
        "upstream.timeout",
        &raw.upstream.timeout,
        Duration::from_secs(30),
    )?;

    let rate_limit = parse_rate_limit(&raw.rate_limit)?;
    let max_proxied_body = raw.upstream.max_body_bytes.unwrap_or(10 * 1024 * 1024);
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let route = parse_route(i, r, allow_query, default_timeout, max_proxied_body)?;
        check_cost(
            &format!("routes[{i}].cost"),
            route.cost,
            route.rate_limit.as_ref().or(rate_limit.default.as_ref()),
        )?;
        // Paths are matched without regard to ASCII case (an upstream may
        // route `/ADMIN` to `/admin`): two spellings of one pattern would
        // silently become one.
        if let Some(other) = routes.iter().find(|o: &&Route| {
            o.pattern != route.pattern && o.pattern.folded() == route.pattern.folded()
        }) {
            return Err(cerr(
                format!("routes[{i}].path"),
                format!(
                    "{:?} differs from routes[{}].path {:?} only in letter case or a trailing slash; paths are matched without regard to either, so write one spelling",
                    route.path, other.index, other.path
                ),
            ));
        }
        routes.push(route);
    }

    Ok(Config {
        listen,
        admin_listen,
        trusted_proxies,
        forwarded_header,
        header_read_timeout: dur(
            "server.header_read_timeout",
            &s.header_read_timeout,
            Duration::from_secs(10),
        )?,
        max_header_bytes,
        max_body_bytes,
        max_connections,
        max_connections_per_ip: s.max_connections_per_ip.unwrap_or(256),
        trusted_hosts: portcullis_core::host::TrustedHosts::parse(
            s.trusted_hosts.as_deref().unwrap_or_default(),
        )
        .map_err(|e| cerr("server", e.to_string()))?,
        body_read_timeout: positive(
            dur(
                "server.body_read_timeout",
                &s.body_read_timeout,
                Duration::from_secs(30),
            )?,
            "server.body_read_timeout",
        )?,
        conn: ConnLimits {
            first_request_timeout: positive(
                dur(
                    "server.first_request_timeout",
                    &s.first_request_timeout,
                    Duration::from_secs(10),
                )?,
                "server.first_request_timeout",
            )?,
            idle_timeout: positive(
                dur(
                    "server.idle_timeout",
                    &s.idle_timeout,
                    Duration::from_secs(60),
                )?,
                "server.idle_timeout",
            )?,
            send_timeout: positive(
                dur(
                    "server.send_timeout",
                    &s.send_timeout,
                    Duration::from_secs(30),
                )?,
                "server.send_timeout",
            )?,
            h2c: s.h2c.unwrap_or(false),
            h2_max_streams: match s.h2_max_streams {
                Some(0) => return Err(cerr("server.h2_max_streams", "must be at least 1")),
                Some(n) => n,
                None => 100,
            },
            h2_control_frames_per_second: s.h2_control_frames_per_second.unwrap_or(100),
        },
        upstream_max_connections: match raw.upstream.max_connections {
            Some(0) => return Err(cerr("upstream.max_connections", "must be at least 1")),
            Some(n) => n,
            None => 512,
        },
        upstream_queue_timeout: dur(
            "upstream.queue_timeout",
            &raw.upstream.queue_timeout,
            Duration::from_secs(5),
        )?,
        tls_handshake_timeout: positive(
            dur(
                "tls.handshake_timeout",
                &raw.tls.as_ref().and_then(|t| t.handshake_timeout.clone()),
                Duration::from_secs(10),
            )?,
            "tls.handshake_timeout",
        )?,
        tls: parse_tls(raw.tls.as_ref(), listen, admin_listen)?,
        cors: parse_cors("cors", raw.cors.as_ref())?,
        security_headers: parse_security_headers(&raw.security_headers)?,
        shutdown_grace: dur(
            "server.shutdown_grace",
            &s.shutdown_grace,
            Duration::from_secs(30),
        )?,
        store_url,
        names,
        verifier,
        log_level,
        dependency_log_level,
        log_format,
        access_log: raw.log.access_log.unwrap_or(true),
        connect_timeout,
        routes,
        identity: parse_identity(&raw, listen, env)?,
        rate_limit,
    })
}

fn positive(d: Duration, path: &str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(cerr(path, "must be at least 1s"));
    }
    Ok(d)
}

fn parse_tls(
    t: Option<&RawTls>,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<Option<TlsConfig>, ConfigError> {
    let Some(t) = t else { return Ok(None) };
    if t.cert.is_empty() || t.key.is_empty() {
        return Err(cerr("tls", "cert and key must name PEM files"));
    }
    let redirect_http_from = match &t.redirect_http_from {
        None => None,
        Some(a) => {
            let a = addr("tls.redirect_http_from", &Some(a.clone()), "")?;
            if a == listen || a == admin_listen {
                return Err(cerr(
                    "tls.redirect_http_from",
                    "must differ from server.listen and server.admin_listen",
                ));
            }
            Some(a)
        }
    };
    let redirect_host = match &t.redirect_host {
        None => None,
        Some(h) => {
            portcullis_core::host::check_authority(
                &portcullis_core::host::TrustedHosts::default(),
                h,
            )
            .map_err(|_| {
                cerr(
                    "tls.redirect_host",
                    format!(
                        "{h:?} is not a host name (a name, optionally :port, no scheme or path)"
                    ),
                )
            })?;
            Some(h.to_ascii_lowercase())
        }
    };
    let max_age = secs("tls.hsts_max_age", &t.hsts_max_age, 2 * 365 * 86_400)?;
    if max_age < 365 * 86_400 {
        return Err(cerr(
            "tls.hsts_max_age",
            "must be at least 365d: shorter HSTS leaves first visits after expiry open to downgrade",
        ));
    }
    let sub = t.hsts_include_subdomains.unwrap_or(false);
    let preload = t.hsts_preload.unwrap_or(false);
    if preload && (!sub || max_age < 365 * 86_400) {
        return Err(cerr(
            "tls.hsts_preload",
            "preload lists require hsts_include_subdomains = true",
        ));
    }
    let mut hsts = format!("max-age={max_age}");
    if sub {
        hsts.push_str("; includeSubDomains");
    }
    if preload {
        hsts.push_str("; preload");
    }
    Ok(Some(TlsConfig {
        cert: t.cert.clone().into(),
        key: t.key.clone().into(),
        redirect_http_from,
        redirect_host,
        hsts: http::HeaderValue::from_str(&hsts)
            .map_err(|_| cerr("tls.hsts_max_age", "not a header value"))?,
    }))
}

fn parse_cors(
    path: &str,
    c: Option<&RawCors>,
) -> Result<Option<std::sync::Arc<portcullis_core::cors::Cors>>, ConfigError> {
    let Some(c) = c else { return Ok(None) };
    let cfg = portcullis_core::cors::CorsConfig {
        allow_origins: c.allow_origins.clone(),
        allow_methods: c.allow_methods.clone().unwrap_or_default(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        allow_credentials: c.allow_credentials,
        allow_private_network: c.allow_private_network,
        max_age: c.max_age,
    };
    portcullis_core::cors::Cors::new(&cfg)
        .map(|c| Some(std::sync::Arc::new(c)))
        .map_err(|e| cerr(format!("{path}.{}", e.field()), e.message()))
}

fn parse_security_headers(r: &RawSecurityHeaders) -> Result<SecurityHeaders, ConfigError> {
    let mut proxied = Vec::new();
    for (k, v) in &r.proxied {
        let at = format!("security_headers.proxied.{k}");
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| cerr(&at, "not a header name"))?;
        if name.as_str().starts_with("access-control-")
            || [
                http::header::SET_COOKIE,
                http::header::CONTENT_LENGTH,
                http::header::TRANSFER_ENCODING,
                http::header::CONNECTION,
            ]
            .contains(&name)
        {
            return Err(cerr(
                &at,
                "this header is Portcullis's or the upstream's to set (CORS comes from [cors])",
            ));
        }
        let value = http::HeaderValue::from_str(v).map_err(|_| cerr(&at, "not a header value"))?;
        proxied.push((name, value));
    }
    Ok(SecurityHeaders {
        proxied,
        overwrite: r.overwrite.unwrap_or(false),
    })
}

fn nonempty(path: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    let v = v.unwrap_or_else(|| default.into());
    if v.is_empty() || v.contains([';', '=', ' ', '&']) {
        return Err(cerr(
            path,
            "must be a non-empty name without ';', '=', '&' or spaces",
        ));
    }
    Ok(v)
}

fn parse_route(
    i: usize,
    r: &RawRoute,
    allow_query: bool,
    default_timeout: Duration,
    default_max_body: usize,
) -> Result<Route, ConfigError> {
    let at = |k: &str| format!("routes[{i}].{k}");
    let pattern = PathPattern::parse(&r.path).map_err(|e| cerr(at("path"), e.to_string()))?;
    let methods = match &r.methods {
        None => None,
        Some(ms) if ms.is_empty() => {
            return Err(cerr(
                at("methods"),
                "an empty list allows nothing; leave it out to allow every method",
            ));
        }
        Some(ms) => Some(
            ms.iter()
                .map(|m| {
                    let up = m.to_ascii_uppercase();
                    match up.as_str() {
                        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
                            Method::from_bytes(up.as_bytes())
                                .map_err(|_| cerr(at("methods"), format!("{m:?} is not a method")))
                        }
                        _ => Err(cerr(
                            at("methods"),
                            format!(
                                "{m:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
                            ),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let upstream = if r.upstream == "demo" {
        Upstream::Demo
    } else {
        let u: http::Uri = r
            .upstream
            .parse()
            .map_err(|_| cerr(at("upstream"), format!("{:?} is not a URL", r.upstream)))?;
        if u.scheme_str() != Some("http") {
            return Err(cerr(
                at("upstream"),
                "use http://HOST:PORT (or \"demo\"); https:// upstreams are not supported yet: keep the upstream on loopback or a private network",
            ));
        }
        let Some(auth) = u.authority() else {
            return Err(cerr(at("upstream"), "the URL needs a host"));
        };
        if auth.as_str().contains('@') {
            return Err(cerr(
                at("upstream"),
                "credentials in the upstream URL are not allowed",
            ));
        }
        if u.query().is_some() {
            return Err(cerr(
                at("upstream"),
                "the upstream URL must not have a query",
            ));
        }
        Upstream::Http {
            origin: format!("http://{auth}"),
            base_path: u.path().trim_end_matches('/').to_owned(),
        }
    };
    let mut schemes = Vec::new();
    for (j, a) in r.auth.iter().enumerate() {
        let p = format!("routes[{i}].auth[{j}]");
        let s = Scheme::from_name(a).ok_or_else(|| cerr(&p, format!("{a:?} is not a scheme; use api_key_header, api_key_query, api_key_cookie, bearer, basic or session")))?;
        match s {
            Scheme::ApiKeyQuery if !allow_query => {
                return Err(cerr(
                    &p,
                    "api_key_query is off: keys in URLs end up in access logs, browser history and Referer headers. Set credentials.allow_query_keys = true to accept them anyway",
                ));
            }
            _ => {}
        }
        schemes.push(s);
    }
    let scopes = Scopes::from_iter_checked(r.scopes.iter().map(String::as_str))
        .map_err(|e| cerr(at("scopes"), e.to_string()))?;
    if schemes.is_empty() && !scopes.is_empty() {
        return Err(cerr(
            at("scopes"),
            "a public route (auth = []) cannot require scopes",
        ));
    }
    Ok(Route {
        index: i,
        path: r.path.clone(),
        pattern,
        methods,
        upstream,
        policy: Policy {
            schemes: SchemeSet::new(&schemes),
            scopes,
        },
        max_body_bytes: r.max_body_bytes.unwrap_or(default_max_body),
        cors: parse_cors(&at("cors"), r.cors.as_ref())?,
        forward_override_headers: r.forward_override_headers,
        timeout: dur(&at("timeout"), &r.timeout, default_timeout)?,
        rate_limit: policy(&at("rate_limit"), r.rate_limit.as_deref())?,
        rate_limit_by: match r.rate_limit_by.as_deref() {
            None => LimitBy::Caller,
            Some(o) => o
                .parse()
                .map_err(|e: String| cerr(at("rate_limit_by"), e))?,
        },
        cost: match r.cost {
            None => 1,
            Some(0) => return Err(cerr(at("cost"), "must be at least 1")),
            Some(c) => c,
        },
    })
}

/// A cost above a limit's burst could never be admitted: refused at start.
fn check_cost(path: &str, cost: u32, p: Option<&RatePolicy>) -> Result<(), ConfigError> {
    match p.and_then(|p| p.limits().iter().find(|l| l.burst < cost)) {
        Some(l) => Err(cerr(
            path,
            format!(
                "{cost} is more than the burst of {l}, so no request could ever pass; raise the limit or its burst"
            ),
        )),
        None => Ok(()),
    }
}

/// The explanation `portcullis config check` prints.
pub fn explain(c: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "listen        {}", c.listen);
    let _ = writeln!(s, "admin_listen  {}", c.admin_listen);
    let _ = writeln!(
        s,
        "store         {}",
        portcullis::store::redact_url(&c.store_url)
    );
    let tp: Vec<String> = c.trusted_proxies.iter().map(|t| format!("{t:?}")).collect();
    let _ = writeln!(
        s,
        "trusted proxies: {}",
        if tp.is_empty() {
            "none".into()
        } else {
            c.trusted_proxies.len().to_string()
        }
    );
    let _ = writeln!(s, "routes ({}):", c.routes.len());
    for r in &c.routes {
        let methods = r.methods.as_ref().map_or("any method".to_owned(), |m| {
            m.iter().map(Method::as_str).collect::<Vec<_>>().join(",")
        });
        let auth = if r.policy.schemes.is_public() {
            "public (no credential)".to_owned()
        } else {
            format!(
                "one of {}",
                r.policy
                    .schemes
                    .schemes()
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let scopes = if r.policy.scopes.is_empty() {
            "none".to_owned()
        } else {
            r.policy.scopes.to_space_separated()
        };
        let up = match &r.upstream {
            Upstream::Demo => "built-in demo".to_owned(),
            Upstream::Http { origin, base_path } => format!("{origin}{base_path}"),
        };
        let _ = writeln!(
            s,
            "  [{}] {} {}\n      auth: {}\n      scopes: {}\n      upstream: {} (timeout {}s)",
            r.index,
            methods,
            r.path,
            auth,
            scopes,
            up,
            r.timeout.as_secs()
        );
    }
    if c.routes.is_empty() {
        let _ = writeln!(s, "  none: every request gets 404");
    }
    s
}

/// The config reader, searched: generated files built from every section
/// and key with hostile values never panic, and every refusal is one line
/// naming where.
#[cfg(test)]
mod props {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[(&str, &[&str])] = &[
        (
            "server",
            &[
                "listen",
                "admin_listen",
                "trusted_hosts",
                "trusted_proxies",
                "forwarded_header",
                "header_read_timeout",
                "max_header_bytes",
                "max_body_bytes",
                "max_connections",
                "max_connections_per_ip",
                "body_read_timeout",
                "shutdown_grace",
            ],
        ),
        ("store", &["url"]),
        (
            "credentials",
            &[
                "header_name",
                "query_name",
                "cookie_name",
                "allow_query_keys",
            ],
        ),
        (
            "cache",
            &["sync_interval_ms", "negative_ttl", "max_entries"],
        ),
        ("log", &["level", "format", "access_log"]),
        (
            "upstream",
            &["timeout", "connect_timeout", "max_body_bytes"],
        ),
        (
            "tokens",
            &[
                "issuer",
                "audience",
                "access_ttl",
                "refresh_ttl",
                "algorithm",
                "secret_env",
                "grants",
            ],
        ),
        ("sessions", &["idle_ttl", "absolute_ttl", "same_site"]),
        (
            "rate_limit",
            &[
                "backend",
                "on_backend_error",
                "default",
                "auth_endpoints",
                "max_counters",
            ],
        ),
        (
            "cors",
            &[
                "allow_origins",
                "allow_methods",
                "allow_headers",
                "expose_headers",
                "allow_credentials",
                "max_age",
            ],
        ),
        ("tls", &["cert", "key", "redirect_http_from", "hsts"]),
        ("security_headers", &["overwrite"]),
    ];
    const ROUTE_KEYS: &[&str] = &[
        "path",
        "methods",
        "upstream",
        "auth",
        "scopes",
        "timeout",
        "rate_limit",
        "rate_limit_by",
        "cost",
        "max_body_bytes",
        "forward_override_headers",
        "cors",
    ];
    const VALUES: &[&str] = &[
        "\"\"",
        "\"x\"",
        "0",
        "-1",
        "18446744073709551616",
        "1e308",
        "true",
        "[]",
        "[\"\"]",
        "\"/**\"",
        "\"/a/../b\"",
        "\"/a;b\"",
        "\"/%2F\"",
        "\"/W/**\"",
        "\"/w/**\"",
        "\"demo\"",
        "\"http://127.0.0.1:1\"",
        "\"http://u:p@h:1\"",
        "\"https://h\"",
        "\"ftp://h\"",
        "\"127.0.0.1:0\"",
        "\"[::1]:99999\"",
        "\"0s\"",
        "\"99999999999999d\"",
        "\"1ms\"",
        "\"5m\"",
        "\"100/minute\"",
        "\"0/second\"",
        "\"5000/second\"",
        "\"1/day; 2/day burst 0\"",
        "[\"api_key_header\", \"bearer\"]",
        "[\"nope\"]",
        "[\"GET\", \"BREW\"]",
        "[\"*\"]",
        "[\"null\"]",
        "[\"https://a.example\"]",
        "[\"127.0.0.1/33\"]",
        "[\"::/0\"]",
        "\"sqlite://\"",
        "\"postgres://u:secret@h/db\"",
        "\"redis://\"",
        "\"deny\"",
        "\"\\u0000\"",
        "\"caf\u{e9}\"",
        "{ allow_origins = [\"*\"], allow_credentials = true }",
    ];

    fn line() -> impl Strategy<Value = String> {
        (
            prop::sample::select(KEYS),
            any::<prop::sample::Index>(),
            prop::sample::select(VALUES),
        )
            .prop_map(|((t, ks), i, v)| format!("[{t}]\n{} = {v}\n", i.get(ks)))
    }

    fn route() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                prop::sample::select(ROUTE_KEYS),
                prop::sample::select(VALUES),
            ),
            0..6,
        )
        .prop_map(|kv| {
            let mut s = "[[routes]]\n".to_owned();
            let mut seen = std::collections::HashSet::new();
            for (k, v) in kv {
                if seen.insert(k) {
                    s.push_str(&format!("{k} = {v}\n"));
                }
            }
            s
        })
    }

    #[test]
    fn unknown_portcullis_variables_are_refused_with_a_hint() {
        let env = |k: &str| vec![(k.to_owned(), "x".to_owned())];
        let e = load_str("", "t", &env("PORTCULLIS_SERVER_LISTEN")).unwrap_err();
        assert!(e.message.contains("PORTCULLIS_SERVER__LISTEN"), "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_RATE_LIMIT_BACKEND")).unwrap_err();
        assert!(e.message.contains("PORTCULLIS_RATE_LIMIT__BACKEND"), "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_CONFG")).unwrap_err();
        assert!(e.message.contains("PORTCULLIS_CONFIG"), "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_ROUTES")).unwrap_err();
        assert_eq!(e.path, "PORTCULLIS_ROUTES", "{e}");
        let e = load_str("", "t", &env("PORTCULLIS_SERVER__LISTN")).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        for fine in [
            "PORTCULLIS_CONFIG",
            "PORTCULLIS_JWT_SECRET",
            "PORTCULLIS_JWT_SECRET_FILE",
            "OTHER_THING",
        ] {
            assert!(load_str("", "t", &env(fine)).is_ok(), "{fine}");
        }
    }

    #[test]
    fn passwords_in_urls_are_not_echoed() {
        assert_eq!(
            without_passwords(
                "bad \"postgres://u:pw@h:5/db\" and redis://:x@r/0 and http://h:1/a@b"
            ),
            "bad \"postgres://[REDACTED]@h:5/db\" and redis://[REDACTED]@r/0 and http://h:1/a@b"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

        #[test]
        fn any_config_is_read_or_refused_in_one_line(
            parts in prop::collection::vec(prop_oneof![line(), route()], 0..8),
        ) {
            // A table may appear once in TOML: keep the first of each.
            let mut seen = std::collections::HashSet::new();
            let text: String = parts
                .into_iter()
                .filter(|p| p.starts_with("[[") || seen.insert(p.lines().next().unwrap_or("").to_owned()))
                .collect();
            match load_str(&text, "generated.toml", &[]) {
                Ok(c) => {
                    let _ = explain(&c);
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(!msg.contains('\n'), "two lines for {:?}: {}", text, msg);
                    prop_assert!(!e.path.is_empty(), "no place named for {:?}: {}", text, msg);
                    prop_assert!(!msg.contains("secret@"), "a password echoed: {}", msg);
                }
            }
        }
    }
}
