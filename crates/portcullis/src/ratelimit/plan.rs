//! Which counters a request is checked against, and the response fields
//! that report the outcome: shared by the gateway and in-process services
//! so both count the same way.

use super::{Check, Pool, Subject, Verdict};
use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_core::ratelimit::Policy;
use portcullis_core::{Principal, PrincipalKind};
use smallvec::SmallVec;
use std::net::IpAddr;

/// Whose allowance a route's limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitBy {
    /// Each API key on its own; a user's or a client's credentials
    /// together; the client address when there is no principal.
    #[default]
    Caller,
    /// All keys of one owner together (users and clients as `Caller`).
    Owner,
    /// The client address, authenticated or not.
    Ip,
    /// Everyone on the route together.
    Route,
}

impl std::str::FromStr for LimitBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "caller" => Ok(LimitBy::Caller),
            "owner" => Ok(LimitBy::Owner),
            "ip" => Ok(LimitBy::Ip),
            "route" => Ok(LimitBy::Route),
            _ => Err(format!(
                "{s:?}: use \"caller\", \"owner\", \"ip\" or \"route\""
            )),
        }
    }
}

/// The counters of one request.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Inline up to four: a key's own limit and a route's two or three
    /// need no heap allocation per request.
    checks: SmallVec<[Check<'a>; 4]>,
    /// How many of `checks` (at the front) are the key's own limits.
    own: usize,
}

impl<'a> Plan<'a> {
    /// The checks for a request on `pool` (a route) whose policy is
    /// `policy` counted `by`, made by `principal` from `client`.
    ///
    /// A credential's own policy (a key's `rate_limit`) is counted per
    /// credential across every route, and replaces the route's limit when
    /// that limit counts callers or owners; a per-address or whole-route
    /// limit still applies on top.
    pub fn new(
        pool: Pool<'a>,
        policy: Option<&'a Policy>,
        by: LimitBy,
        principal: Option<&'a Principal>,
        client: IpAddr,
    ) -> Plan<'a> {
        let client = portcullis_core::net::counted_address(client);
        let mut checks = SmallVec::new();
        let own = principal.and_then(|p| p.rate_limit.as_deref().map(|l| (p, l)));
        if let Some((p, l)) = own {
            for limit in l.limits() {
                checks.push(Check {
                    pool: Pool::Named("key"),
                    subject: Subject::Named(p.kind.as_str(), &p.credential_id),
                    limit,
                });
            }
        }
        let n_own = checks.len();
        if let Some(policy) = policy {
            let subject = match (by, principal) {
                (LimitBy::Caller | LimitBy::Owner, Some(_)) if own.is_some() => None,
                (LimitBy::Caller, Some(p)) if p.kind == PrincipalKind::ApiKey => {
                    Some(Subject::Named("key", &p.credential_id))
                }
                // Another issuer's subject is counted under that issuer's
                // name (a configured `iss`, never "user" or "client"):
                // its "alice" shares no allowance with our user alice,
                // nor with a third issuer's.
                (LimitBy::Caller | LimitBy::Owner, Some(p))
                    if p.kind == PrincipalKind::External =>
                {
                    Some(Subject::Named(
                        p.issuer
                            .as_deref()
                            .unwrap_or(PrincipalKind::External.as_str()),
                        &p.subject,
                    ))
                }
                (LimitBy::Caller | LimitBy::Owner, Some(p)) => {
                    Some(Subject::Named(p.kind.as_str(), &p.subject))
                }
                (LimitBy::Caller | LimitBy::Owner | LimitBy::Ip, _) => Some(Subject::Ip(client)),
                (LimitBy::Route, _) => Some(Subject::All),
            };
            if let Some(subject) = subject {
                for limit in policy.limits() {
                    checks.push(Check {
                        pool,
                        subject,
                        limit,
                    });
                }
            }
        }
        Plan { checks, own: n_own }
    }

    /// The checks, for [`super::Limiter::check`].
    pub fn checks(&self) -> &[Check<'a>] {
        &self.checks
    }

    /// The name of the deciding limit in `RateLimit-Policy`: `k0`… for
    /// the credential's own limits, `p0`… for the route's.
    pub fn label(&self, v: &Verdict) -> (char, usize) {
        if v.index < self.own {
            ('k', v.index)
        } else {
            ('p', v.index - self.own)
        }
    }
}

// Constants, so the names are checked when compiling, not per request.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Writes `RateLimit-Policy` and `RateLimit`
/// (draft-ietf-httpapi-ratelimit-headers) for the deciding limit, and
/// `X-RateLimit-Limit / -Remaining / -Reset` when `legacy` is set.
pub fn write_headers(h: &mut HeaderMap, label: (char, usize), v: &Verdict, legacy: bool) {
    // Written on every limited request: on the stack, without `fmt`.
    let (c, i) = label;
    let mut line = Line::default();
    line.push(b"\"");
    line.push(c.encode_utf8(&mut [0u8; 4]).as_bytes());
    line.num(i as u64);
    line.push(b"\";");
    let name_len = line.len;
    line.push(b"q=");
    line.num(u64::from(v.limit.count));
    line.push(b";w=");
    line.num(v.limit.period_ms.div_ceil(1000));
    line.put(h, RATELIMIT_POLICY);
    line.len = name_len;
    line.push(b"r=");
    line.num(u64::from(v.remaining));
    line.push(b";t=");
    line.num(v.reset_secs);
    line.put(h, RATELIMIT);
    if legacy {
        h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(v.limit.count));
        h.insert(X_RATELIMIT_REMAINING, HeaderValue::from(v.remaining));
        h.insert(X_RATELIMIT_RESET, HeaderValue::from(v.reset_secs));
    }
}

/// A header value built on the stack. The longest the headers above
/// make is 72 bytes (a 4-byte label character, three 20-digit numbers).
struct Line {
    buf: [u8; 96],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 96],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, b: &[u8]) {
        let end = (self.len + b.len()).min(self.buf.len());
        let n = end - self.len;
        self.buf[self.len..end].copy_from_slice(&b[..n]);
        self.len = end;
    }

    fn num(&mut self, n: u64) {
        self.push(portcullis_core::decimal::digits(n, &mut [0u8; 20]));
    }

    fn put(&self, h: &mut HeaderMap, name: HeaderName) {
        if let Ok(v) = HeaderValue::from_bytes(&self.buf[..self.len]) {
            h.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Scopes;

    fn principal(kind: PrincipalKind, issuer: Option<&str>) -> Principal {
        Principal {
            subject: "alice".into(),
            kind,
            scopes: Scopes::default(),
            credential_id: "t1".into(),
            rate_limit: None,
            issuer: issuer.map(str::to_owned),
        }
    }

    proptest::proptest! {
        /// The headers read exactly as `format!` would write them.
        #[test]
        fn headers_match_fmt(
            c in proptest::prelude::any::<char>(),
            i: usize,
            count: u32,
            period_ms: u64,
            remaining: u32,
            reset_secs: u64,
        ) {
            let v = Verdict {
                admitted: true,
                limit: portcullis_core::ratelimit::Limit { count, period_ms, burst: 1 },
                index: 0,
                remaining,
                reset_secs,
                retry_after_secs: 0,
            };
            let mut h = HeaderMap::new();
            write_headers(&mut h, (c, i), &v, false);
            let policy = format!("\"{c}{i}\";q={count};w={}", period_ms.div_ceil(1000));
            let now = format!("\"{c}{i}\";r={remaining};t={reset_secs}");
            // Only what a header value may hold is written (as before).
            let ok = |s: &str| HeaderValue::from_str(s).is_ok();
            proptest::prop_assert_eq!(
                h.get("ratelimit-policy").map(|v| v.as_bytes().to_vec()),
                ok(&policy).then(|| policy.into_bytes())
            );
            proptest::prop_assert_eq!(
                h.get("ratelimit").map(|v| v.as_bytes().to_vec()),
                ok(&now).then(|| now.into_bytes())
            );
        }
    }

    /// Another issuer's "alice" counts apart from our user alice, our
    /// client alice, and a third issuer's alice.
    #[test]
    fn external_subjects_share_no_allowance() {
        let policy = Policy::parse("10/minute").unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let who = [
            principal(PrincipalKind::User, None),
            principal(PrincipalKind::Client, None),
            principal(PrincipalKind::External, Some("https://a.test")),
            principal(PrincipalKind::External, Some("https://b.test")),
        ];
        for by in [LimitBy::Caller, LimitBy::Owner] {
            let subjects: Vec<Subject<'_>> = who
                .iter()
                .map(|p| {
                    Plan::new(Pool::Route(0), Some(&policy), by, Some(p), ip).checks()[0].subject
                })
                .collect();
            for (i, a) in subjects.iter().enumerate() {
                for b in &subjects[i + 1..] {
                    assert_ne!(a, b, "{by:?}");
                }
            }
        }
    }
}
