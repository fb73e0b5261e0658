//! The memory rate limiter: one GCRA counter (a TAT in milliseconds) per
//! (caller, limit), in a bounded cache whose idle counters expire.
//!
//! Several limits on one request are decided together: every counter
//! involved is locked (in a fixed order, so two requests cannot deadlock),
//! all are decided, and the new values are written only if every limit
//! admits the request. A refused request changes no counter.

use super::{Check, Verdict};
use crate::clock::SharedClock;
use moka::sync::Cache;
use portcullis_core::ratelimit::{Decision, decide};
use std::hash::RandomState;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The in-process limiter.
pub struct MemoryLimiter {
    clock: SharedClock,
    counters: Cache<u128, Arc<Mutex<u64>>>,
    keys: (RandomState, RandomState),
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("counters", &self.counters.entry_count())
            .finish()
    }
}

impl MemoryLimiter {
    /// A limiter holding at most `capacity` counters; a counter unused for
    /// `idle` (the longest period configured) is dropped, which is exact:
    /// by then its TAT is in the past and it would admit a full burst
    /// anyway.
    pub fn new(clock: SharedClock, capacity: u64, idle: Duration) -> MemoryLimiter {
        MemoryLimiter {
            clock,
            counters: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle.max(Duration::from_secs(1)))
                .build(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// Decides a request of `cost` against every check, all or none.
    pub fn check(&self, checks: &[Check<'_>], cost: u32) -> Option<Verdict> {
        if checks.is_empty() {
            return None;
        }
        let now = self.clock.now_ms();
        let mut cells: Vec<(usize, u128, Arc<Mutex<u64>>)> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let k = c.memory_key(&self.keys);
                (i, k, self.counters.get_with(k, || Arc::new(Mutex::new(0))))
            })
            .collect();
        // A fixed lock order: by counter name. The same counter named twice
        // (two checks of one limit on one pool) is locked once.
        cells.sort_by_key(|c| c.1);
        cells.dedup_by_key(|c| c.1);
        let mut guards = Vec::with_capacity(cells.len());
        for (i, _, cell) in &cells {
            // A poisoned counter (a panic while held) still holds a valid
            // number.
            let g = match cell.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guards.push((*i, g));
        }
        let mut decisions = Vec::with_capacity(guards.len());
        for (i, g) in &guards {
            let tat = (**g > 0).then_some(**g);
            decisions.push((*i, decide(checks[*i].limit, tat, now, cost)));
        }
        let refused = decisions
            .iter()
            .filter_map(|(i, d)| match d {
                Decision::Refuse {
                    retry_after_ms,
                    reset_ms,
                } => Some((*i, *retry_after_ms, *reset_ms)),
                Decision::Admit { .. } => None,
            })
            .max_by_key(|(_, r, _)| *r);
        if let Some((i, retry, reset)) = refused {
            return Some(Verdict {
                admitted: false,
                limit: *checks[i].limit,
                index: i,
                remaining: 0,
                reset_secs: reset.div_ceil(1000),
                retry_after_secs: retry.div_ceil(1000).max(1),
            });
        }
        let mut tightest: Option<Verdict> = None;
        for ((i, d), (_, g)) in decisions.iter().zip(guards.iter_mut()) {
            if let Decision::Admit {
                tat,
                remaining,
                reset_ms,
            } = d
            {
                **g = *tat;
                let v = Verdict {
                    admitted: true,
                    limit: *checks[*i].limit,
                    index: *i,
                    remaining: *remaining,
                    reset_secs: reset_ms.div_ceil(1000),
                    retry_after_secs: 0,
                };
                if tightest.is_none_or(|t| v.remaining < t.remaining) {
                    tightest = Some(v);
                }
            }
        }
        tightest
    }

    /// Counters held (approximate).
    pub fn len(&self) -> u64 {
        self.counters.run_pending_tasks();
        self.counters.entry_count()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Pool, Subject};
    use super::*;
    use crate::clock::ManualClock;
    use portcullis_core::ratelimit::Limit;

    fn named<'a>(name: &'a str, limit: &'a Limit) -> Check<'a> {
        Check {
            pool: Pool::Named("t"),
            subject: Subject::Named("test", name),
            limit,
        }
    }

    #[test]
    fn several_limits_admit_together_or_not_at_all() {
        let clock = ManualClock::new(1000);
        let m = MemoryLimiter::new(clock.clone(), 1000, Duration::from_secs(3600));
        let fast = Limit {
            count: 3,
            period_ms: 1000,
            burst: 3,
        };
        let slow = Limit {
            count: 5,
            period_ms: 3_600_000,
            burst: 5,
        };
        let checks = [named("a", &fast), named("b", &slow)];
        for _ in 0..3 {
            assert!(m.check(&checks, 1).unwrap().admitted);
        }
        let v = m.check(&checks, 1).unwrap();
        assert!(!v.admitted);
        assert_eq!(v.limit, fast);
        assert_eq!(v.retry_after_secs, 1);
        // The refusal did not spend the hourly allowance: after a second,
        // two more pass (5 per hour in all), then the hourly limit decides.
        clock.advance(1);
        assert!(m.check(&checks, 1).unwrap().admitted);
        assert!(m.check(&checks, 1).unwrap().admitted);
        let v = m.check(&checks, 1).unwrap();
        assert!(!v.admitted);
        assert_eq!(v.limit, slow);
    }

    #[test]
    fn exact_under_concurrency() {
        let clock = ManualClock::new(1000);
        let m = Arc::new(MemoryLimiter::new(clock, 1000, Duration::from_secs(60)));
        let l = Limit {
            count: 100,
            period_ms: 60_000,
            burst: 100,
        };
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        if m.check(&[named("k", &l)], 1).unwrap().admitted {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100);
    }
}
