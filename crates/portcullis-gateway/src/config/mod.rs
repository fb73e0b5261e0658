//! The config file: TOML, unknown keys refused, `PORTCULLIS_<SECTION>__<KEY>`
//! environment overrides, then parsed into the types the server runs on.
//! A bad config names the key path and the problem.
//!
//! Each section of the file (docs/configuration.md) has its module, which
//! declares its keys and reads them. This module reads the text, applies
//! the environment ([`env`]), calls the sections in one fixed order (the
//! first error found is the one reported) and holds the rules that span
//! sections:
//!
//! - a route's `cost` must fit the burst of its limit, the route's own or
//!   `rate_limit.default` ([`check_cost`]);
//! - routes take `upstream`'s defaults and `credentials.allow_query_keys`;
//! - `tokens.issuer` defaults to the URL of `server.listen`;
//! - `tls.redirect_http_from` must differ from both `[server]` listeners
//!   (checked by [`tls::parse`], which is given them, so that the section's
//!   errors keep their order).

mod abuse;
mod analytics;
pub use abuse::address_block;
mod cache;
mod console;
mod cors;
mod credentials;
mod env;
mod error;
mod explain;
mod identity;
mod log;
mod metrics;
#[cfg(test)]
mod props;
mod ratelimit;
mod routes;
mod security_headers;
mod server;
mod store;
mod tls;
mod upstream;
mod value;

use error::{cerr, without_values};
use portcullis_core::credential::CredentialNames;
use portcullis_core::net::Cidr;
use portcullis_core::ratelimit::Policy as RatePolicy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use console::ConsoleConfig;
pub use error::ConfigError;
pub use explain::explain;
pub use identity::IdentityConfig;
pub use log::LogFormat;
pub use metrics::MetricsConfig;
pub use ratelimit::RateLimitConfig;
pub use routes::{Route, Upstream};
pub use security_headers::SecurityHeaders;
pub use server::ConnLimits;
pub use store::StoreUrl;
pub use tls::TlsConfig;

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
    /// Event loops serving the public listener (one per core by default):
    /// each a single-threaded runtime with its own `SO_REUSEPORT` socket.
    pub threads: usize,
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
    /// `sqlite://…` or `postgres://…` (its `Debug` hides the password).
    pub store_url: StoreUrl,
    /// How a networked store is reached (`[store]`).
    pub store_options: portcullis::store::StoreOptions,
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
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Per-key analytics; `None` when `[analytics] enabled = false`.
    pub analytics: Option<portcullis::analytics::AnalyticsConfig>,
    /// The admin console.
    pub console: ConsoleConfig,
    /// Failed credentials per client address, and blocking (`[abuse]`).
    pub abuse: portcullis::pipeline::AbuseSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    credentials: credentials::RawCredentials,
    #[serde(default)]
    cache: cache::RawCache,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    upstream: upstream::RawUpstream,
    #[serde(default)]
    tokens: identity::RawTokens,
    #[serde(default)]
    sessions: identity::RawSessions,
    #[serde(default)]
    brute_force: identity::RawBruteForce,
    #[serde(default)]
    rate_limit: ratelimit::RawRateLimit,
    #[serde(default)]
    routes: Vec<routes::RawRoute>,
    tls: Option<tls::RawTls>,
    cors: Option<cors::RawCors>,
    #[serde(default)]
    security_headers: security_headers::RawSecurityHeaders,
    #[serde(default)]
    metrics: metrics::RawMetrics,
    #[serde(default)]
    analytics: analytics::RawAnalytics,
    #[serde(default)]
    console: console::RawConsole,
    #[serde(default)]
    abuse: abuse::RawAbuse,
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
    env::apply(&mut table, env)?;
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let p = e.path().to_string();
            cerr(
                if p == "." { source.clone() } else { p },
                without_values(e.inner().message()),
            )
        })?;
    env::check_names(env, &raw.tokens.secret_var())?;
    parse(raw, env)
}

/// The sections, read in this order (the first error found is reported,
/// so the order is part of what a user sees).
fn parse(raw: RawConfig, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let listeners = server::listeners(&raw.server)?;
    let store = store::parse(&raw.store, env)?;
    let (names, allow_query) = credentials::parse(&raw.credentials)?;
    let mut verifier = cache::parse(&raw.cache)?;
    verifier.stale_grace = store.stale_grace;
    // A poll or lookup is one connection and one statement at most.
    verifier.store_timeout =
        store.options.connect_timeout + store.options.statement_timeout + Duration::from_secs(1);
    let log = log::parse(&raw.log)?;
    let defaults = upstream::defaults(&raw.upstream)?;
    let rate_limit = ratelimit::parse(&raw.rate_limit)?;
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let route = routes::parse(i, r, allow_query, defaults.timeout, defaults.max_body_bytes)?;
        check_cost(
            &format!("routes[{i}].cost"),
            route.cost,
            route.rate_limit.as_ref().or(rate_limit.default.as_ref()),
        )?;
        routes::check_distinct(&routes, &route)?;
        routes.push(route);
    }
    let connections = server::connections(&raw.server)?;
    let pool = upstream::pool(&raw.upstream)?;
    let tls_handshake_timeout = tls::handshake_timeout(raw.tls.as_ref())?;
    let tls = tls::parse(raw.tls.as_ref(), listeners.listen, listeners.admin_listen)?;
    let cors = cors::parse("cors", raw.cors.as_ref())?;
    let security_headers = security_headers::parse(&raw.security_headers)?;
    let shutdown_grace = server::shutdown_grace(&raw.server)?;
    let identity = identity::parse(
        &raw.tokens,
        &raw.sessions,
        &raw.brute_force,
        listeners.listen,
        env,
    )?;
    let metrics = metrics::parse(&raw.metrics, listeners.listen, listeners.admin_listen)?;
    let analytics = analytics::parse(&raw.analytics)?;
    let console = console::parse(&raw.console)?;
    let abuse = abuse::parse(&raw.abuse)?;
    Ok(Config {
        listen: listeners.listen,
        admin_listen: listeners.admin_listen,
        trusted_proxies: listeners.trusted_proxies,
        forwarded_header: listeners.forwarded_header,
        header_read_timeout: connections.header_read_timeout,
        max_header_bytes: listeners.max_header_bytes,
        max_body_bytes: listeners.max_body_bytes,
        max_connections: listeners.max_connections,
        max_connections_per_ip: connections.max_connections_per_ip,
        threads: connections.threads,
        trusted_hosts: connections.trusted_hosts,
        body_read_timeout: connections.body_read_timeout,
        conn: connections.conn,
        upstream_max_connections: pool.max_connections,
        upstream_queue_timeout: pool.queue_timeout,
        tls_handshake_timeout,
        tls,
        cors,
        security_headers,
        shutdown_grace,
        store_url: store.url,
        store_options: store.options,
        names,
        verifier,
        log_level: log.level,
        dependency_log_level: log.dependency_level,
        log_format: log.format,
        access_log: log.access_log,
        connect_timeout: defaults.connect_timeout,
        routes,
        identity,
        rate_limit,
        metrics,
        analytics,
        console,
        abuse,
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
