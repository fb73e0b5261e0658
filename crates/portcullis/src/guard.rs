//! The request guard: find the one credential, verify it, check scopes.
//!
//! The gateway's proxy, its decision endpoint, the admin API and (later)
//! in-process services all call [`Guard::check`], so there is one
//! implementation of every decision.

use crate::store::StoreError;
use crate::verify::{KeyVerdict, Verifier};
use http::HeaderMap;
use portcullis_core::credential::{CredentialNames, extract};
use portcullis_core::{
    ErrorCode, Extracted, Principal, PrincipalKind, Problem, Scheme, SchemeSet, Scopes,
};
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
}

/// A request that may not.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The answer for the client.
    pub problem: Problem,
    /// The credential's id, when it is known (for the log).
    pub credential_id: Option<String>,
    /// The scheme the credential came by.
    pub scheme: Option<Scheme>,
}

impl Denied {
    fn new(problem: Problem, scheme: Option<Scheme>) -> Denied {
        Denied {
            problem,
            credential_id: None,
            scheme,
        }
    }
}

/// Checks requests against policies.
#[derive(Debug, Clone)]
pub struct Guard {
    verifier: Arc<Verifier>,
    names: CredentialNames,
}

fn invalid_challenge(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Bearer => "Bearer error=\"invalid_token\"",
        Scheme::Basic => "Basic",
        _ => "APIKey",
    }
}

impl Guard {
    /// A guard over a verifier.
    pub fn new(verifier: Arc<Verifier>, names: CredentialNames) -> Guard {
        Guard { verifier, names }
    }

    /// The names credentials are read under.
    pub fn names(&self) -> &CredentialNames {
        &self.names
    }

    /// The verifier.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Decides a request: `Ok` to proceed, `Err` with the answer.
    pub async fn check(
        &self,
        policy: &Policy,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Granted, Denied> {
        let r = self.decide(policy, headers, query).await;
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
        policy: &Policy,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Granted, Denied> {
        if policy.schemes.is_public() {
            return Ok(Granted {
                principal: None,
                scheme: None,
            });
        }
        let presented = match extract(&policy.schemes, &self.names, headers, query) {
            Extracted::Missing => {
                let mut p = Problem::new(ErrorCode::NotAuthenticated);
                if let Some(c) = policy.schemes.challenge() {
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
        let principal = match scheme {
            Scheme::ApiKeyHeader | Scheme::ApiKeyQuery | Scheme::ApiKeyCookie => {
                self.verify_key(value, scheme).await?
            }
            Scheme::Bearer if portcullis_core::key::looks_like_key(value) => {
                self.verify_key(value, scheme).await?
            }
            // JWTs, Basic and sessions arrive with the identity issue; until
            // then config refuses routes that name basic or session, and a
            // bearer token that is not a key is not a valid credential.
            _ => return Err(Denied::new(invalid("unsupported_token"), Some(scheme))),
        };
        let missing = principal.scopes.missing(&policy.scopes);
        if !missing.is_empty() {
            let need = policy.scopes.to_space_separated();
            return Err(Denied {
                problem: Problem::new(ErrorCode::InsufficientScope).challenge(format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{need}\""
                )),
                credential_id: Some(principal.credential_id),
                scheme: Some(scheme),
            });
        }
        Ok(Granted {
            principal: Some(principal),
            scheme: Some(scheme),
        })
    }

    async fn verify_key(&self, value: &str, scheme: Scheme) -> Result<Principal, Denied> {
        match self.verifier.verify(value).await {
            Ok(KeyVerdict::Valid(k)) => Ok(Principal {
                subject: k.grant.owner.clone(),
                kind: PrincipalKind::ApiKey,
                scopes: k.grant.scopes.clone(),
                credential_id: k.grant.key_id.clone(),
            }),
            Ok(KeyVerdict::Rejected(r)) => Err(Denied {
                problem: Problem::new(ErrorCode::InvalidCredentials)
                    .challenge(invalid_challenge(scheme))
                    .log_reason(r.reason()),
                credential_id: r.key_id().map(str::to_owned),
                scheme: Some(scheme),
            }),
            Err(e) => Err(store_down(e, scheme)),
        }
    }
}

fn store_down(e: StoreError, scheme: Scheme) -> Denied {
    tracing::error!(error = %e, "credential store unavailable");
    Denied::new(
        Problem::new(ErrorCode::StoreUnavailable).log_reason("store_unavailable"),
        Some(scheme),
    )
}
