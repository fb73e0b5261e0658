//! Rate limiting: GCRA counters in memory (the default) or in Redis,
//! shared by every gateway that points at it.
//!
//! [`Limiter`] is the front: it asks Redis when one is configured, and
//! when Redis cannot answer in time it does what `on_backend_error` says
//! (count locally, admit, or refuse) while a circuit breaker keeps the
//! outage from adding a timeout to every request.

mod breaker;
mod memory;
mod plan;
mod redis;

pub use breaker::BreakerState;
pub use memory::MemoryLimiter;
pub use plan::{LimitBy, Plan, write_headers};
pub use redis::{RedisLimitError, RedisLimiter, RedisSettings};

use portcullis_core::ratelimit::Limit;
use portcullis_core::{ErrorCode, Problem};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Whose allowance a counter holds. Never a secret: key ids, owners,
/// user names, client ids, addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A named caller: `(kind, name)`, e.g. `("api_key", "alice")`.
    Named(&'a str, &'a str),
    /// A client address.
    Ip(IpAddr),
    /// Everyone at once (a route's shared pool).
    All,
}

/// One counter to check: a pool (a route's index, or a named pool such as
/// a key's own allowance), whose allowance, and the limit.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The pool: `r3` for route 3, `key`, `owner`, `auth`.
    pub pool: Pool<'a>,
    /// Whose allowance.
    pub subject: Subject<'a>,
    /// The limit.
    pub limit: &'a Limit,
}

/// Which pool a counter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool<'a> {
    /// One route's own counters.
    Route(u32),
    /// A pool shared across routes.
    Named(&'a str),
}

/// The version of the counters' format in Redis, right after the prefix
/// in every counter's name: `ns` = TATs in nanoseconds since the Unix
/// epoch. Gateways before it stored milliseconds under names without it
/// (`portcullis:rl:r0:…`), so during a rolling upgrade the old and new
/// gateways count in separate counters and neither ever reads the other's
/// number in the wrong unit (which would refuse everyone, or admit
/// everyone, until the counter expired). Change it whenever the stored
/// value's meaning changes.
pub const REDIS_FORMAT: &str = "ns:";

impl Check<'_> {
    /// The counter's name in Redis: the prefix, the format version
    /// ([`REDIS_FORMAT`]), then readable and unambiguous fields (lengths
    /// before free-form parts), including the limit itself, so a changed
    /// limit starts fresh instead of inheriting a TAT computed for another
    /// rate.
    pub fn redis_key(&self, prefix: &str) -> String {
        use std::fmt::Write;
        let mut k = String::with_capacity(prefix.len() + 64);
        k.push_str(prefix);
        k.push_str(REDIS_FORMAT);
        let _ = match self.pool {
            Pool::Route(i) => write!(k, "r{i}"),
            Pool::Named(n) => write!(k, "{}:{n}", n.len()),
        };
        let _ = match self.subject {
            Subject::Named(kind, name) => write!(k, ":{kind}:{}:{name}", name.len()),
            Subject::Ip(ip) => write!(k, ":ip:{ip}"),
            Subject::All => write!(k, ":all"),
        };
        let l = self.limit;
        let _ = write!(k, ":{}/{}/{}", l.count, l.period_ms, l.burst);
        k
    }

    /// The counter's 128-bit name in memory: two differently keyed
    /// SipHashes of the same fields, so no caller can aim a collision at
    /// another's counter and nothing is allocated per request.
    ///
    /// The fields go in as one record on the stack — the fixed-size part
    /// (tags, lengths, the address, the limit) and then the names — so
    /// each hasher takes one write, not one per field (SipHash pays for
    /// every write's tail). The lengths come before the names, so two
    /// different checks never make the same record.
    fn memory_key(&self, keys: &(std::hash::RandomState, std::hash::RandomState)) -> u128 {
        const FIXED: usize = 1 + 8 + 1 + 8 + 8 + 16 + 4 + 8 + 4;
        let mut rec = Record {
            buf: [0u8; 256],
            at: 0,
        };
        let len = |s: &str| (s.len() as u64).to_le_bytes();
        let pool_name = match self.pool {
            Pool::Route(i) => {
                rec.put(&[0]);
                rec.put(&u64::from(i).to_le_bytes());
                ""
            }
            Pool::Named(n) => {
                rec.put(&[1]);
                rec.put(&len(n));
                n
            }
        };
        let (kind, name) = match self.subject {
            Subject::Named(kind, name) => (kind, name),
            Subject::Ip(_) | Subject::All => ("", ""),
        };
        let (tag, ip) = match self.subject {
            Subject::Named(..) => (0u8, [0u8; 16]),
            Subject::Ip(IpAddr::V4(a)) => (4, a.to_ipv6_mapped().octets()),
            Subject::Ip(IpAddr::V6(a)) => (6, a.octets()),
            Subject::All => (1, [0u8; 16]),
        };
        rec.put(&[tag]);
        rec.put(&len(kind));
        rec.put(&len(name));
        rec.put(&ip);
        rec.put(&self.limit.count.to_le_bytes());
        rec.put(&self.limit.period_ms.to_le_bytes());
        rec.put(&self.limit.burst.to_le_bytes());
        debug_assert_eq!(rec.at, FIXED);
        // Usually the names fit beside it, and each hasher takes one
        // write; else the same bytes in four (SipHash streams them).
        let parts = [pool_name, kind, name];
        let fits = parts.iter().map(|p| p.len()).sum::<usize>() <= rec.buf.len() - FIXED;
        if fits {
            for p in parts {
                rec.put(p.as_bytes());
            }
        }
        let one = |s: &std::hash::RandomState| {
            let mut h = s.build_hasher();
            if fits {
                h.write(&rec.buf[..rec.at]);
            } else {
                h.write(&rec.buf[..FIXED]);
                for p in parts {
                    h.write(p.as_bytes());
                }
            }
            h.finish()
        };
        (u128::from(one(&keys.0)) << 64) | u128::from(one(&keys.1))
    }
}

/// A counter's name being written, on the stack.
struct Record {
    buf: [u8; 256],
    at: usize,
}

impl Record {
    /// Appends `b`; the caller has checked it fits (the fixed part is
    /// shorter than the buffer, and the names are added only when they fit).
    fn put(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
}

/// The outcome for the limit that decided (the refusing one, or the one
/// with the least room left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Admitted.
    pub admitted: bool,
    /// The deciding limit.
    pub limit: Limit,
    /// Index of the deciding check in the slice passed in.
    pub index: usize,
    /// Requests left under it.
    pub remaining: u32,
    /// Seconds until its allowance is whole.
    pub reset_secs: u64,
    /// Seconds to wait, when refused.
    pub retry_after_secs: u64,
}

/// The verdict of a request checked against several limits, from each
/// limit's decision (in the order of `checks`): refused by the limit that
/// makes it wait longest (the first of equals), or admitted with the
/// numbers of the limit with the least room (the first of equals). The
/// memory and Redis limiters both decide through it, so both name the
/// same limit.
pub(crate) fn verdict(
    checks: &[Check<'_>],
    decisions: impl Iterator<Item = portcullis_core::ratelimit::Decision> + Clone,
) -> Option<Verdict> {
    use portcullis_core::ratelimit::{Decision, ns_to_secs_ceil};
    let refused = decisions
        .clone()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Decision::Refuse {
                retry_after_ns,
                reset_ns,
            } => Some((i, retry_after_ns, reset_ns)),
            Decision::Admit { .. } => None,
        })
        .max_by_key(|(i, r, _)| (*r, std::cmp::Reverse(*i)));
    if let Some((i, retry, reset)) = refused {
        return Some(Verdict {
            admitted: false,
            limit: *checks.get(i)?.limit,
            index: i,
            remaining: 0,
            reset_secs: ns_to_secs_ceil(reset),
            retry_after_secs: ns_to_secs_ceil(retry).max(1),
        });
    }
    let mut tightest: Option<Verdict> = None;
    for (i, d) in decisions.enumerate() {
        if let Decision::Admit {
            remaining,
            reset_ns,
            ..
        } = d
        {
            let v = Verdict {
                admitted: true,
                limit: *checks.get(i)?.limit,
                index: i,
                remaining,
                reset_secs: ns_to_secs_ceil(reset_ns),
                retry_after_secs: 0,
            };
            if tightest.is_none_or(|t| v.remaining < t.remaining) {
                tightest = Some(v);
            }
        }
    }
    tightest
}

/// A request the limits did not admit.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The answer: 429 or 503, with `Retry-After`.
    pub problem: Problem,
    /// The refusing limit's verdict (none when the backend was down).
    pub verdict: Option<Verdict>,
}

/// What to do when the shared backend cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBackendError {
    /// Admit every request while it is down.
    Allow,
    /// Refuse every request (503 `limiter_unavailable`).
    Deny,
    /// Count in this process's memory meanwhile: each gateway enforces the
    /// limit on its own share of the traffic.
    #[default]
    Local,
}

impl OnBackendError {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnBackendError::Allow => "allow",
            OnBackendError::Deny => "deny",
            OnBackendError::Local => "local",
        }
    }
}

impl std::str::FromStr for OnBackendError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(OnBackendError::Allow),
            "deny" => Ok(OnBackendError::Deny),
            "local" => Ok(OnBackendError::Local),
            _ => Err(format!("{s:?}: use \"allow\", \"deny\" or \"local\"")),
        }
    }
}

/// The shared backend is down and the policy is to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the rate limiter's backend is unavailable")]
pub struct Unavailable {
    /// When to try again.
    pub retry_after_secs: u64,
}

/// Counts kept by the limiter, for logs and status pages.
#[derive(Debug, Default)]
pub struct Stats {
    /// Decisions Redis made.
    pub remote: AtomicU64,
    /// Decisions made while Redis was unusable (by `on_backend_error`).
    pub fallback: AtomicU64,
    /// Redis calls that failed or timed out.
    pub errors: AtomicU64,
    /// Times the breaker opened.
    pub opened: AtomicU64,
}

/// The limiter a gateway or service uses.
pub struct Limiter {
    memory: MemoryLimiter,
    remote: Option<(RedisLimiter, breaker::Breaker)>,
    on_error: OnBackendError,
    stats: Stats,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("memory", &self.memory)
            .field("redis", &self.remote.is_some())
            .field("on_error", &self.on_error)
            .finish()
    }
}

impl Limiter {
    /// A limiter counting in this process only.
    pub fn memory(memory: MemoryLimiter) -> Limiter {
        Limiter {
            memory,
            remote: None,
            on_error: OnBackendError::Local,
            stats: Stats::default(),
        }
    }

    /// A limiter counting in Redis, with `memory` for `on_error = local`.
    pub fn redis(redis: RedisLimiter, memory: MemoryLimiter, on_error: OnBackendError) -> Limiter {
        let b = breaker::Breaker::new(redis.settings());
        Limiter {
            memory,
            remote: Some((redis, b)),
            on_error,
            stats: Stats::default(),
        }
    }

    /// Decides a request of `cost` against every check, all or none:
    /// `Ok(None)` when there is nothing to check, or when Redis is down and
    /// the policy is `allow`.
    pub async fn check(
        &self,
        checks: &[Check<'_>],
        cost: u32,
    ) -> Result<Option<Verdict>, Unavailable> {
        if checks.is_empty() {
            return Ok(None);
        }
        let Some((redis, breaker)) = &self.remote else {
            return Ok(self.memory.check(checks, cost));
        };
        if let Some(permit) = breaker.permit() {
            match redis.check(checks, cost).await {
                Ok(v) => {
                    if breaker.success(permit) {
                        tracing::info!(
                            target: "portcullis::ratelimit",
                            "rate-limit backend reachable again; shared limiting resumed"
                        );
                    }
                    self.stats.remote.fetch_add(1, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if breaker.failure(permit) {
                        let n = self.stats.opened.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(
                            target: "portcullis::ratelimit",
                            error = %e,
                            mode = ?self.on_error,
                            times_opened = n,
                            "rate-limit backend unavailable; breaker open, deciding by on_backend_error"
                        );
                    } else {
                        tracing::debug!(target: "portcullis::ratelimit", error = %e, "rate-limit backend call failed");
                    }
                }
            }
        }
        self.stats.fallback.fetch_add(1, Ordering::Relaxed);
        match self.on_error {
            OnBackendError::Allow => Ok(None),
            OnBackendError::Deny => Err(Unavailable {
                retry_after_secs: breaker.retry_after_secs(),
            }),
            OnBackendError::Local => Ok(self.memory.check(checks, cost)),
        }
    }

    /// [`Limiter::check`] as an answer: `Ok` with the deciding verdict
    /// (for the `RateLimit` fields) when admitted, or why not — 429
    /// `rate_limited` with the refusing verdict, or 503
    /// `limiter_unavailable` while the backend is down under `deny`.
    pub async fn admit(&self, checks: &[Check<'_>], cost: u32) -> Result<Option<Verdict>, Refused> {
        match self.check(checks, cost).await {
            Ok(Some(v)) if !v.admitted => Err(Refused {
                problem: Problem::new(ErrorCode::RateLimited).retry_after(v.retry_after_secs),
                verdict: Some(v),
            }),
            Ok(v) => Ok(v),
            Err(u) => Err(Refused {
                problem: Problem::new(ErrorCode::LimiterUnavailable)
                    .retry_after(u.retry_after_secs),
                verdict: None,
            }),
        }
    }

    /// The breaker's state (always closed without Redis).
    pub fn breaker_state(&self) -> BreakerState {
        self.remote
            .as_ref()
            .map_or(BreakerState::Closed, |(_, b)| b.state())
    }

    /// Whether counters live in Redis.
    pub fn is_shared(&self) -> bool {
        self.remote.is_some()
    }

    /// What happens while Redis cannot answer.
    pub fn on_backend_error(&self) -> OnBackendError {
        self.on_error
    }

    /// The counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The memory limiter (the only one, or the fallback).
    pub fn local(&self) -> &MemoryLimiter {
        &self.memory
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// Short names from a small alphabet (so pairs often share parts, and
    /// a name may hold what another spreads over two fields), and now and
    /// then one too long for the record's one-write path.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "[ab:]{0,4}",
            1 => "[ab]{200,300}",
        ]
    }

    #[derive(Debug, Clone, PartialEq)]
    enum S {
        Named(String, String),
        Ip(IpAddr),
        All,
    }

    fn check() -> impl Strategy<Value = (Option<String>, u32, S, Limit)> {
        let subject = prop_oneof![
            (name(), name()).prop_map(|(k, n)| S::Named(k, n)),
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
                // The v4-mapped twin of a v4 address is another subject.
                any::<[u8; 4]>()
                    .prop_map(|o| IpAddr::from(std::net::Ipv4Addr::from(o).to_ipv6_mapped())),
            ]
            .prop_map(S::Ip),
            Just(S::All),
        ];
        (
            proptest::option::of(name()),
            0u32..3,
            subject,
            (1u32..3, 1u64..3, 1u32..3).prop_map(|(count, period_ms, burst)| Limit {
                count,
                period_ms,
                burst,
            }),
        )
    }

    fn key(c: &(Option<String>, u32, S, Limit), keys: &RandomStatePair) -> u128 {
        let (pool, i, s, limit) = c;
        Check {
            pool: pool.as_deref().map_or(Pool::Route(*i), Pool::Named),
            subject: match s {
                S::Named(k, n) => Subject::Named(k, n),
                S::Ip(ip) => Subject::Ip(*ip),
                S::All => Subject::All,
            },
            limit,
        }
        .memory_key(keys)
    }

    type RandomStatePair = (std::hash::RandomState, std::hash::RandomState);

    proptest! {
        /// Two checks share a counter exactly when they are the same check
        /// (a route's pool ignores the unused index of a named one, and so
        /// on): the record a counter's name is hashed from is unambiguous.
        #[test]
        fn counters_are_the_same_only_for_the_same_check(a in check(), b in check()) {
            let keys = (std::hash::RandomState::new(), std::hash::RandomState::new());
            let norm = |c: &(Option<String>, u32, S, Limit)| {
                let mut c = c.clone();
                if c.0.is_some() {
                    c.1 = 0;
                }
                c
            };
            prop_assert_eq!(key(&a, &keys) == key(&b, &keys), norm(&a) == norm(&b));
            prop_assert_eq!(key(&a, &keys), key(&a.clone(), &keys));
        }
    }
}
