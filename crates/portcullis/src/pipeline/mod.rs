//! The admission pipeline: every request the gateway proxies, every
//! decision its `/auth/verify` endpoint gives a proxy, and every request
//! an in-process service's layers see goes through these phases, in this
//! order, in this one implementation:
//!
//! 1. [`early`] — before anything is routed: the host rule, the one
//!    spelling of the path, the HTTPS rule, CORS preflights;
//! 2. [`admit`] — who is calling and may they: credential → verification
//!    → CSRF → scopes (the [`Guard`]), then the rate limit, then the key's
//!    quota. The caller and the headers to add, or one typed refusal;
//! 3. [`finish`] — on the answer: CORS, HSTS, security headers.
//!
//! The shells around it ([`crate::http::edge::EdgeLayer`],
//! [`crate::http::require::RequireLayer`], the gateway's request path) only
//! read requests and write responses. The pure rules the phases need (the
//! browser's origin, the HTTPS decision, the client's address) live in
//! [`portcullis_core`]. docs/architecture.md draws the picture.

pub mod abuse;
pub mod admit;
pub mod early;
pub mod finish;
mod problem;

use crate::auth::guard::Guard;
use crate::clock::SystemClock;
use crate::ratelimit::Limiter;
use portcullis_core::{Outcome, Principal, PrincipalKind, Problem, Scheme};
use std::net::IpAddr;
use std::sync::Arc;

pub use abuse::{AbuseSettings, AddressBlock, BLOCKED_REASON};
pub use admit::{Admitted, Demand, RateDemand, Refused, RequestView};
pub use problem::problem_response;

/// The shared state of the phases that need any: the guard, the rate
/// limiter and the per-address failure counter. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    guard: Guard,
    limiter: Arc<Limiter>,
    abuse: Option<Arc<AddressBlock>>,
    legacy_headers: bool,
    observers: Arc<[Arc<dyn Observer>]>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("legacy_headers", &self.legacy_headers)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline deciding with `guard` and counting with `limiter`;
    /// `legacy_headers` adds `X-RateLimit-*` beside the draft's fields.
    /// Failed credentials are counted per address with the default
    /// [`AbuseSettings`] on the system clock (on by default; see
    /// [`Pipeline::with_address_block`]).
    pub fn new(guard: Guard, limiter: Arc<Limiter>, legacy_headers: bool) -> Pipeline {
        Pipeline {
            guard,
            limiter,
            abuse: Some(Arc::new(AddressBlock::new(
                AbuseSettings::default(),
                Arc::new(SystemClock),
            ))),
            legacy_headers,
            observers: Arc::new([]),
        }
    }

    /// Reports every admission decision to `observer` too (metrics,
    /// analytics: each is called in the order added).
    pub fn observed_by(mut self, observer: Arc<dyn Observer>) -> Pipeline {
        let mut all = self.observers.to_vec();
        all.push(observer);
        self.observers = all.into();
        self
    }

    /// Counts failed credentials per client address and refuses blocked
    /// addresses with `block` ([`abuse`]); `None`: not at all.
    pub fn with_address_block(mut self, block: Option<Arc<AddressBlock>>) -> Pipeline {
        self.abuse = block;
        self
    }

    /// The per-address failure counter, when one is on.
    pub fn address_block(&self) -> Option<&Arc<AddressBlock>> {
        self.abuse.as_ref()
    }

    /// For the endpoints that check credentials outside [`Pipeline::admit`]
    /// (`/oauth/token`, `/oauth/introspect`, `/oauth/revoke`, `/auth/login`,
    /// `/auth/logout`, `/auth/csrf`): `Err` with the
    /// 429 when `client`'s address is blocked or has too many checks
    /// waiting; else its place among its waiting checks, to hold until
    /// the check ends.
    pub fn address_check(&self, client: IpAddr) -> Result<Option<abuse::InFlight>, Problem> {
        match &self.abuse {
            Some(a) => a.check(client),
            None => Ok(None),
        }
    }

    /// Counts such an endpoint's refusal, logged as `reason`, against
    /// `client` when it is a failed credential: a wrong password
    /// (`bad_password`), client secret (`invalid_client`), grant
    /// (`invalid_grant`: a wrong password or a refresh token nobody holds)
    /// or session (`session_unknown`). Not a reused refresh token
    /// (`refresh_reused`) nor a disabled user's right password
    /// (`user_disabled`): their holders are genuine. The caller decides
    /// whether the request could have been sent by a page of another
    /// site on its visitor's behalf, and then does not call this.
    pub fn address_refused(&self, client: IpAddr, reason: &str) {
        if let Some(a) = &self.abuse
            && matches!(
                reason,
                "bad_password" | "invalid_client" | "invalid_grant" | "session_unknown"
            )
        {
            a.failure(client);
        }
    }

    /// The guard.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

/// Which entrance a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrance {
    /// The gateway's proxy path.
    Proxy,
    /// The gateway's decision endpoint (`/auth/verify`).
    Decision,
    /// A library layer in an in-process service.
    Layer,
}

/// One admission decision, as an [`Observer`] sees it. Never holds a
/// credential: only its public id.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// Where the request came in.
    pub entrance: Entrance,
    /// The route's label: the gateway's route pattern, a service's
    /// matched path (`MatchedPath`), or empty. Bounded: never the raw path.
    pub route: &'a str,
    /// The decision's family: the label metrics and analytics count by.
    pub outcome: Outcome,
    /// The scheme the credential came by, when one was presented.
    pub scheme: Option<Scheme>,
    /// `allowed`, or the refusal's reason (its log reason).
    pub reason: &'static str,
    /// The status the client gets for a refusal; 200 when admitted.
    pub status: u16,
    /// The caller, when known.
    pub principal: Option<&'a Principal>,
    /// The credential's public id, when known.
    pub credential_id: Option<&'a str>,
    /// The caller's subject, when known: the principal's on admission, and
    /// on a refusal after the credential verified (a rate limit, a quota,
    /// a scope).
    pub subject: Option<&'a str>,
    /// What the credential is, when known: an API key (so `credential_id`
    /// names a stored key), a token, a session, a password. `None` when
    /// the credential did not verify.
    pub kind: Option<PrincipalKind>,
}

/// Sees every decision of the `admit` phase, at every entrance: the hook
/// metrics and analytics attach to. (Refusals of the `early` phase —
/// host, path, HTTPS, preflight — are the gateway's access log's.) An
/// optional extractor (`Option<Verified<_>>`) reports a missing credential
/// as the 401 it would be, though the handler then runs; nested layers
/// each report theirs. Called on the request's task: it must not block.
pub trait Observer: Send + Sync + 'static {
    /// One decision.
    fn decided(&self, d: &Decision<'_>);
}
