//! Phase two, `admit`: who is calling, and may they. In order:
//! credential → verification → CSRF (cookie credentials) → scopes, which
//! the [`crate::auth::guard::Guard`] decides; then the rate limit; then
//! the key's quota, last, so a request the limiter refused spends no use.

use super::problem_response;
use super::{Decision, Entrance, Pipeline};
use crate::auth::guard::{Head, insufficient_scope};
use crate::ratelimit::{LimitBy, Plan, Pool, Verdict, write_headers};
use axum::response::Response;
use http::{HeaderMap, Method, Uri};
use portcullis_core::origin::{Arrival, browser_origin};
use portcullis_core::ratelimit::Policy as RatePolicy;
use portcullis_core::{Outcome, Principal, PrincipalKind, Problem, Scheme, SchemeSet, Scopes};
use std::net::{IpAddr, Ipv4Addr};

/// The parts of a request `admit` reads. For the decision endpoint the
/// method and target are the original request's, named by the proxy.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target, its path canonical.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The client's address, as far as it can be trusted.
    pub client: Option<IpAddr>,
    /// How the request reached us (for the browser's origin).
    pub arrival: Arrival,
}

/// What a route or a layer demands.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// The route's label for observers (see [`super::Decision::route`]).
    pub route: &'a str,
    /// Accepted schemes, in order; empty: public.
    pub schemes: &'a SchemeSet,
    /// Scopes the caller must hold.
    pub scopes: &'a Scopes,
    /// The rate limit, when one applies.
    pub rate: Option<RateDemand<'a>>,
    /// What the request costs, in rate-limit tokens and key uses.
    pub cost: u32,
    /// A caller an outer layer admitted already: only the scopes are
    /// checked again, and no use is spent twice.
    pub admitted: Option<&'a Principal>,
}

/// A rate limit: whose counters, which policy, counted by what.
#[derive(Debug, Clone, Copy)]
pub struct RateDemand<'a> {
    /// The counters' pool.
    pub pool: Pool<'a>,
    /// The policy; `None`: only a key's own limit applies.
    pub policy: Option<&'a RatePolicy>,
    /// Counted per caller, owner, address or route.
    pub by: LimitBy,
}

/// The deciding limit's fields, for the `RateLimit` headers.
#[derive(Debug, Clone, Copy)]
struct RateFields {
    label: (char, usize),
    verdict: Verdict,
    legacy: bool,
}

impl RateFields {
    fn write(&self, h: &mut HeaderMap) {
        write_headers(h, self.label, &self.verdict, self.legacy);
    }
}

/// A request that may proceed.
#[derive(Debug)]
pub struct Admitted {
    /// Who is calling, when the demand was not public.
    pub principal: Option<Principal>,
    /// The scheme the credential came by (none when an outer layer
    /// admitted the caller, or the demand was public).
    pub scheme: Option<Scheme>,
    rate: Option<RateFields>,
}

impl Admitted {
    /// Adds the rate-limit fields to the answer's headers.
    pub fn write_headers(&self, h: &mut HeaderMap) {
        if let Some(r) = &self.rate {
            r.write(h);
        }
    }
}

/// A request that may not: one problem, and what the log may know.
#[derive(Debug)]
pub struct Refused {
    /// The answer.
    pub problem: Problem,
    /// The log's reason for it.
    pub reason: &'static str,
    /// The credential's public id, when known.
    pub credential_id: Option<portcullis_core::shared_str::SharedStr>,
    /// The caller, when the refusal came after the credential verified
    /// (a rate limit, a spent quota).
    pub subject: Option<portcullis_core::shared_str::SharedStr>,
    /// The scheme the credential came by, when one was presented.
    pub scheme: Option<Scheme>,
    /// What the credential is, when known (see [`super::Decision::kind`]).
    pub kind: Option<PrincipalKind>,
    rate: Option<RateFields>,
}

impl Refused {
    fn new(problem: Problem) -> Refused {
        Refused {
            reason: problem.log_reason,
            problem,
            credential_id: None,
            subject: None,
            scheme: None,
            kind: None,
            rate: None,
        }
    }

    /// The problem+json answer, with `WWW-Authenticate`, `Retry-After`
    /// and the refusing limit's fields where they apply.
    pub fn response(&self, request_id: Option<&str>) -> Response {
        let mut r = problem_response(&self.problem, request_id);
        if let Some(f) = &self.rate {
            f.write(r.headers_mut());
        }
        r
    }
}

impl Pipeline {
    /// Decides `req` against `demand`: the caller and the headers to add,
    /// or one refusal. `entrance` is for the [`super::Observer`].
    ///
    /// One async body, not a chain of them: every request runs it, and
    /// each nested future is built, moved and dropped at a cost.
    pub async fn admit(
        &self,
        entrance: Entrance,
        demand: &Demand<'_>,
        req: &RequestView<'_>,
    ) -> Result<Admitted, Refused> {
        let r = 'decided: {
            let (principal, granted) = match demand.admitted {
                Some(p) if !p.scopes.covers(demand.scopes) => {
                    break 'decided Err(Refused::new(insufficient_scope(demand.scopes)));
                }
                Some(p) => (Some(p.clone()), None),
                None => {
                    // A blocked address is refused before any verification
                    // work; an address that failed before holds a place
                    // among its waiting verifications until this one ends.
                    // (A public demand verifies nothing: not checked.)
                    let abuse = self
                        .abuse
                        .as_deref()
                        .zip(req.client)
                        .filter(|_| !demand.schemes.is_public());
                    let _place = match abuse.map(|(a, ip)| a.check(ip)) {
                        Some(Err(p)) => break 'decided Err(Refused::new(p)),
                        Some(Ok(place)) => place,
                        None => None,
                    };
                    // The guard's part: the one credential, verified, CSRF
                    // for cookies, the scopes. Only cookie credentials need
                    // the origin (for CSRF); other demands skip building it.
                    let cookies = demand.schemes.accepts(Scheme::Session)
                        || demand.schemes.accepts(Scheme::ApiKeyCookie);
                    let origin = cookies
                        .then(|| browser_origin(req.arrival, req.uri, req.headers))
                        .flatten();
                    let head = Head {
                        client_ip: req.client,
                        origin: origin.as_deref(),
                        ..Head::new(req.method, req.headers, req.uri.query())
                    };
                    match self
                        .guard
                        .authenticate_parts(demand.schemes, demand.scopes, &head)
                        .await
                    {
                        // Moved, not cloned: spending reads only the key
                        // and the scheme.
                        Ok(mut g) => (g.principal.take(), Some(g)),
                        Err(d) => {
                            if let Some((a, ip)) = abuse {
                                a.refused(
                                    ip,
                                    Outcome::of(Some(d.problem.code), d.problem.log_reason),
                                    d.problem.log_reason,
                                );
                            }
                            break 'decided Err(Refused {
                                credential_id: d.credential_id,
                                scheme: d.scheme,
                                kind: d.kind,
                                ..Refused::new(d.problem)
                            });
                        }
                    }
                }
            };
            // Most demands have no limit or spend no uses: their steps are
            // not entered at all.
            let (rate, refused) = match demand.rate {
                Some(rd) => self.count(rd, demand.cost, req, principal.as_ref()).await,
                None => (None, None),
            };
            let who = |mut f: Refused| {
                if let Some(p) = &principal {
                    f.credential_id = Some(p.credential_id.clone());
                    f.subject = Some(p.subject.clone());
                    f.kind = Some(p.kind);
                }
                f.scheme = granted.as_ref().and_then(|g| g.scheme);
                f
            };
            if let Some(f) = refused {
                break 'decided Err(who(f));
            }
            if let Some(g) = granted.as_ref().filter(|g| g.metered.is_some())
                && let Err(d) = self.guard.spend(g, demand.cost).await
            {
                break 'decided Err(who(Refused::new(d.problem)));
            }
            Ok(Admitted {
                scheme: granted.and_then(|g| g.scheme),
                principal,
                rate,
            })
        };
        if !self.observers.is_empty() {
            observe(&self.observers, entrance, demand.route, &r);
        }
        r
    }

    /// The rate limit: the deciding limit's fields when admitted, or the
    /// refusal (429, or 503 when the shared backend is down).
    async fn count(
        &self,
        rd: RateDemand<'_>,
        cost: u32,
        req: &RequestView<'_>,
        principal: Option<&Principal>,
    ) -> (Option<RateFields>, Option<Refused>) {
        let client = req.client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let plan = Plan::new(rd.pool, rd.policy, rd.by, principal, client);
        let fields = |v: Verdict| RateFields {
            label: plan.label(&v),
            verdict: v,
            legacy: self.legacy_headers,
        };
        match self.limiter.admit(plan.checks(), cost).await {
            Ok(v) => (v.map(fields), None),
            Err(r) => {
                let mut f = Refused::new(r.problem);
                // The log names the refusal by its code (`rate_limited`,
                // `rate_limit_unavailable`).
                f.reason = f.problem.code.code();
                f.rate = r.verdict.map(fields);
                (None, Some(f))
            }
        }
    }
}

/// Tells every observer about one decision.
fn observe(
    all: &[std::sync::Arc<dyn super::Observer>],
    entrance: Entrance,
    route: &str,
    r: &Result<Admitted, Refused>,
) {
    let d = match r {
        Ok(a) => Decision {
            entrance,
            route,
            outcome: Outcome::Valid,
            scheme: a.scheme,
            reason: "allowed",
            status: 200,
            principal: a.principal.as_ref(),
            credential_id: a.principal.as_ref().map(|p| p.credential_id.as_str()),
            subject: a.principal.as_ref().map(|p| p.subject.as_str()),
            kind: a.principal.as_ref().map(|p| p.kind),
        },
        Err(f) => Decision {
            entrance,
            route,
            outcome: Outcome::of(Some(f.problem.code), f.reason),
            scheme: f.scheme,
            reason: f.reason,
            status: f.problem.status(),
            principal: None,
            credential_id: f.credential_id.as_deref(),
            subject: f.subject.as_deref(),
            kind: f.kind,
        },
    };
    for o in all {
        o.decided(&d);
    }
}
