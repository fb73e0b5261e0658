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

use http::{HeaderMap, HeaderValue};
use portcullis::clock::{ManualClock, SharedClock};
use portcullis::guard::{Guard, Policy};
use portcullis::keys::{KeyService, KeySpec};
use portcullis::store::Store;
use portcullis::verify::{KeyVerdict, Verifier, VerifierConfig};
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
        let (verifier, key) = rt.block_on(async {
            let store = Store::open(&url, true).await.map_err(|e| err("store", e))?;
            let verifier = Verifier::new(store.clone(), clock.clone(), VerifierConfig::default())
                .await
                .map_err(|e| err("verifier", e))?;
            let keys = KeyService::new(store, clock, Some(verifier.clone()));
            let scopes = Scopes::parse("data:read data:write").map_err(|e| err("scopes", e))?;
            let created = keys
                .create("bench", &KeySpec::new("bench", "bench-owner", scopes))
                .await
                .map_err(|e| err("create key", e))?;
            Ok::<_, SetupError>((verifier, created.key.expose().to_owned()))
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
        };
        fixture.check()?;
        Ok(fixture)
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
        match poll_ready(self.guard.check(&self.policy, &self.headers, None)) {
            Some(Ok(g)) if g.principal.is_some() => Ok(()),
            Some(other) => Err(SetupError(format!("guard: {other:?}"))),
            None => Err(SetupError("the guard waited".into())),
        }
    }
}
