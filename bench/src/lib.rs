//! Support for the benchmarks: a real SQLite store in a temporary
//! directory with one key in it, a verifier and a guard over it, and a way
//! to run a future that finishes without waiting.
//!
//! The cache-hit path of `Verifier::verify` never awaits (no store query,
//! no lock), so the benchmark polls it once with a no-op waker instead of
//! handing it to a runtime: what is measured is the verification, not the
//! scheduler. `poll_ready` returns `None` if the future did wait, and the
//! benchmark refuses to run then, so a change that puts an `.await` on the
//! hot path shows up instead of being timed through a runtime.

use http::{HeaderMap, HeaderValue, Method};
use portcullis::auth::guard::{Guard, Head, Policy};
use portcullis::auth::keys::{KeyService, KeySpec};
use portcullis::auth::verifier::{KeyVerdict, Verifier, VerifierConfig};
use portcullis::clock::{ManualClock, SharedClock};
use portcullis::store::Store;
use portcullis_core::credential::CredentialNames;
use portcullis_core::{ApiKey, Scheme, SchemeSet, Scopes};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Polls `fut` once; `Some` when it finished without waiting.
pub fn poll_ready<F: Future>(fut: F) -> Option<F::Output> {
    let fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Everything a verification benchmark needs. Keep it alive while
/// measuring: it owns the runtime the store's pool lives on and the
/// temporary directory the database is in.
pub struct Fixture {
    /// A current-thread runtime, for set-up and for `block_on` variants.
    pub rt: tokio::runtime::Runtime,
    /// The verifier, with `key` in its positive cache and `unknown` in its
    /// negative cache.
    pub verifier: Arc<Verifier>,
    /// A guard over the verifier.
    pub guard: Guard,
    /// A valid key (unlimited uses, scopes `data:read data:write`).
    pub key: String,
    /// A well-formed key the store does not know.
    pub unknown: String,
    /// A request policy: `X-API-Key`, scope `data:read`.
    pub policy: Policy,
    /// Request headers carrying `key` in `X-API-Key`.
    pub headers: HeaderMap,
    _dir: tempfile::TempDir,
    store: Store,
}

/// Why the fixture could not be built.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

fn err(what: &str, e: impl std::fmt::Display) -> SetupError {
    SetupError(format!("{what}: {e}"))
}

impl Fixture {
    /// Builds the store, creates the key and warms both caches.
    pub fn new() -> Result<Fixture, SetupError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err("runtime", e))?;
        let dir = tempfile::tempdir().map_err(|e| err("tempdir", e))?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let clock: SharedClock = ManualClock::new(1_900_000_000);
        let (verifier, key, store) = rt.block_on(async {
            let store = Store::open(&url, true).await.map_err(|e| err("store", e))?;
            let verifier = Verifier::new(store.clone(), clock.clone(), VerifierConfig::default())
                .await
                .map_err(|e| err("verifier", e))?;
            let keys = KeyService::new(store.clone(), clock, Some(verifier.clone()));
            let scopes = Scopes::parse("data:read data:write").map_err(|e| err("scopes", e))?;
            let created = keys
                .create("bench", &KeySpec::new("bench", "bench-owner", scopes))
                .await
                .map_err(|e| err("create key", e))?;
            Ok::<_, SetupError>((verifier, created.key.expose().to_owned(), store))
        })?;
        let unknown = ApiKey::generate("live", &[42; 32])
            .map_err(|e| err("unknown key", e))?
            .expose()
            .to_owned();
        // Warm the caches: the first verification of each goes to the store.
        for k in [&key, &unknown] {
            rt.block_on(verifier.verify(k))
                .map_err(|e| err("warm-up verification", e))?;
        }
        let guard = Guard::new(verifier.clone(), CredentialNames::default());
        let policy = Policy {
            schemes: SchemeSet::new(&[Scheme::ApiKeyHeader]),
            scopes: Scopes::parse("data:read").map_err(|e| err("scopes", e))?,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-api-key",
            HeaderValue::from_str(&key).map_err(|e| err("header", e))?,
        );
        headers.insert("accept", HeaderValue::from_static("application/json"));
        headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
        let fixture = Fixture {
            rt,
            verifier,
            guard,
            key,
            unknown,
            policy,
            headers,
            _dir: dir,
            store,
        };
        fixture.check()?;
        Ok(fixture)
    }

    /// The store under the verifier.
    pub fn verifier_store(&self) -> Store {
        self.store.clone()
    }

    /// The request head the guard benchmarks check.
    pub fn head(&self) -> Head<'_> {
        Head::new(&Method::GET, &self.headers, None)
    }

    /// Checks that the measured paths answer what they should, without
    /// waiting, before anything is timed.
    fn check(&self) -> Result<(), SetupError> {
        match poll_ready(self.verifier.verify(&self.key)) {
            Some(Ok(KeyVerdict::Valid(_))) => {}
            Some(other) => return Err(SetupError(format!("cache hit: {other:?}"))),
            None => return Err(SetupError("the cache-hit verification waited".into())),
        }
        match poll_ready(self.verifier.verify(&self.unknown)) {
            Some(Ok(KeyVerdict::Rejected(_))) => {}
            Some(other) => return Err(SetupError(format!("negative cache hit: {other:?}"))),
            None => {
                return Err(SetupError("the negative-cache verification waited".into()));
            }
        }
        match poll_ready(self.guard.check(&self.policy, &self.head())) {
            Some(Ok(g)) if g.principal.is_some() => Ok(()),
            Some(other) => Err(SetupError(format!("guard: {other:?}"))),
            None => Err(SetupError("the guard waited".into())),
        }
    }
}

/// The identity side: a user, a client, an issued access token and Basic
/// credentials, with every cache warm.
pub struct IdentityFixture {
    /// The key fixture underneath (runtime, store, verifier).
    pub base: Fixture,
    /// The token service.
    pub tokens: Arc<portcullis::auth::jwt::Tokens>,
    /// A guard with identity.
    pub guard: Guard,
    /// A route accepting bearer JWTs.
    pub bearer_policy: Policy,
    /// A route accepting Basic.
    pub basic_policy: Policy,
    /// `Authorization: Bearer <jwt>`.
    pub bearer_headers: HeaderMap,
    /// `Authorization: Basic …`.
    pub basic_headers: HeaderMap,
    /// The JWT.
    pub jwt: String,
    /// The password hasher.
    pub passwords: portcullis::auth::password::Passwords,
}

impl IdentityFixture {
    /// Builds it: one user (Argon2id), one token, caches warmed.
    pub fn new() -> Result<IdentityFixture, SetupError> {
        use portcullis::auth::identity::{Identity, SessionSettings};
        use portcullis::auth::jwt::{Grants, SigningAlg, TokenSettings, Tokens};
        use portcullis::auth::password::{Passwords, default_params};
        use portcullis::auth::throttle::{Throttle, ThrottleSettings};
        let base = Fixture::new()?;
        let clock: SharedClock = ManualClock::new(1_900_000_000);
        let store = base.verifier_store();
        let settings = TokenSettings {
            issuer: "http://bench".into(),
            audience: "portcullis".into(),
            access_ttl: 900,
            refresh_ttl: 86_400,
            alg: SigningAlg::EdDSA,
            hs_secret: None,
            leeway: 30,
            trusted: Vec::new(),
            grants: Grants::default(),
        };
        let passwords = Passwords::new(default_params(), 2).map_err(|e| err("passwords", e))?;
        let (tokens, identity) = base.rt.block_on(async {
            let tokens = Tokens::start(settings, store.clone(), clock.clone())
                .await
                .map_err(|e| err("tokens", e))?;
            let identity = Identity::new(
                store,
                clock.clone(),
                passwords.clone(),
                tokens.clone(),
                SessionSettings::default(),
                Throttle::new(ThrottleSettings::default(), clock),
            )
            .await
            .map_err(|e| err("identity", e))?;
            identity
                .add_user(
                    "bench",
                    &portcullis_core::Secret::new("correct horse battery staple".into()),
                    Scopes::parse("data:read").map_err(|e| err("scopes", e))?,
                    "bench",
                )
                .await
                .map_err(|e| err("user", e))?;
            Ok::<_, SetupError>((tokens, identity))
        })?;
        let (jwt, _) = tokens
            .issue(
                "bench",
                &Scopes::parse("data:read").map_err(|e| err("scopes", e))?,
                "",
            )
            .map_err(|e| err("issue", e))?;
        let guard =
            Guard::new(base.verifier.clone(), CredentialNames::default()).with_identity(identity);
        let scopes = Scopes::parse("data:read").map_err(|e| err("scopes", e))?;
        let bearer_policy = Policy {
            schemes: SchemeSet::new(&[Scheme::Bearer]),
            scopes: scopes.clone(),
        };
        let basic_policy = Policy {
            schemes: SchemeSet::new(&[Scheme::Basic]),
            scopes,
        };
        let mut bearer_headers = HeaderMap::new();
        bearer_headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {jwt}")).map_err(|e| err("header", e))?,
        );
        let mut basic_headers = HeaderMap::new();
        basic_headers.insert(
            "authorization",
            HeaderValue::from_str(&portcullis_core::basic::encode(
                "bench",
                "correct horse battery staple",
            ))
            .map_err(|e| err("header", e))?,
        );
        let f = IdentityFixture {
            base,
            tokens,
            guard,
            bearer_policy,
            basic_policy,
            bearer_headers,
            basic_headers,
            jwt,
            passwords,
        };
        // Warm: the first Basic check pays Argon2 and fills the caches.
        for (p, h) in [
            (&f.basic_policy, &f.basic_headers),
            (&f.bearer_policy, &f.bearer_headers),
        ] {
            let head = Head::new(&Method::GET, h, None);
            // Twice: the first fills the credential cache, the second the
            // user-state cache behind it.
            for _ in 0..2 {
                match f.base.rt.block_on(f.guard.check(p, &head)) {
                    Ok(g) if g.principal.is_some() => {}
                    other => return Err(SetupError(format!("warm-up: {other:?}"))),
                }
            }
            if poll_ready(f.guard.check(p, &head)).is_none() {
                return Err(SetupError("a warm identity check waited".into()));
            }
        }
        Ok(f)
    }
}

/// A private redis-server on a free loopback port, stopped on drop: the
/// Redis benchmarks measure a real server, not a stand-in.
pub struct RedisProcess {
    child: std::process::Child,
    /// `redis://127.0.0.1:PORT`
    pub url: String,
    _dir: tempfile::TempDir,
}

impl RedisProcess {
    /// Starts `redis-server` (installed by `scripts/install-test-deps.sh`)
    /// and waits until it answers.
    pub fn start() -> Result<RedisProcess, SetupError> {
        use std::io::{Read, Write};
        let err = |m: String| SetupError(m);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| err(format!("no free port: {e}")))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                err(format!(
                    "cannot run redis-server ({e}); run scripts/install-test-deps.sh"
                ))
            })?;
        let p = RedisProcess {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            _dir: dir,
        };
        for _ in 0..200 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return Ok(p);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Err(err("redis-server did not answer within 5 s".into()))
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
