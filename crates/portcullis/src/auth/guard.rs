//! The request guard: find the one credential, verify it, check scopes.
//!
//! The gateway's proxy, its decision endpoint, the admin API and (later)
//! in-process services all call [`Guard::check`], so there is one
//! implementation of every decision.

use crate::auth::identity::{Identity, Refusal};
use crate::auth::static_key::{self, StaticKey};
use crate::auth::verifier::{CachedKey, KeyRejection, KeyVerdict, Verifier};
use crate::store::StoreError;
use http::{HeaderMap, Method};
use portcullis_core::credential::{CredentialNames, extract};
use portcullis_core::csrf::{CsrfError, is_unsafe};
use portcullis_core::{
    ErrorCode, Extracted, Principal, PrincipalKind, Problem, Scheme, SchemeSet, Scopes,
};
use std::net::IpAddr;
use std::sync::Arc;

/// What a route demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Accepted schemes, in order; empty = public.
    pub schemes: SchemeSet,
    /// Scopes the principal must hold.
    pub scopes: Scopes,
}

impl Policy {
    /// A public policy.
    pub fn public() -> Policy {
        Policy {
            schemes: SchemeSet::new(&[]),
            scopes: Scopes::empty(),
        }
    }
}

/// A request that may proceed.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Who, when the route is not public.
    pub principal: Option<Principal>,
    /// The scheme the credential came by.
    pub scheme: Option<Scheme>,
    /// A key whose uses are limited, still to be spent by
    /// [`Guard::spend`].
    pub metered: Option<Arc<CachedKey>>,
}

/// A request that may not.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The answer for the client.
    pub problem: Problem,
    /// The credential's id, when it is known (for the log).
    pub credential_id: Option<portcullis_core::shared_str::SharedStr>,
    /// The scheme the credential came by.
    pub scheme: Option<Scheme>,
    /// What the credential is, when it verified or was recognised (a key
    /// refused for its state): whether `credential_id` names a key.
    pub kind: Option<PrincipalKind>,
}

impl Denied {
    fn new(problem: Problem, scheme: Option<Scheme>) -> Denied {
        Denied {
            problem,
            credential_id: None,
            scheme,
            kind: None,
        }
    }
}

/// The parts of a request the guard reads.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The method (unsafe methods with cookie credentials need CSRF checks).
    pub method: &'a Method,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The query string.
    pub query: Option<&'a str>,
    /// The client's address, as far as it can be trusted (for
    /// brute-force counting).
    pub client_ip: Option<IpAddr>,
    /// The origin the request was sent to (`https://api.example.com`), for
    /// the CSRF origin check.
    pub origin: Option<&'a str>,
}

impl<'a> Head<'a> {
    /// A head with no client address or origin.
    pub fn new(method: &'a Method, headers: &'a HeaderMap, query: Option<&'a str>) -> Head<'a> {
        Head {
            method,
            headers,
            query,
            client_ip: None,
            origin: None,
        }
    }
}

/// Checks requests against policies.
#[derive(Debug, Clone)]
pub struct Guard {
    verifier: Option<Arc<Verifier>>,
    static_keys: Arc<[StaticKey]>,
    names: CredentialNames,
    identity: Option<Arc<Identity>>,
}

pub(crate) fn invalid_challenge(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Bearer => "Bearer error=\"invalid_token\"",
        Scheme::Basic => portcullis_core::basic::CHALLENGE,
        Scheme::Session => "Cookie",
        _ => "APIKey",
    }
}

impl Guard {
    /// A guard over a verifier.
    pub fn new(verifier: Arc<Verifier>, names: CredentialNames) -> Guard {
        Guard {
            verifier: Some(verifier),
            static_keys: Arc::new([]),
            names,
            identity: None,
        }
    }

    /// A guard with no key store: only static keys (and, with
    /// [`Guard::with_identity`], users and tokens) are accepted.
    pub fn without_store(names: CredentialNames) -> Guard {
        Guard {
            verifier: None,
            static_keys: Arc::new([]),
            names,
            identity: None,
        }
    }

    /// Adds keys from the environment, accepted wherever an API key is
    /// (header, query, cookie, or `Authorization: Bearer`).
    pub fn with_static_keys(mut self, keys: Vec<StaticKey>) -> Guard {
        self.static_keys = keys.into();
        self
    }

    /// Adds users, tokens and sessions: the `bearer` JWT, `basic` and
    /// `session` schemes.
    pub fn with_identity(mut self, identity: Arc<Identity>) -> Guard {
        self.identity = Some(identity);
        self
    }

    /// The identity service, when configured.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// The names credentials are read under.
    pub fn names(&self) -> &CredentialNames {
        &self.names
    }

    /// The static key `presented` is, if any.
    pub fn static_key(&self, presented: &str) -> Option<&StaticKey> {
        static_key::find(&self.static_keys, presented)
    }

    /// Whether a static key holding `scope` is accepted: a credential
    /// from the environment, which the admin API cannot revoke.
    pub fn static_key_holds(&self, scope: &str) -> bool {
        self.static_keys
            .iter()
            .any(|k| k.principal().scopes.contains(scope))
    }

    /// The verifier of managed keys, when there is a store.
    pub fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.verifier.as_ref()
    }

    /// Decides a request: `Ok` to proceed, `Err` with the answer. A key
    /// with limited uses spends one.
    pub async fn check(&self, policy: &Policy, head: &Head<'_>) -> Result<Granted, Denied> {
        let g = self.authenticate(policy, head).await?;
        self.spend(&g, 1).await?;
        Ok(g)
    }

    /// Spends `cost` uses of the granted key, if its uses are limited:
    /// called after the rate limiter admitted the request, so a refused
    /// request costs no quota.
    pub async fn spend(&self, g: &Granted, cost: u32) -> Result<(), Denied> {
        let (Some(k), Some(verifier)) = (&g.metered, &self.verifier) else {
            return Ok(());
        };
        let rejection = match verifier.spend(k, cost).await {
            Ok(None) => return Ok(()),
            Ok(Some(r)) => r,
            Err(e) => return Err(store_down(e, g.scheme.unwrap_or(Scheme::ApiKeyHeader))),
        };
        let scheme = g.scheme.unwrap_or(Scheme::ApiKeyHeader);
        let d = reject_key(rejection, scheme);
        tracing::debug!(
            reason = d.problem.log_reason,
            key_id = d.credential_id.as_deref().unwrap_or(""),
            "credential refused"
        );
        Err(d)
    }

    /// Decides a request like [`Guard::check`] but leaves a limited key's
    /// use unspent: follow with [`Guard::spend`].
    pub async fn authenticate(&self, policy: &Policy, head: &Head<'_>) -> Result<Granted, Denied> {
        self.authenticate_parts(&policy.schemes, &policy.scopes, head)
            .await
    }

    /// [`Guard::authenticate`] with the policy's parts given apart, so a
    /// caller holding a scheme set and a scope set need not build a
    /// [`Policy`] for each request.
    pub(crate) async fn authenticate_parts(
        &self,
        schemes: &SchemeSet,
        scopes: &Scopes,
        head: &Head<'_>,
    ) -> Result<Granted, Denied> {
        let r = self.decide(schemes, scopes, head).await;
        if let Err(d) = &r {
            tracing::debug!(
                reason = d.problem.log_reason,
                key_id = d.credential_id.as_deref().unwrap_or(""),
                scheme = d.scheme.map_or("", |s| s.name()),
                "credential refused"
            );
        }
        r
    }

    async fn decide(
        &self,
        schemes: &SchemeSet,
        scopes: &Scopes,
        head: &Head<'_>,
    ) -> Result<Granted, Denied> {
        if schemes.is_public() {
            return Ok(Granted {
                principal: None,
                scheme: None,
                metered: None,
            });
        }
        let presented = match extract(schemes, &self.names, head.headers, head.query) {
            Extracted::Missing => {
                let mut p = Problem::new(ErrorCode::NotAuthenticated);
                if let Some(c) = schemes.challenge() {
                    p = p.challenge(c);
                }
                return Err(Denied::new(p, None));
            }
            Extracted::Ambiguous(why) => {
                return Err(Denied::new(
                    Problem::new(ErrorCode::AmbiguousCredentials)
                        .detail(why)
                        .log_reason("ambiguous_credentials"),
                    None,
                ));
            }
            Extracted::One(p) => p,
        };
        let scheme = presented.scheme;
        let invalid = |reason: &'static str| {
            Problem::new(ErrorCode::InvalidCredentials)
                .challenge(invalid_challenge(scheme))
                .log_reason(reason)
        };
        let Some(value) = presented.value.as_deref() else {
            return Err(Denied::new(invalid("unreadable_credential"), Some(scheme)));
        };
        let mut metered = None;
        let principal = match scheme {
            Scheme::ApiKeyHeader | Scheme::ApiKeyQuery | Scheme::ApiKeyCookie => {
                let (p, m) = self.verify_key(value, scheme).await?;
                metered = m;
                p
            }
            Scheme::Bearer
                if portcullis_core::key::looks_like_key(value)
                    || static_key::find(&self.static_keys, value).is_some() =>
            {
                let (p, m) = self.verify_key(value, scheme).await?;
                metered = m;
                p
            }
            Scheme::Bearer => {
                let Some(id) = &self.identity else {
                    return Err(Denied::new(invalid("unsupported_token"), Some(scheme)));
                };
                match id.verify_access_token(value).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(reason)) => return Err(Denied::new(invalid(reason), Some(scheme))),
                    Err(e) => return Err(store_down(e, scheme)),
                }
            }
            Scheme::Basic => {
                let Some(id) = &self.identity else {
                    return Err(Denied::new(invalid("unsupported_scheme"), Some(scheme)));
                };
                let creds = match portcullis_core::basic::parse(value) {
                    Ok(c) => c,
                    Err(e) => return Err(Denied::new(invalid(e.reason()), Some(scheme))),
                };
                match id
                    .verify_basic(&creds.username, &creds.password, head.client_ip)
                    .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(Refusal::Invalid(reason))) => {
                        let mut d = Denied::new(invalid(reason), Some(scheme));
                        d.credential_id = Some(format!("basic:{}", creds.username).into());
                        return Err(d);
                    }
                    Ok(Err(Refusal::Locked(secs))) => {
                        return Err(Denied::new(locked(secs), Some(scheme)));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "basic check failed");
                        return Err(Denied::new(
                            Problem::new(ErrorCode::StoreUnavailable)
                                .log_reason("store_unavailable"),
                            Some(scheme),
                        ));
                    }
                }
            }
            Scheme::Session => {
                let Some(id) = &self.identity else {
                    return Err(Denied::new(invalid("unsupported_scheme"), Some(scheme)));
                };
                match id.verify_session(value).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(reason)) => return Err(Denied::new(invalid(reason), Some(scheme))),
                    Err(e) => return Err(store_down(e, scheme)),
                }
            }
        };
        // Cookies ride along on requests other sites make: an unsafe
        // method carried by one must prove it came from us.
        if matches!(scheme, Scheme::Session | Scheme::ApiKeyCookie) && is_unsafe(head.method) {
            let checked = match &self.identity {
                Some(id) => id.check_csrf(head.headers, head.origin, value),
                // Without the identity service there is no CSRF key, so a
                // cookie key can only be used for safe methods.
                None => Err(CsrfError::MissingToken),
            };
            if let Err(e) = checked {
                return Err(Denied {
                    problem: Problem::new(ErrorCode::CsrfFailed)
                        .detail(e.detail())
                        .log_reason(e.reason()),
                    kind: Some(principal.kind),
                    credential_id: Some(principal.credential_id),
                    scheme: Some(scheme),
                });
            }
        }
        if !principal.scopes.covers(scopes) {
            return Err(Denied {
                problem: insufficient_scope(scopes),
                kind: Some(principal.kind),
                credential_id: Some(principal.credential_id),
                scheme: Some(scheme),
            });
        }
        Ok(Granted {
            principal: Some(principal),
            scheme: Some(scheme),
            metered,
        })
    }

    async fn verify_key(
        &self,
        value: &str,
        scheme: Scheme,
    ) -> Result<(Principal, Option<Arc<CachedKey>>), Denied> {
        if let Some(k) = static_key::find(&self.static_keys, value) {
            return Ok((k.principal().clone(), None));
        }
        let Some(verifier) = &self.verifier else {
            return Err(reject_key(KeyRejection::Unknown, scheme));
        };
        match verifier.verify_unspent(value).await {
            Ok(KeyVerdict::Valid(k)) => Ok((
                Principal {
                    subject: k.grant.owner.clone(),
                    kind: PrincipalKind::ApiKey,
                    scopes: k.grant.scopes.clone(),
                    credential_id: k.grant.key_id.clone(),
                    rate_limit: k.grant.rate_limit.clone(),
                    issuer: None,
                },
                k.grant.remaining_uses.is_some().then_some(k),
            )),
            Ok(KeyVerdict::Rejected(r)) => Err(reject_key(r, scheme)),
            Err(e) => Err(store_down(e, scheme)),
        }
    }
}

/// The answer for a refused key: 401, or 429 when its quota is spent
/// until the next refill.
fn reject_key(r: KeyRejection, scheme: Scheme) -> Denied {
    let problem = match &r {
        KeyRejection::Exhausted {
            retry_after_secs, ..
        } => Problem::new(ErrorCode::QuotaExceeded).retry_after(*retry_after_secs),
        _ => Problem::new(ErrorCode::InvalidCredentials).challenge(invalid_challenge(scheme)),
    };
    Denied {
        problem: problem.log_reason(r.reason()),
        credential_id: r.key_id().map(Into::into),
        scheme: Some(scheme),
        // A key that verified but was refused for its state names a real
        // key; one refused before that names nothing.
        kind: r.key_id().map(|_| PrincipalKind::ApiKey),
    }
}

/// The answer for a principal lacking some of `required` (RFC 6750 §3.1).
pub fn insufficient_scope(required: &Scopes) -> Problem {
    Problem::new(ErrorCode::InsufficientScope).challenge(format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\"",
        required.to_space_separated()
    ))
}

/// The answer while an account or address is locked out.
pub fn locked(secs: i64) -> Problem {
    Problem::new(ErrorCode::TooManyAttempts)
        .retry_after(u64::try_from(secs.max(1)).unwrap_or(1))
        .log_reason("locked_out")
}

fn store_down(e: StoreError, scheme: Scheme) -> Denied {
    tracing::error!(error = %e, "credential store unavailable");
    Denied::new(
        Problem::new(ErrorCode::StoreUnavailable).log_reason("store_unavailable"),
        Some(scheme),
    )
}
