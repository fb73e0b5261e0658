//! Trusted issuers: another OpenID provider's access tokens (Auth0,
//! Keycloak, Entra ID, Google, …), verified with its public keys.
//!
//! Keys come from a JWKS file, a `jwks_url`, or the issuer's OpenID
//! Connect discovery document (`{issuer}/.well-known/openid-configuration`,
//! whose `issuer` must equal the configured one exactly, then its
//! `jwks_uri`). Network keys are:
//!
//! - cached for the answer's `Cache-Control: max-age`, clamped to
//!   `[min_refresh, max_refresh]`, and refreshed in the background;
//! - refetched when a token names a `kid` the set lacks (a rotation at the
//!   provider), at most once per `kid_refetch_interval` per issuer, and
//!   concurrent requests share that one fetch: a flood of made-up kids
//!   costs one fetch per interval, however many requests carry them;
//! - kept when a refresh fails (stale-if-error) for `stale_for` past their
//!   expiry; after that the issuer's tokens are refused with 503 (the
//!   token may be good, we cannot tell: an outage of ours, not the
//!   caller's fault — a 401 would send clients to the provider for new
//!   tokens that would fail the same way) and readiness says not ready.
//!
//! The JWKS and discovery JSON are attacker-reachable bytes (whoever
//! answers at that URL): bodies are capped (`jwks_fetch`), every key is
//! checked on its own and a bad one is skipped with a warning, and at most
//! [`MAX_KEYS`] are kept.

use super::jwks_fetch::{FetchError, Fetcher};
use super::jwt::{TokenError, TokenReject, VerifyKey, verify_key};
use jsonwebtoken::Algorithm;
use portcullis_core::Scopes;
use portcullis_core::token::{Audience, ClaimError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// Most keys kept from one JWKS (providers publish two or three).
pub const MAX_KEYS: usize = 64;

/// Longest `stale_for` a config may ask for.
pub const MAX_STALE_FOR: Duration = Duration::from_secs(7 * 86_400);

/// Longest `max_refresh`: keys a provider removed must stop working
/// within a week, as for `stale_for`.
pub const MAX_REFRESH: Duration = MAX_STALE_FOR;

/// Bounds of `kid_refetch_interval`: below a second a flood of made-up
/// kids is a flood of fetches; above a day a rotation waits for the
/// schedule anyway.
pub const REFETCH_INTERVAL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));

/// Longest subject passed on (`X-Portcullis-Principal`, rate-limit keys).
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Issuers that sign tokens for anyone with an account there and for any
/// audience a client asks: trusting one without `allowed_claims` trusts
/// the whole Internet.
const OPEN_ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];

/// Where a trusted issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file, re-read on an unknown `kid`.
    File(PathBuf),
    /// A JWKS URL.
    Url(String),
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discover,
}

/// Which claim holds the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeClaim {
    /// `scope`: one space-separated string (RFC 9068, Auth0, Keycloak).
    Scope,
    /// `scp`: a string or an array of strings (Entra ID, Okta).
    Scp,
    /// `permissions`: an array (Auth0 RBAC).
    Permissions,
    /// Any other claim: a string or an array of strings (e.g. `roles`).
    Named(String),
}

impl ScopeClaim {
    /// From a config name.
    pub fn parse(s: &str) -> Option<ScopeClaim> {
        match s {
            "" => None,
            "scope" => Some(ScopeClaim::Scope),
            "scp" => Some(ScopeClaim::Scp),
            "permissions" => Some(ScopeClaim::Permissions),
            other => Some(ScopeClaim::Named(other.to_owned())),
        }
    }
    fn name(&self) -> &str {
        match self {
            ScopeClaim::Scope => "scope",
            ScopeClaim::Scp => "scp",
            ScopeClaim::Permissions => "permissions",
            ScopeClaim::Named(n) => n,
        }
    }
}

/// Another issuer whose access tokens we accept.
///
/// ```
/// use portcullis::auth::jwt::TrustedIssuer;
/// let t = TrustedIssuer::discover("https://login.example.com")
///     .audience("https://api.example.com")
///     .scope_claim("permissions");
/// assert!(t.check().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// `iss` to expect (exactly).
    pub issuer: String,
    /// `aud` must name one of these.
    pub audiences: Vec<String>,
    /// Algorithms its keys may use (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Its keys.
    pub source: JwksSource,
    /// The least time between two refetches caused by an unknown `kid`.
    pub refetch_interval: Duration,
    /// Network keys are kept at least this long, whatever max-age says.
    pub min_refresh: Duration,
    /// … and at most this long.
    pub max_refresh: Duration,
    /// How long past its expiry a key set keeps serving while the
    /// provider cannot be reached.
    pub stale_for: Duration,
    /// Claims every token must carry (any value but null).
    pub required_claims: Vec<String>,
    /// Claims whose value must be one of those listed (a string equal to
    /// one, or an array holding one): e.g. `hd = ["example.com"]`,
    /// `azp = ["client-a"]`. A token lacking one is refused.
    pub allowed_claims: std::collections::BTreeMap<String, Vec<String>>,
    /// Clock skew on `exp`/`nbf`/`iat`, seconds (≤ 60); `None`: the
    /// token settings' leeway.
    pub leeway: Option<i64>,
    /// The claim that names the principal (`sub`).
    pub subject_claim: String,
    /// The claim that holds the scopes.
    pub scope_claim: ScopeClaim,
    /// Header `typ` values accepted (case-insensitive, `application/`
    /// optional). `at+jwt` by default (RFC 9068); providers that mark
    /// access tokens `JWT` need `["at+jwt", "JWT"]`.
    pub typ: Vec<String>,
    /// A PEM file of the CA certificates that alone are trusted for this
    /// issuer's HTTPS (default: the Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Fetch over plain HTTP too (local tests only).
    pub danger_allow_http: bool,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Deadline for one whole fetch.
    pub fetch_timeout: Duration,
}

impl TrustedIssuer {
    fn new(issuer: &str, source: JwksSource) -> TrustedIssuer {
        TrustedIssuer {
            issuer: issuer.to_owned(),
            audiences: Vec::new(),
            algorithms: vec![Algorithm::RS256],
            source,
            refetch_interval: Duration::from_secs(60),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(86_400),
            stale_for: Duration::from_secs(6 * 3600),
            required_claims: Vec::new(),
            allowed_claims: std::collections::BTreeMap::new(),
            leeway: None,
            subject_claim: "sub".into(),
            scope_claim: ScopeClaim::Scope,
            typ: vec!["at+jwt".into()],
            ca_file: None,
            danger_allow_http: false,
            connect_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(10),
        }
    }
    /// Keys found by OpenID Connect discovery at `issuer`.
    pub fn discover(issuer: &str) -> TrustedIssuer {
        TrustedIssuer::new(issuer, JwksSource::Discover)
    }
    /// Keys from a JWKS URL.
    pub fn jwks_url(issuer: &str, url: &str) -> TrustedIssuer {
        TrustedIssuer::new(issuer, JwksSource::Url(url.to_owned()))
    }
    /// Keys from a JWKS file.
    pub fn jwks_file(issuer: &str, path: impl Into<PathBuf>) -> TrustedIssuer {
        TrustedIssuer::new(issuer, JwksSource::File(path.into()))
    }
    /// Adds an accepted audience.
    pub fn audience(mut self, aud: &str) -> TrustedIssuer {
        self.audiences.push(aud.to_owned());
        self
    }
    /// The accepted algorithms (replacing RS256).
    pub fn algorithms(mut self, algs: &[Algorithm]) -> TrustedIssuer {
        self.algorithms = algs.to_vec();
        self
    }
    /// The claim holding scopes: `scope`, `scp`, `permissions` or a name.
    pub fn scope_claim(mut self, name: &str) -> TrustedIssuer {
        self.scope_claim = ScopeClaim::parse(name).unwrap_or(ScopeClaim::Scope);
        self
    }
    /// The claim naming the principal.
    pub fn subject_claim(mut self, name: &str) -> TrustedIssuer {
        self.subject_claim = name.to_owned();
        self
    }
    /// A claim every token must carry.
    pub fn required_claim(mut self, name: &str) -> TrustedIssuer {
        self.required_claims.push(name.to_owned());
        self
    }
    /// A claim whose value must be one of `values` (a string equal to
    /// one, or an array holding one).
    pub fn allowed_claim(mut self, name: &str, values: &[&str]) -> TrustedIssuer {
        self.allowed_claims.insert(
            name.to_owned(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        );
        self
    }
    /// The `typ` values accepted.
    pub fn typ(mut self, typ: &[&str]) -> TrustedIssuer {
        self.typ = typ.iter().map(|t| (*t).to_owned()).collect();
        self
    }
    /// Clock skew, seconds (≤ 60).
    pub fn leeway(mut self, secs: i64) -> TrustedIssuer {
        self.leeway = Some(secs);
        self
    }
    /// Trusts only this CA file's certificates for the issuer's HTTPS.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> TrustedIssuer {
        self.ca_file = Some(path.into());
        self
    }
    /// Allows plain HTTP (local tests only).
    pub fn danger_allow_http(mut self, on: bool) -> TrustedIssuer {
        self.danger_allow_http = on;
        self
    }
    /// Bounds on how long fetched keys are kept.
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> TrustedIssuer {
        self.min_refresh = min;
        self.max_refresh = max;
        self
    }
    /// How long past expiry keys serve while the provider is down.
    pub fn stale_for(mut self, d: Duration) -> TrustedIssuer {
        self.stale_for = d;
        self
    }
    /// The least time between refetches caused by an unknown `kid`.
    pub fn kid_refetch_interval(mut self, d: Duration) -> TrustedIssuer {
        self.refetch_interval = d;
        self
    }

    /// Whether the settings are usable; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let is_url = |u: &str| {
            u.parse::<http::Uri>()
                .is_ok_and(|p| p.authority().is_some())
                && (u.starts_with("https://") || u.starts_with("http://"))
        };
        if self.issuer.is_empty() {
            return Err("issuer: must not be empty".into());
        }
        // The issuer names its subjects' rate-limit counters, beside our
        // own kinds': it must not be one of them.
        if ["api_key", "key", "user", "client", "external", "ip", "all"]
            .contains(&self.issuer.as_str())
        {
            return Err("issuer: must not be a principal kind's name".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err("audience: name at least one, none empty".into());
        }
        if self.algorithms.is_empty() {
            return Err("algorithms: name at least one".into());
        }
        if let Some(a) = self
            .algorithms
            .iter()
            .find(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return Err(format!(
                "algorithms: {a:?}: a trusted issuer's keys must be asymmetric (a shared secret would let anyone who verifies also sign)"
            ));
        }
        let http_ok = |u: &str, what: &str| -> Result<(), String> {
            if !is_url(u) {
                return Err(format!("{what}: {:?} is not an absolute URL", shown(u)));
            }
            if u.starts_with("http://") && !self.danger_allow_http {
                return Err(format!(
                    "{what}: {:?}: keys must come over HTTPS (danger_allow_http = true is for local tests only)",
                    shown(u)
                ));
            }
            Ok(())
        };
        match &self.source {
            JwksSource::File(_) => {}
            JwksSource::Url(u) => http_ok(u, "jwks_url")?,
            JwksSource::Discover => http_ok(&self.issuer, "issuer")?,
        }
        if self.min_refresh < Duration::from_secs(1) || self.min_refresh > self.max_refresh {
            return Err("min_refresh: must be at least 1s and at most max_refresh".into());
        }
        if self.max_refresh > MAX_REFRESH {
            return Err(
                "max_refresh: at most 7d (keys a provider removed must stop working)".into(),
            );
        }
        let (lo, hi) = REFETCH_INTERVAL_BOUNDS;
        if self.refetch_interval < lo || self.refetch_interval > hi {
            return Err("kid_refetch_interval: must be between 1s and 1d".into());
        }
        if let Some((k, _)) = self
            .allowed_claims
            .iter()
            .find(|(k, v)| k.is_empty() || v.is_empty() || v.iter().any(String::is_empty))
        {
            return Err(format!(
                "allowed_claims: {k:?}: name a claim and at least one value, none empty"
            ));
        }
        if OPEN_ISSUERS.contains(&self.issuer.trim_end_matches('/'))
            && self.allowed_claims.is_empty()
        {
            return Err(
                "allowed_claims: this issuer signs tokens for anyone with an account there, for any audience they ask; say whose are accepted (e.g. hd = [\"example.com\"], azp = [\"your-client-id\"])"
                    .into(),
            );
        }
        if self.stale_for > MAX_STALE_FOR {
            return Err("stale_for: at most 7d (keys a provider revoked must stop working)".into());
        }
        if self.leeway.is_some_and(|l| !(0..=60).contains(&l)) {
            return Err("leeway: must be between 0s and 60s".into());
        }
        if self.subject_claim.is_empty() {
            return Err("subject_claim: must not be empty".into());
        }
        if self.typ.is_empty() {
            return Err("typ: name at least one".into());
        }
        Ok(())
    }

    fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// How usable an issuer's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerState {
    /// Keys within their cache lifetime (or from a file).
    Fresh,
    /// Past their lifetime, provider unreachable, within `stale_for`.
    Stale,
    /// No keys, or past `stale_for`: the issuer's tokens get 503.
    Unusable,
}

impl IssuerState {
    /// The name for logs and readiness.
    pub fn name(self) -> &'static str {
        match self {
            IssuerState::Fresh => "fresh",
            IssuerState::Stale => "stale",
            IssuerState::Unusable => "unusable",
        }
    }
}

/// What readiness and metrics see of one issuer.
#[derive(Debug, Clone)]
pub struct IssuerHealth {
    /// Its `iss`.
    pub issuer: String,
    /// Fresh, stale or unusable.
    pub state: IssuerState,
    /// Keys held.
    pub keys: usize,
    /// Seconds since the last good fetch (None: never).
    pub last_success_secs: Option<u64>,
    /// Fetches made (any trigger) and how many failed.
    pub fetches: u64,
    /// Failed fetches.
    pub failures: u64,
    /// The last failure, for the log (never a body).
    pub last_error: Option<String>,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, VerifyKey>,
    /// The last good fetch.
    fetched: Option<Instant>,
    /// Keys are fresh until then (None: forever, a file).
    fresh_until: Option<Instant>,
}

#[derive(Default)]
struct Stats {
    fetches: u64,
    failures: u64,
    last_error: Option<String>,
    jwks_uri: Option<String>,
}

/// One trusted issuer at run time.
pub(crate) struct Issuer {
    pub(crate) cfg: TrustedIssuer,
    fetcher: Option<Fetcher>,
    set: RwLock<Arc<KeySet>>,
    last_kid_fetch: Mutex<Option<Instant>>,
    /// The unknown-kid fetch under way, if any: waiters watch it.
    flight: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
    stats: Mutex<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means a panic mid-update of plain counters; they are
    // still readable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Issuer {
    /// Sets an issuer up: a file is read now (an unreadable one stops the
    /// start); a network source is fetched once now, and a failure only
    /// warns (the provider may come up later; the background task
    /// retries, and the issuer's tokens get 503 until then).
    pub(crate) async fn start(cfg: TrustedIssuer) -> Result<Arc<Issuer>, TokenError> {
        let name = cfg.issuer.clone();
        let err = |why: String| TokenError::Jwks {
            issuer: name.clone(),
            why,
        };
        cfg.check().map_err(err)?;
        let fetcher = match cfg.source {
            JwksSource::File(_) => None,
            _ => {
                if cfg.danger_allow_http {
                    tracing::warn!(
                        issuer = %cfg.issuer,
                        "danger_allow_http: this issuer's keys may be fetched over plain HTTP, where anyone on the path can replace them; for local tests only"
                    );
                }
                Some(
                    Fetcher::new(
                        cfg.ca_file.as_deref(),
                        cfg.danger_allow_http,
                        cfg.connect_timeout,
                        cfg.fetch_timeout,
                    )
                    .map_err(|e| err(e.to_string()))?,
                )
            }
        };
        let is = Arc::new(Issuer {
            cfg,
            fetcher,
            set: RwLock::new(Arc::new(KeySet::default())),
            last_kid_fetch: Mutex::new(None),
            flight: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
        });
        if is.fetcher.is_none() {
            is.refresh("start").await.map_err(err)?;
        } else {
            if let Err(e) = is.refresh("start").await {
                tracing::warn!(issuer = %is.cfg.issuer, error = %e, "cannot fetch a trusted issuer's keys yet; retrying in the background");
            }
            spawn_refresher(Arc::downgrade(&is));
        }
        Ok(is)
    }

    fn set(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Fresh, stale or unusable, now.
    pub(crate) fn state(&self) -> IssuerState {
        let s = self.set();
        let now = Instant::now();
        match (s.fetched, s.fresh_until) {
            (None, _) => IssuerState::Unusable,
            (Some(_), None) => IssuerState::Fresh,
            (Some(_), Some(until)) if now < until => IssuerState::Fresh,
            (Some(_), Some(until)) if now < until + self.cfg.stale_for => IssuerState::Stale,
            _ => IssuerState::Unusable,
        }
    }

    pub(crate) fn health(&self) -> IssuerHealth {
        let s = self.set();
        let st = lock(&self.stats);
        IssuerHealth {
            issuer: self.cfg.issuer.clone(),
            state: self.state(),
            keys: s.keys.len(),
            last_success_secs: s.fetched.map(|f| f.elapsed().as_secs()),
            fetches: st.fetches,
            failures: st.failures,
            last_error: st.last_error.clone(),
        }
    }

    /// Runs `f` with the key for `kid`, when the set is usable and has it.
    pub(crate) fn with_key<R>(
        &self,
        kid: &str,
        f: impl FnOnce(&VerifyKey) -> Result<R, TokenReject>,
    ) -> Result<R, TokenReject> {
        if self.state() == IssuerState::Unusable {
            return Err(TokenReject::IssuerUnavailable);
        }
        let s = self.set();
        let vk = s.keys.get(kid).ok_or(TokenReject::UnknownKid)?;
        f(vk)
    }

    /// Whether the set is usable and holds `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.state() != IssuerState::Unusable && self.set().keys.contains_key(kid)
    }

    /// An unknown `kid` (or an issuer whose keys are unusable): refetches
    /// once per `refetch_interval`, shared by every request waiting
    /// meanwhile. True when the set is now usable and has `kid`.
    ///
    /// The fetch runs in a task of its own, not in the caller's future: a
    /// client that disconnects mid-fetch drops only its wait, never the
    /// fetch it paid the interval for (else one made-up kid per interval,
    /// each from a client that hangs up, would keep a rotated key out
    /// until the scheduled refresh).
    pub(crate) async fn refetch_for(self: &Arc<Self>, kid: &str) -> bool {
        if self.has_kid(kid) {
            return true;
        }
        let mut rx = {
            let mut flight = lock(&self.flight);
            match flight.as_ref() {
                // A fetch is under way: wait for it, whoever started it.
                Some(rx) => rx.clone(),
                None => {
                    {
                        let mut last = lock(&self.last_kid_fetch);
                        if last.is_some_and(|t| t.elapsed() < self.cfg.refetch_interval) {
                            return false;
                        }
                        *last = Some(Instant::now());
                    }
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    *flight = Some(rx.clone());
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        // Clears the in-flight mark however the task ends
                        // (a panic, or the runtime shutting down), so a
                        // later unknown kid is never stuck behind it.
                        struct Clear(Arc<Issuer>);
                        impl Drop for Clear {
                            fn drop(&mut self) {
                                *lock(&self.0.flight) = None;
                            }
                        }
                        let clear = Clear(me);
                        if let Err(e) = clear.0.refresh("unknown_kid").await {
                            tracing::warn!(issuer = %clear.0.cfg.issuer, error = %e, "refetching a trusted issuer's keys for an unknown kid failed");
                        }
                        // Mark done before clearing: a waiter that cloned
                        // the receiver sees `true` and does not wait.
                        let _ = tx.send(true);
                        drop(clear);
                    });
                    rx
                }
            }
        };
        // An error means the task ended without sending (it panicked):
        // the set is as it is.
        let _ = rx.wait_for(|done| *done).await;
        self.has_kid(kid)
    }

    /// Fetches the keys and swaps them in; on failure the old set stays.
    async fn refresh(&self, trigger: &'static str) -> Result<(), String> {
        let r = self.load().await;
        let ok = r.is_ok();
        {
            let mut st = lock(&self.stats);
            st.fetches += 1;
            if let Err(e) = &r {
                st.failures += 1;
                st.last_error = Some(e.clone());
            }
        }
        crate::metrics::jwks_fetch(&self.cfg.issuer, trigger, ok);
        let r = r.map(|(keys, ttl)| {
            let now = Instant::now();
            let n = keys.len();
            let set = KeySet {
                keys,
                fetched: Some(now),
                fresh_until: ttl.map(|t| now + t),
            };
            if let Ok(mut w) = self.set.write() {
                *w = Arc::new(set);
            }
            tracing::info!(issuer = %self.cfg.issuer, keys = n, trigger, "trusted issuer's keys loaded");
        });
        self.publish();
        r
    }

    /// Sets the gauges from the current state.
    pub(crate) fn publish(&self) {
        let h = self.health();
        crate::metrics::jwks_state(&self.cfg.issuer, h.keys, h.state.name());
    }

    /// The keys and how long they stay fresh (None: a file, forever).
    async fn load(&self) -> Result<(HashMap<String, VerifyKey>, Option<Duration>), String> {
        let fetcher = match (&self.cfg.source, &self.fetcher) {
            (JwksSource::File(path), _) => {
                let text = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                return Ok((parse_jwks(&text, &self.cfg)?, None));
            }
            (_, Some(f)) => f,
            (_, None) => return Err("no HTTPS client".into()),
        };
        let url = match &self.cfg.source {
            JwksSource::Url(u) => u.clone(),
            _ => self.discover(fetcher).await?,
        };
        let got = fetcher
            .get(&url)
            .await
            .map_err(|e| format!("JWKS {}: {e}", shown(&url)))?;
        let keys =
            parse_jwks(&got.body, &self.cfg).map_err(|e| format!("JWKS {}: {e}", shown(&url)))?;
        let ttl = got
            .max_age
            .unwrap_or(self.cfg.min_refresh)
            .clamp(self.cfg.min_refresh, self.cfg.max_refresh);
        Ok((keys, Some(ttl)))
    }

    /// The `jwks_uri` of the discovery document (re-read on every key
    /// fetch: a provider may move it, and it is one small request).
    async fn discover(&self, fetcher: &Fetcher) -> Result<String, String> {
        let url = self.cfg.discovery_url();
        let got = fetcher
            .get(&url)
            .await
            .map_err(|e: FetchError| format!("discovery {}: {e}", shown(&url)))?;
        let uri = parse_discovery(&got.body, &self.cfg.issuer)
            .map_err(|e| format!("discovery {}: {e}", shown(&url)))?;
        fetcher
            .check_url(&uri)
            .map_err(|e| format!("discovery {}: jwks_uri {:?}: {e}", shown(&url), shown(&uri)))?;
        lock(&self.stats).jwks_uri = Some(uri.clone());
        Ok(uri)
    }
}

/// Keeps a network issuer's keys fresh: refetches when they expire, and
/// after a failure retries every `min_refresh` (at most a minute apart) so
/// a provider back up is noticed soon. Ends when the issuer is dropped.
fn spawn_refresher(weak: Weak<Issuer>) {
    tokio::spawn(async move {
        // `start` has just tried.
        let mut last_try = Instant::now();
        loop {
            let wait = {
                let Some(is) = weak.upgrade() else { return };
                let now = Instant::now();
                let retry = is.cfg.min_refresh.min(Duration::from_secs(60));
                let until = is.set().fresh_until;
                if until.is_none_or(|u| u <= now) && now.duration_since(last_try) >= retry {
                    last_try = now;
                    if let Err(e) = is.refresh("scheduled").await {
                        tracing::warn!(issuer = %is.cfg.issuer, error = %e, state = is.state().name(), "cannot refresh a trusted issuer's keys; keeping the last good set");
                    }
                } else {
                    is.publish();
                }
                let now = Instant::now();
                match is.set().fresh_until {
                    Some(u) if u > now => u - now,
                    _ => retry.saturating_sub(now.duration_since(last_try)),
                }
            };
            // Wakes at least every few seconds so the state gauge follows
            // a stale set across its bound.
            tokio::time::sleep(wait.clamp(Duration::from_millis(100), Duration::from_secs(5)))
                .await;
        }
    });
}

/// The `jwks_uri` of a discovery document whose `issuer` is exactly
/// `issuer` ([`portcullis_core::oidc::discovery_jwks_uri`]).
pub fn parse_discovery(body: &[u8], issuer: &str) -> Result<String, String> {
    portcullis_core::oidc::discovery_jwks_uri(body, issuer).map_err(|e| e.to_string())
}

/// The usable signing keys of a JWKS. A key that is not for signatures,
/// of an algorithm not allowed, or unreadable is skipped with a warning;
/// a document that is not a JWKS at all is an error.
pub(crate) fn parse_jwks(
    body: &[u8],
    cfg: &TrustedIssuer,
) -> Result<HashMap<String, VerifyKey>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "not a JWKS: not JSON".to_owned())?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS: no \"keys\" array")?;
    let mut out = HashMap::new();
    let mut skipped = 0usize;
    for k in keys {
        if out.len() >= MAX_KEYS {
            skipped += 1;
            continue;
        }
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            // An encryption key is not skipped as bad: it is not ours.
            continue;
        }
        match verify_key(k, &cfg.algorithms) {
            Some((kid, vk)) if !out.contains_key(&kid) => {
                out.insert(kid, vk);
            }
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(
            issuer = %cfg.issuer,
            skipped,
            kept = out.len(),
            "keys in a trusted issuer's JWKS skipped (no kid, a duplicate kid, an algorithm not in `algorithms`, or unreadable)"
        );
    }
    Ok(out)
}

/// What an external token's claims say, once mapped.
#[derive(Debug)]
pub(crate) struct Mapped {
    pub(crate) subject: String,
    pub(crate) scopes: Scopes,
    pub(crate) client_id: Option<String>,
    pub(crate) jti: Option<String>,
    pub(crate) iat: i64,
    pub(crate) exp: i64,
}

/// Checks an external token's verified claims and maps them: registered
/// claims with their one JSON type each (a string `exp` fails, as for our
/// tokens), time, issuer and audience by the core rules, required claims,
/// then subject and scopes from the configured claims.
pub(crate) fn map_claims(
    c: &Map<String, Value>,
    cfg: &TrustedIssuer,
    default_leeway: i64,
    now: i64,
) -> Result<Mapped, TokenReject> {
    let bad = TokenReject::BadSignatureOrClaims;
    let int = |k: &str| -> Result<Option<i64>, TokenReject> {
        match c.get(k) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or(bad),
        }
    };
    let string = |k: &str| -> Result<Option<String>, TokenReject> {
        match c.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad),
        }
    };
    let aud: Audience = match c.get("aud") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| bad)?,
        None => return Err(bad),
    };
    let subject = match c.get(&cfg.subject_claim) {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad),
        None => return Err(TokenReject::Claims(ClaimError::NoSubject)),
    };
    // The subject becomes a header value (X-Portcullis-Principal) and a
    // rate-limit key: one that cannot be either is refused, never passed
    // on as "no principal".
    if !subject_ok(&subject) && !subject.is_empty() {
        return Err(TokenReject::BadSubject);
    }
    let claims = portcullis_core::token::AccessClaims {
        iss: string("iss")?.ok_or(bad)?,
        sub: subject.clone(),
        aud: aud.clone(),
        exp: int("exp")?.ok_or(bad)?,
        iat: int("iat")?,
        nbf: int("nbf")?,
        jti: string("jti")?,
        scope: None,
        client_id: None,
    };
    // The audience checked is one of ours the token names, or (when it
    // names none) the first, which then fails as WrongAudience.
    let audience = cfg
        .audiences
        .iter()
        .find(|a| aud.contains(a))
        .or(cfg.audiences.first())
        .map_or("", String::as_str);
    portcullis_core::token::check_claims(
        &claims,
        &portcullis_core::token::Expect {
            issuer: &cfg.issuer,
            audience,
            leeway: cfg.leeway.unwrap_or(default_leeway),
        },
        now,
    )
    .map_err(TokenReject::Claims)?;
    for r in &cfg.required_claims {
        if c.get(r).is_none_or(Value::is_null) {
            return Err(TokenReject::MissingClaim);
        }
    }
    for (name, values) in &cfg.allowed_claims {
        let listed = |v: &Value| v.as_str().is_some_and(|s| values.iter().any(|a| a == s));
        let ok = match c.get(name) {
            Some(Value::Array(a)) => a.iter().any(listed),
            Some(v) => listed(v),
            None => false,
        };
        if !ok {
            return Err(TokenReject::ClaimNotAllowed);
        }
    }
    let scopes = scopes_of(c.get(cfg.scope_claim.name()), &cfg.scope_claim)?;
    // `client_id` (RFC 9068) or `azp` (Keycloak, Entra ID v1 `appid` is
    // not read): informational, for the log and introspection.
    let client_id = match string("client_id")? {
        Some(id) => Some(id),
        None => c.get("azp").and_then(Value::as_str).map(str::to_owned),
    };
    Ok(Mapped {
        subject,
        scopes,
        client_id: client_id.filter(|s| !s.is_empty()),
        jti: claims.jti,
        iat: claims.iat.unwrap_or(0),
        exp: claims.exp,
    })
}

/// Whether a subject can be passed on: printable ASCII (a header value),
/// no space at either end (a proxy would trim it), at most
/// [`MAX_SUBJECT_BYTES`].
fn subject_ok(s: &str) -> bool {
    s.len() <= MAX_SUBJECT_BYTES
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
}

/// A URL for the log: its query and fragment (a provider may put a key
/// or a tenant secret there) cut off.
fn shown(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(i) => format!("{}?…", &url[..i]),
        None => url.to_owned(),
    }
}

/// The scopes a claim holds ([`portcullis_core::oidc::scopes_from_claim`]):
/// `scope` is a space-separated string only (RFC 9068 §2.2.3); the others
/// may be a string or an array of strings.
fn scopes_of(v: Option<&Value>, which: &ScopeClaim) -> Result<Scopes, TokenReject> {
    portcullis_core::oidc::scopes_from_claim(v, *which == ScopeClaim::Scope)
        .map_err(|_| TokenReject::BadSignatureOrClaims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> TrustedIssuer {
        TrustedIssuer::discover("https://idp.test").audience("api")
    }
    fn claims(extra: Value) -> Map<String, Value> {
        let mut c = json!({"iss": "https://idp.test", "sub": "s1", "aud": ["x", "api"], "exp": 2000, "iat": 900});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.as_object().unwrap().clone()
    }

    #[test]
    fn scope_claim_shapes() {
        let s = |v: Value, w: ScopeClaim| scopes_of(Some(&v), &w).map(|s| s.to_space_separated());
        assert_eq!(s(json!("a b"), ScopeClaim::Scope).unwrap(), "a b");
        assert!(s(json!(["a"]), ScopeClaim::Scope).is_err());
        assert_eq!(s(json!(["a", "b"]), ScopeClaim::Scp).unwrap(), "a b");
        assert_eq!(s(json!("a b"), ScopeClaim::Scp).unwrap(), "a b");
        assert_eq!(
            s(json!(["read:x"]), ScopeClaim::Permissions).unwrap(),
            "read:x"
        );
        assert!(s(json!(["a b"]), ScopeClaim::Permissions).is_err());
        assert!(s(json!([1]), ScopeClaim::Scp).is_err());
        assert!(s(json!({"a": 1}), ScopeClaim::Scp).is_err());
        assert!(scopes_of(None, &ScopeClaim::Scp).unwrap().is_empty());
    }

    #[test]
    fn claims_map_and_check() {
        let c = cfg().scope_claim("permissions").required_claim("azp");
        let m = map_claims(
            &claims(json!({"permissions": ["p:1"], "azp": "app"})),
            &c,
            30,
            1000,
        )
        .unwrap();
        assert_eq!(m.subject, "s1");
        assert_eq!(m.scopes.to_space_separated(), "p:1");
        assert_eq!(m.client_id.as_deref(), Some("app"));
        assert_eq!(
            map_claims(&claims(json!({})), &c, 30, 1000).unwrap_err(),
            TokenReject::MissingClaim
        );
        let c = cfg();
        assert_eq!(
            map_claims(&claims(json!({"aud": "other"})), &c, 30, 1000).unwrap_err(),
            TokenReject::Claims(ClaimError::WrongAudience)
        );
        assert_eq!(
            map_claims(&claims(json!({"iss": "https://idp.test/"})), &c, 30, 1000).unwrap_err(),
            TokenReject::Claims(ClaimError::WrongIssuer)
        );
        assert_eq!(
            map_claims(&claims(json!({"exp": "2000"})), &c, 30, 1000).unwrap_err(),
            TokenReject::BadSignatureOrClaims
        );
        assert_eq!(
            map_claims(&claims(json!({})), &c, 30, 2031).unwrap_err(),
            TokenReject::Claims(ClaimError::Expired)
        );
        let oid = cfg().subject_claim("oid");
        assert_eq!(
            map_claims(&claims(json!({})), &oid, 30, 1000).unwrap_err(),
            TokenReject::Claims(ClaimError::NoSubject)
        );
        assert_eq!(
            map_claims(&claims(json!({"oid": "o-1"})), &oid, 30, 1000)
                .unwrap()
                .subject,
            "o-1"
        );
    }

    #[test]
    fn allowed_claims_and_subjects() {
        let c = cfg()
            .allowed_claim("hd", &["example.com"])
            .allowed_claim("azp", &["a", "b"]);
        let ok = |extra: Value| map_claims(&claims(extra), &c, 30, 1000);
        assert!(ok(json!({"hd": "example.com", "azp": "b"})).is_ok());
        assert!(ok(json!({"hd": "example.com", "azp": ["x", "a"]})).is_ok());
        for bad in [
            json!({"azp": "a"}),
            json!({"hd": "example.org", "azp": "a"}),
            json!({"hd": "example.com", "azp": ["x"]}),
            json!({"hd": ["example.com"], "azp": 5}),
            json!({"hd": null, "azp": "a"}),
        ] {
            assert_eq!(
                ok(bad.clone()).unwrap_err(),
                TokenReject::ClaimNotAllowed,
                "{bad}"
            );
        }
        let c = cfg();
        let sub = |s: &str| map_claims(&claims(json!({"sub": s})), &c, 30, 1000);
        assert_eq!(sub(&"a".repeat(256)).unwrap().subject.len(), 256);
        assert!(sub("alice@example.com").is_ok());
        for bad in [
            "a".repeat(257),
            "jos\u{e9}".into(),
            "a\nb".into(),
            "a\u{7f}".into(),
            " a".into(),
            "a ".into(),
        ] {
            assert_eq!(sub(&bad).unwrap_err(), TokenReject::BadSubject, "{bad:?}");
        }
    }

    #[test]
    fn urls_logged_without_query() {
        assert_eq!(
            shown("https://idp.test/k?key=secret#x"),
            "https://idp.test/k?…"
        );
        assert_eq!(shown("https://idp.test/k#x"), "https://idp.test/k?…");
        assert_eq!(shown("https://idp.test/k"), "https://idp.test/k");
        let e = TrustedIssuer::jwks_url("x", "http://idp.test/k?sig=secret")
            .audience("a")
            .check()
            .unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn discovery_document() {
        let d = |v: Value| parse_discovery(v.to_string().as_bytes(), "https://idp.test");
        assert_eq!(
            d(json!({"issuer": "https://idp.test", "jwks_uri": "https://idp.test/k"})).unwrap(),
            "https://idp.test/k"
        );
        assert!(d(json!({"issuer": "https://idp.test/", "jwks_uri": "https://x/k"})).is_err());
        assert!(d(json!({"issuer": "https://evil.test", "jwks_uri": "https://x/k"})).is_err());
        assert!(d(json!({"issuer": "https://idp.test"})).is_err());
        assert!(d(json!([1])).is_err());
        assert!(parse_discovery(b"\xff{", "https://idp.test").is_err());
    }

    #[test]
    fn jwks_bad_keys_are_skipped() {
        let c = cfg();
        let body = json!({"keys": [
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hs", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": 5},
            "not an object",
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "!!", "y": "!!"},
        ]});
        let keys = parse_jwks(body.to_string().as_bytes(), &c).unwrap();
        assert!(keys.is_empty());
        assert!(parse_jwks(b"{}", &c).is_err());
        assert!(parse_jwks(b"[]", &c).is_err());
        assert!(parse_jwks(b"", &c).is_err());
    }

    #[test]
    fn config_rules() {
        assert!(cfg().check().is_ok());
        assert!(TrustedIssuer::discover("https://idp.test").check().is_err());
        assert!(
            cfg()
                .algorithms(&[Algorithm::HS256])
                .check()
                .unwrap_err()
                .contains("asymmetric")
        );
        assert!(
            TrustedIssuer::discover("http://idp.test")
                .audience("a")
                .check()
                .is_err()
        );
        assert!(
            TrustedIssuer::discover("http://idp.test")
                .audience("a")
                .danger_allow_http(true)
                .check()
                .is_ok()
        );
        assert!(
            TrustedIssuer::jwks_url("x", "https://idp.test/k")
                .audience("a")
                .stale_for(Duration::from_secs(8 * 86_400))
                .check()
                .is_err()
        );
        let secs = Duration::from_secs;
        let err = |t: TrustedIssuer| t.check().unwrap_err();
        assert!(
            err(cfg().refresh_bounds(Duration::from_millis(500), secs(60)))
                .starts_with("min_refresh:")
        );
        assert!(err(cfg().refresh_bounds(secs(60), secs(8 * 86_400))).starts_with("max_refresh:"));
        assert!(
            cfg()
                .refresh_bounds(secs(1), secs(7 * 86_400))
                .check()
                .is_ok()
        );
        assert!(
            err(cfg().kid_refetch_interval(Duration::from_millis(10)))
                .starts_with("kid_refetch_interval:")
        );
        assert!(err(cfg().kid_refetch_interval(secs(86_401))).starts_with("kid_refetch_interval:"));
        assert!(cfg().kid_refetch_interval(secs(1)).check().is_ok());
        assert!(err(cfg().allowed_claim("hd", &[])).starts_with("allowed_claims:"));
        assert!(err(TrustedIssuer::jwks_file("user", "/k").audience("a")).starts_with("issuer:"));
        // Google signs for anyone: refused without saying whose tokens.
        let google = || TrustedIssuer::discover("https://accounts.google.com").audience("a");
        assert!(err(google()).starts_with("allowed_claims:"));
        assert!(
            google()
                .allowed_claim("hd", &["example.com"])
                .check()
                .is_ok()
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const NAMES: &[&str] = &[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "scope",
            "scp",
            "permissions",
            "client_id",
            "azp",
            "keys",
            "kty",
            "kid",
            "crv",
            "x",
            "y",
            "n",
            "e",
            "alg",
            "use",
            "issuer",
            "jwks_uri",
        ];
        const WORDS: &[&str] = &[
            "https://idp.test",
            "api",
            "s1",
            "RSA",
            "OKP",
            "EC",
            "Ed25519",
            "P-256",
            "sig",
            "enc",
            "RS256",
            "EdDSA",
            "AQAB",
            "a b",
            "read:x",
            "",
        ];

        /// JSON shaped like what a provider (or someone posing as one)
        /// sends: the names and words of JWKS, discovery and claims.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                (0i64..4000).prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                prop::sample::select(WORDS).prop_map(|w| json!(w)),
                "\\PC{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(prop::sample::select(NAMES), inner, 0..8).prop_map(
                        |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    ),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn jwks_and_discovery_never_panic_on_bytes(b in prop::collection::vec(any::<u8>(), 0..512)) {
                let c = cfg();
                let _ = parse_jwks(&b, &c);
                let _ = parse_discovery(&b, "https://idp.test");
                let _ = max_age_of(&b);
            }

            #[test]
            fn jwks_keeps_only_checked_keys(v in json()) {
                let c = cfg().algorithms(&[Algorithm::RS256, Algorithm::EdDSA, Algorithm::ES256]);
                if let Ok(keys) = parse_jwks(v.to_string().as_bytes(), &c) {
                    prop_assert!(v.get("keys").is_some_and(Value::is_array));
                    prop_assert!(keys.len() <= MAX_KEYS);
                    for k in keys.keys() {
                        prop_assert!(!k.is_empty() && k.len() <= portcullis_core::token::MAX_KID_BYTES);
                    }
                }
            }

            #[test]
            fn discovery_only_for_the_same_issuer(v in json()) {
                if let Ok(uri) = parse_discovery(v.to_string().as_bytes(), "https://idp.test") {
                    prop_assert_eq!(v.get("issuer"), Some(&json!("https://idp.test")));
                    prop_assert_eq!(v.get("jwks_uri"), Some(&json!(uri)));
                }
            }

            #[test]
            fn mapped_claims_passed_every_rule(v in json(), now in 0i64..4000, on_valid in any::<bool>()) {
                let Value::Object(mut m) = v else { return Ok(()) };
                if on_valid {
                    // Valid claims with some of them replaced by anything.
                    let mut base = claims(json!({"scope": "a b", "scp": ["x"], "azp": "app"}));
                    base.append(&mut m);
                    m = base;
                }
                for c in [cfg(), cfg().scope_claim("scp"), cfg().scope_claim("permissions").subject_claim("azp")] {
                    if let Ok(got) = map_claims(&m, &c, 30, now) {
                        prop_assert_eq!(m.get("iss"), Some(&json!("https://idp.test")));
                        prop_assert!(!got.subject.is_empty());
                        prop_assert_eq!(m.get(&c.subject_claim), Some(&json!(got.subject)));
                        prop_assert!(got.exp > now - 30);
                        let aud = m.get("aud").cloned().unwrap_or(Value::Null);
                        prop_assert!(aud == json!("api") || aud.as_array().is_some_and(|a| a.contains(&json!("api"))));
                    }
                }
            }
        }

        fn max_age_of(b: &[u8]) -> Option<Duration> {
            let s = String::from_utf8_lossy(b);
            crate::auth::jwks_fetch::max_age(s.split('\n'))
        }
    }
}
