//! [`Portcullis`]: the handle an in-process service builds once and hands
//! to its router. It holds the same [`Guard`] the gateway uses (so every
//! decision has one implementation), the rate limiter, and the settings
//! the extractors and layers read.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use portcullis::{Portcullis, Verified, schemes::ApiKeyHeader};
//! use portcullis::static_key::StaticKey;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pc = Portcullis::builder()
//!     .static_key(StaticKey::from_env("API_KEY")?)
//!     .build()
//!     .await?;
//! async fn data(_: Verified<ApiKeyHeader>) -> &'static str { "secret" }
//! let app: Router = Router::new().route("/data", get(data)).layer(pc.layer());
//! # Ok(()) }
//! ```

use crate::auth::guard::Guard;
use crate::auth::identity::{Identity, IdentityError, SessionSettings};
use crate::auth::jwt::{Grants, SigningAlg, TokenError, TokenSettings, Tokens, TrustedIssuer};
use crate::auth::keys::KeyService;
use crate::auth::password::{Passwords, default_params};
use crate::auth::static_key::StaticKey;
use crate::auth::throttle::{Throttle, ThrottleSettings};
use crate::auth::verifier::{Verifier, VerifierConfig};
use crate::clock::{SharedClock, SystemClock};
use crate::pipeline::{Observer, Pipeline, RequestView};
use crate::ratelimit::{Limiter, MemoryLimiter, OnBackendError, RedisLimiter, RedisSettings};
use crate::store::{Store, StoreError};
use axum::extract::ConnectInfo;
use http::request::Parts;
use portcullis_core::credential::CredentialNames;
use portcullis_core::net::{Cidr, ForwardedHeader, client_ip};
use portcullis_core::origin::{Arrival, browser_origin, is_https};
use portcullis_core::{Scheme, SchemeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a [`Portcullis`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// Users, sessions or tokens could not be set up.
    #[error("cannot set up users and sessions: {0}")]
    Identity(#[from] IdentityError),
    /// The token signing keys could not be loaded.
    #[error("cannot load the token signing keys: {0}")]
    Tokens(#[from] TokenError),
    /// The Redis URL is not usable.
    #[error("rate_limit backend: {0}")]
    Redis(String),
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
}

/// The library's handle: clone it freely (one `Arc`).
#[derive(Clone)]
pub struct Portcullis {
    inner: Arc<Inner>,
}

struct Inner {
    /// The guard and the limiter, in the phases every entrance shares.
    pipeline: Pipeline,
    /// One single-scheme set per [`Scheme`], in `Scheme::ALL` order, so
    /// extractors need not build one per request.
    single: [SchemeSet; 6],
    pools: AtomicU32,
    trusted_proxies: Vec<Cidr>,
    forwarded: ForwardedHeader,
    https: bool,
    docs: DocSettings,
    keys: Option<KeyService>,
}

/// What the OpenAPI document says about the schemes (see
/// [`crate::http::openapi`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct DocSettings {
    /// The API-key header's name as configured (stored lowercase for
    /// matching, echoed as written in documents, as FastAPI does).
    pub(crate) header_name: Option<String>,
    pub(crate) token_url: Option<String>,
    pub(crate) scopes: Vec<(String, String)>,
    pub(crate) descriptions: Vec<(Scheme, String)>,
}

impl std::fmt::Debug for Portcullis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portcullis")
            .field("pipeline", &self.inner.pipeline)
            .field("https", &self.inner.https)
            .finish_non_exhaustive()
    }
}

fn index(s: Scheme) -> usize {
    Scheme::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Portcullis {
    /// Starts a builder.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A layer that makes this handle available to the extractors and
    /// layers of everything under it. Add it outermost (last).
    ///
    /// ```
    /// # async fn f() {
    /// use axum::{Router, routing::get};
    /// use portcullis::Portcullis;
    /// use portcullis::static_key::StaticKey;
    /// use portcullis::core::Secret;
    /// let pc = Portcullis::builder()
    ///     .static_key(StaticKey::new(Secret::new("correct-horse-battery".into())).unwrap())
    ///     .build().await.unwrap();
    /// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(pc.layer());
    /// # }
    /// ```
    pub fn layer(&self) -> axum::Extension<Portcullis> {
        axum::Extension(self.clone())
    }

    /// The guard: the gateway's own decision code.
    pub fn guard(&self) -> &Guard {
        self.inner.pipeline.guard()
    }

    /// The admission pipeline the layers and extractors run (the
    /// gateway's own).
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// The identity service (users, tokens, sessions), when a store is
    /// configured with users.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.inner.pipeline.guard().identity()
    }

    /// Managed keys (create, rotate, revoke), when a store is configured.
    pub fn keys(&self) -> Option<&KeyService> {
        self.inner.keys.as_ref()
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &Limiter {
        self.inner.pipeline.limiter()
    }

    pub(crate) fn single(&self, s: Scheme) -> &SchemeSet {
        // `index` is within bounds: `single` has one entry per scheme.
        &self.inner.single[index(s)]
    }

    pub(crate) fn next_pool(&self) -> u32 {
        self.inner.pools.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn docs(&self) -> &DocSettings {
        &self.inner.docs
    }

    /// The names credentials are read under.
    pub fn names(&self) -> &CredentialNames {
        self.inner.pipeline.guard().names()
    }

    /// The client's address: the peer from axum's `ConnectInfo`, or a
    /// forwarded address when the peer is a trusted proxy.
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        self.client_of(&parts.headers, &parts.extensions)
    }

    /// [`Portcullis::client_ip`] from a request's pieces (a layer holding
    /// the whole request need not split it).
    pub(crate) fn client_of(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<IpAddr> {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())?;
        let name = self.inner.forwarded.name();
        let values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        Some(client_ip(
            peer,
            &self.inner.trusted_proxies,
            self.inner.forwarded,
            values,
        ))
    }

    /// How a request reached the service: over HTTPS (the URI says so,
    /// as HTTP/2 over TLS does, or the builder was told the service is
    /// only reached over HTTPS), and whether the peer is a trusted proxy.
    pub fn arrival(&self, uri: &http::Uri, extensions: &http::Extensions) -> Arrival {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        self.arrival_from(uri, peer)
    }

    /// [`Portcullis::arrival`] for a peer already looked up.
    fn arrival_from(&self, uri: &http::Uri, peer: Option<IpAddr>) -> Arrival {
        Arrival {
            tls: self.inner.https || uri.scheme_str() == Some("https"),
            trusted_peer: peer
                .is_some_and(|p| portcullis_core::net::is_trusted(&self.inner.trusted_proxies, p)),
        }
    }

    /// Whether the request came over HTTPS
    /// ([`portcullis_core::origin::is_https`]).
    pub fn is_https(&self, parts: &Parts) -> bool {
        is_https(self.arrival(&parts.uri, &parts.extensions), &parts.headers)
    }

    /// The origin the browser addressed, for the CSRF origin check
    /// ([`portcullis_core::origin::browser_origin`]).
    pub fn own_origin(&self, parts: &Parts) -> Option<String> {
        browser_origin(
            self.arrival(&parts.uri, &parts.extensions),
            &parts.uri,
            &parts.headers,
        )
    }

    /// The pipeline's view of a request.
    pub(crate) fn view<'a>(&self, parts: &'a Parts) -> RequestView<'a> {
        // The peer is looked up once for both the client and the arrival.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let values = parts
            .headers
            .get_all(self.inner.forwarded.name())
            .iter()
            .filter_map(|v| v.to_str().ok());
        RequestView {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            client: peer
                .map(|p| client_ip(p, &self.inner.trusted_proxies, self.inner.forwarded, values)),
            arrival: self.arrival_from(&parts.uri, peer),
        }
    }

    /// The handle installed by [`Portcullis::layer`] on this request.
    pub fn from_parts(parts: &Parts) -> Result<Portcullis, crate::http::rejection::Rejection> {
        parts.extensions.get::<Portcullis>().cloned().ok_or_else(|| {
            tracing::error!(
                "a Portcullis extractor or layer ran without the handle: add `.layer(portcullis.layer())` to the router"
            );
            crate::http::rejection::Rejection::new(portcullis_core::ErrorCode::Internal)
        })
    }
}

/// Builds a [`Portcullis`].
///
/// ```
/// # async fn f() -> Result<(), portcullis::service::BuildError> {
/// use portcullis::Portcullis;
/// let dir = std::env::temp_dir().join(format!("pc-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let pc = Portcullis::builder()
///     .store(&format!("sqlite://{}/store.db", dir.display()))
///     .users(true)
///     .password_grant(true)
///     .build()
///     .await?;
/// assert!(pc.identity().is_some());
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Builder {
    names: CredentialNames,
    static_keys: Vec<StaticKey>,
    store: Option<String>,
    users: bool,
    password_grant: bool,
    issuer: Option<String>,
    sessions: SessionSettings,
    redis: Option<String>,
    on_backend_error: OnBackendError,
    trusted_proxies: Vec<Cidr>,
    forwarded: Option<ForwardedHeader>,
    https: bool,
    legacy_headers: bool,
    clock: Option<SharedClock>,
    docs: DocSettings,
    hash_parallelism: Option<usize>,
    observer: Option<Arc<dyn Observer>>,
    trusted: Vec<TrustedIssuer>,
    abuse: Option<crate::pipeline::AbuseSettings>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("static_keys", &self.static_keys)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The header API keys are read from (`X-API-Key` by default).
    pub fn header_name(mut self, name: &str) -> Result<Builder, BuildError> {
        self.names.header = http::HeaderName::try_from(name.to_ascii_lowercase())
            .map_err(|_| BuildError::Config(format!("{name:?} is not a header name")))?;
        self.docs.header_name = Some(name.to_owned());
        Ok(self)
    }

    /// The query parameter API keys are read from (`api_key`).
    pub fn query_name(mut self, name: impl Into<String>) -> Builder {
        self.names.query = name.into();
        self
    }

    /// The cookie API keys are read from (`api_key`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Builder {
        self.names.cookie = name.into();
        self
    }

    /// Accepts a static key (from the environment, say). May be repeated.
    pub fn static_key(mut self, key: StaticKey) -> Builder {
        self.static_keys.push(key);
        self
    }

    /// Managed keys in a store: `sqlite://path` (created if missing).
    pub fn store(mut self, url: &str) -> Builder {
        self.store = Some(url.to_owned());
        self
    }

    /// Users, tokens and sessions from the store: the `bearer` JWT,
    /// `basic` and `session` schemes, and the token and login endpoints.
    pub fn users(mut self, on: bool) -> Builder {
        self.users = on;
        self
    }

    /// Serves the OAuth2 password grant at the token endpoint (off by
    /// default, as RFC 9700 advises; the seeds' `/token` needs it).
    pub fn password_grant(mut self, on: bool) -> Builder {
        self.password_grant = on;
        self
    }

    /// The `iss` (and `aud`) of the tokens issued.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Builder {
        self.issuer = Some(issuer.into());
        self
    }

    /// Session settings (lifetimes, SameSite, further trusted origins).
    pub fn sessions(mut self, s: SessionSettings) -> Builder {
        self.sessions = s;
        self
    }

    /// Accepts access tokens another issuer signed (Auth0, Keycloak,
    /// Entra ID, …) on the `bearer` scheme, with the same verification as
    /// the gateway's `[[tokens.trusted_issuers]]`: keys by OpenID Connect
    /// discovery, a JWKS URL or a file, cached, refetched on an unknown
    /// `kid`, kept while the provider is down up to `stale_for`. Needs a
    /// store (`.store(…)`, for the verification state the bearer scheme
    /// shares with the service's own tokens). May be repeated.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), portcullis::service::BuildError> {
    /// use portcullis::Portcullis;
    /// use portcullis::auth::jwt::TrustedIssuer;
    /// let pc = Portcullis::builder()
    ///     .store("sqlite://portcullis.db")
    ///     .trust_issuer(TrustedIssuer::discover("https://login.example.com").audience("api"))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn trust_issuer(mut self, issuer: TrustedIssuer) -> Builder {
        self.trusted.push(issuer);
        self
    }

    /// Shares rate-limit counters through Redis (`redis://host:port/db`).
    pub fn redis(mut self, url: impl Into<String>, on_error: OnBackendError) -> Builder {
        self.redis = Some(url.into());
        self.on_backend_error = on_error;
        self
    }

    /// Proxies whose `X-Forwarded-For` (or `Forwarded`) and
    /// `X-Forwarded-Proto` are believed.
    pub fn trusted_proxies(mut self, cidrs: Vec<Cidr>, header: ForwardedHeader) -> Builder {
        self.trusted_proxies = cidrs;
        self.forwarded = Some(header);
        self
    }

    /// Says the service is only ever reached over HTTPS (a TLS terminator
    /// in front that does not say so in headers).
    pub fn https(mut self, on: bool) -> Builder {
        self.https = on;
        self
    }

    /// Also sends `X-RateLimit-*` fields.
    pub fn legacy_rate_limit_headers(mut self, on: bool) -> Builder {
        self.legacy_headers = on;
        self
    }

    /// Reports every admission decision the layers and extractors make
    /// to `observer` (for metrics; see [`crate::pipeline::Observer`]).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Builder {
        self.observer = Some(observer);
        self
    }

    /// How failed credentials are counted per client address and when an
    /// address is blocked (on by default with
    /// [`AbuseSettings::default`](crate::pipeline::AbuseSettings); set
    /// `enabled: false` to turn it off). The address is
    /// [`Portcullis::client_ip`]'s: behind a proxy, set
    /// [`Builder::trusted_proxies`], or every client shares its address.
    pub fn address_block(mut self, settings: crate::pipeline::AbuseSettings) -> Builder {
        self.abuse = Some(settings);
        self
    }

    /// A clock (tests pass a manual one).
    pub fn clock(mut self, clock: SharedClock) -> Builder {
        self.clock = Some(clock);
        self
    }

    /// How many password hashes may run at once (default: the cores).
    pub fn hash_parallelism(mut self, n: usize) -> Builder {
        self.hash_parallelism = Some(n.max(1));
        self
    }

    /// For the OpenAPI document: the token URL the `OAuth2PasswordBearer`
    /// scheme names (as FastAPI's `tokenUrl`) and the scopes it offers.
    pub fn token_url(mut self, url: impl Into<String>, scopes: &[(&str, &str)]) -> Builder {
        self.docs.token_url = Some(url.into());
        self.docs.scopes = scopes
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        self
    }

    /// For the OpenAPI document: a scheme's description.
    pub fn describe(mut self, scheme: Scheme, text: impl Into<String>) -> Builder {
        self.docs.descriptions.push((scheme, text.into()));
        self
    }

    /// Builds the handle: opens the store, loads keys, starts the
    /// background work (change watcher, last-used writer).
    pub async fn build(self) -> Result<Portcullis, BuildError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        if self.users && self.store.is_none() {
            return Err(BuildError::Config(
                "users need a store: call .store(\"sqlite://…\")".into(),
            ));
        }
        if !self.trusted.is_empty() && self.store.is_none() {
            return Err(BuildError::Config(
                "trusted issuers need a store: call .store(\"sqlite://…\")".into(),
            ));
        }
        for (i, t) in self.trusted.iter().enumerate() {
            t.check()
                .map_err(|e| BuildError::Config(format!("trusted issuer {}: {e}", t.issuer)))?;
            if self.trusted[..i].iter().any(|o| o.issuer == t.issuer) {
                return Err(BuildError::Config(format!(
                    "trusted issuer {} is given twice; give one every audience it may name",
                    t.issuer
                )));
            }
        }
        let mut keys = None;
        let mut guard = match &self.store {
            Some(url) => {
                let store = Store::open(url, true).await?;
                let verifier =
                    Verifier::new(store.clone(), clock.clone(), VerifierConfig::default()).await?;
                verifier.spawn_background();
                keys = Some(KeyService::new(
                    store.clone(),
                    clock.clone(),
                    Some(verifier.clone()),
                ));
                let mut g = Guard::new(verifier.clone(), self.names.clone());
                if self.users || !self.trusted.is_empty() {
                    let issuer = self
                        .issuer
                        .clone()
                        .unwrap_or_else(|| "urn:portcullis:app".to_owned());
                    let settings = TokenSettings {
                        audience: issuer.clone(),
                        issuer,
                        access_ttl: 1800,
                        refresh_ttl: 14 * 86_400,
                        alg: SigningAlg::EdDSA,
                        hs_secret: None,
                        leeway: 30,
                        trusted: self.trusted.clone(),
                        grants: Grants {
                            password: self.password_grant,
                            ..Grants::default()
                        },
                    };
                    let parallel = self.hash_parallelism.unwrap_or_else(|| {
                        std::thread::available_parallelism().map_or(2, |n| n.get())
                    });
                    let identity = start_identity(
                        &store,
                        clock.clone(),
                        settings,
                        self.sessions.clone(),
                        ThrottleSettings::default(),
                        parallel,
                        Some(&verifier),
                    )
                    .await?;
                    g = g.with_identity(identity);
                }
                g
            }
            None => Guard::without_store(self.names.clone()),
        };
        guard = guard.with_static_keys(self.static_keys);
        let memory = MemoryLimiter::new(clock.clone(), 1_000_000);
        let limiter = match &self.redis {
            None => Limiter::memory(memory),
            Some(url) => {
                let r = RedisLimiter::new(RedisSettings::new(url.clone()))
                    .map_err(|e| BuildError::Redis(e.to_string()))?;
                Limiter::redis(r, memory, self.on_backend_error)
            }
        };
        let abuse = self.abuse.unwrap_or_default();
        abuse
            .check()
            .map_err(|e| BuildError::Config(format!("address_block: {e}")))?;
        let abuse = abuse.enabled.then(|| {
            // The trusted proxies stand for their clients: never blocked.
            let b = crate::pipeline::AddressBlock::new(abuse, clock.clone())
                .exempting(&self.trusted_proxies);
            Arc::new(match &keys {
                Some(k) => b.audited_in(k.store().clone()),
                None => b,
            })
        });
        let single = Scheme::ALL.map(|s| SchemeSet::new(&[s]));
        Ok(Portcullis {
            inner: Arc::new(Inner {
                pipeline: {
                    let p = Pipeline::new(guard, Arc::new(limiter), self.legacy_headers)
                        .with_address_block(abuse);
                    match self.observer {
                        Some(o) => p.observed_by(o),
                        None => p,
                    }
                },
                single,
                pools: AtomicU32::new(0),
                trusted_proxies: self.trusted_proxies,
                forwarded: self.forwarded.unwrap_or(ForwardedHeader::XForwardedFor),
                https: self.https,
                docs: self.docs,
                keys,
            }),
        })
    }
}

/// Starts the identity service (users, tokens, sessions) on `store` and,
/// when a `verifier` is given, keeps its caches in step with the store's
/// change log. The gateway and [`Builder::build`] both start it here.
pub async fn start_identity(
    store: &Store,
    clock: SharedClock,
    tokens: TokenSettings,
    sessions: SessionSettings,
    throttle: ThrottleSettings,
    hash_parallelism: usize,
    verifier: Option<&Arc<Verifier>>,
) -> Result<Arc<Identity>, BuildError> {
    let tokens = Tokens::start(tokens, store.clone(), clock.clone()).await?;
    let passwords = Passwords::new(default_params(), hash_parallelism)
        .map_err(|e| BuildError::Config(format!("cannot set up password hashing: {e}")))?;
    let identity = Identity::new(
        store.clone(),
        clock.clone(),
        passwords,
        tokens,
        sessions,
        Throttle::new(throttle, clock),
    )
    .await?;
    if let Some(v) = verifier {
        let weak = Arc::downgrade(&identity);
        v.on_change(move |changed| {
            if let Some(id) = weak.upgrade() {
                tokio::spawn(async move { id.on_changes(&changed).await });
            }
        });
        let weak = Arc::downgrade(&identity);
        v.on_drop_all(move || {
            if let Some(id) = weak.upgrade() {
                id.drop_cached();
            }
        });
    }
    Ok(identity)
}
