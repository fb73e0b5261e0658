//! A circuit breaker in front of Redis: after `threshold` failures in a row
//! it opens and no request waits for Redis; after `cooldown` one request
//! (the probe) tries again, and its success closes the breaker.
//!
//! Lock-free: three atomics read on every request.

use super::RedisSettings;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Redis is asked.
    Closed,
    /// Redis is not asked until the cooldown ends.
    Open,
    /// The cooldown ended: one probe is (or may be) asking.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Leave to call Redis once; the breaker learns the outcome through
/// [`Breaker::success`] or [`Breaker::failure`]. A probe dropped without an
/// outcome (its request was cancelled) lets the next caller probe.
#[derive(Debug)]
pub(super) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

#[derive(Debug)]
pub(super) struct Breaker {
    base: Instant,
    threshold: u32,
    cooldown_ms: u64,
    failures: AtomicU32,
    /// Milliseconds since `base` until which the breaker is open; 0 when
    /// closed.
    open_until: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    pub(super) fn new(s: &RedisSettings) -> Breaker {
        Breaker {
            base: Instant::now(),
            threshold: s.breaker_threshold.max(1),
            cooldown_ms: u64::try_from(s.breaker_cooldown.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        // Never 0, so 0 can mean "closed".
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether this request may call Redis.
    pub(super) fn permit(&self) -> Option<Permit<'_>> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        if self.now() < until {
            return None;
        }
        // Half open: exactly one caller probes at a time.
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Permit {
                breaker: self,
                probe: true,
            })
    }

    /// Records a success; true when it closed an open breaker.
    pub(super) fn success(&self, p: Permit<'_>) -> bool {
        self.failures.store(0, Ordering::Release);
        if p.probe {
            self.open_until.store(0, Ordering::Release);
            return true;
        }
        false
    }

    /// Records a failure; true when it opened a closed breaker.
    pub(super) fn failure(&self, p: Permit<'_>) -> bool {
        let until = self.now().saturating_add(self.cooldown_ms);
        if p.probe {
            // Still down: another cooldown.
            self.open_until.store(until, Ordering::Release);
            return false;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        n >= self.threshold
            && self
                .open_until
                .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    pub(super) fn state(&self) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            u if self.now() < u => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Seconds until Redis is tried again, for `Retry-After`.
    pub(super) fn retry_after_secs(&self) -> u64 {
        let until = self.open_until.load(Ordering::Acquire);
        let left = until.saturating_sub(self.now());
        Duration::from_millis(left).as_secs().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new(&RedisSettings {
            breaker_threshold: 2,
            breaker_cooldown: Duration::from_millis(cooldown_ms),
            ..RedisSettings::new("redis://127.0.0.1:1")
        })
    }

    #[test]
    fn opens_after_threshold_then_one_probe_closes_it() {
        let b = breaker(30);
        assert!(!b.failure(b.permit().unwrap()));
        assert!(b.failure(b.permit().unwrap()));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.permit().is_none());
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.permit().unwrap();
        // Only one probe at a time.
        assert!(b.permit().is_none());
        assert!(b.success(probe));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.permit().is_some());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = breaker(20);
        b.failure(b.permit().unwrap());
        b.failure(b.permit().unwrap());
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.permit().unwrap();
        assert!(!b.failure(probe));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker(20);
        b.failure(b.permit().unwrap());
        assert!(!b.success(b.permit().unwrap()));
        assert!(!b.failure(b.permit().unwrap()));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
