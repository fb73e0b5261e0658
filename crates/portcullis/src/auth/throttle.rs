//! Brute-force protection for password checks (token endpoint, Basic,
//! login).
//!
//! Failures are counted per (account, client IP) and per client IP. Past a
//! threshold each further failure locks that pair (or that IP) for twice as
//! long as the last, up to a cap. The account itself is never locked for
//! everyone: an attacker guessing from elsewhere cannot lock its owner out.
//! Failures against one account from many addresses instead slow every
//! further check of that account a little (up to one second), which costs
//! a distributed guesser far more than a person mistyping.

use crate::clock::SharedClock;
use moka::sync::Cache;
use portcullis_core::KeyHash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

/// Thresholds.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Failures for one account from one IP before lockouts start.
    pub per_account_ip: u32,
    /// Failures from one IP (any account) before lockouts start.
    pub per_ip: u32,
    /// Failures for one account (any IP) before checks are slowed.
    pub per_account_slow: u32,
    /// Longest lockout, seconds.
    pub max_lockout: i64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            per_account_ip: 5,
            per_ip: 20,
            per_account_slow: 10,
            max_lockout: 900,
        }
    }
}

#[derive(Debug, Default)]
struct Counter {
    failures: AtomicU32,
    locked_until: AtomicI64,
}

impl Counter {
    fn fail(&self, limit: u32, now: i64, max: i64) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= limit {
            let exp = (n - limit).min(20);
            let secs = (1i64 << exp).min(max);
            // The clock counts whole seconds: one more makes the lock last
            // at least `secs`, however far into the current second we are.
            self.locked_until
                .fetch_max(now + secs + 1, Ordering::AcqRel);
        }
    }
    fn retry_after(&self, now: i64) -> Option<i64> {
        let until = self.locked_until.load(Ordering::Acquire);
        (until > now).then_some(until - now)
    }
}

/// Counts failures and says when to refuse.
pub struct Throttle {
    settings: ThrottleSettings,
    clock: SharedClock,
    pairs: Cache<KeyHash, Arc<Counter>>,
    ips: Cache<IpAddr, Arc<Counter>>,
    accounts: Cache<KeyHash, Arc<Counter>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn pair_key(account: &str, ip: IpAddr) -> KeyHash {
    KeyHash::of(&format!("{ip}\0{account}"))
}

impl Throttle {
    /// A throttle.
    pub fn new(settings: ThrottleSettings, clock: SharedClock) -> Throttle {
        // Counters are forgotten after an idle lockout period: a user who
        // comes back tomorrow starts clean.
        let idle =
            Duration::from_secs(u64::try_from(settings.max_lockout.max(60)).unwrap_or(900) * 2);
        let cache = || {
            Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(idle)
                .build()
        };
        Throttle {
            settings,
            clock,
            pairs: cache(),
            ips: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(idle)
                .build(),
            accounts: cache(),
        }
    }

    /// `Err(seconds)` while the pair or the IP is locked out.
    pub fn check(&self, account: &str, ip: IpAddr) -> Result<(), i64> {
        let now = self.clock.now();
        let a = self
            .pairs
            .get(&pair_key(account, ip))
            .and_then(|c| c.retry_after(now));
        let b = self.ips.get(&ip).and_then(|c| c.retry_after(now));
        match a.max(b) {
            Some(s) => Err(s),
            None => Ok(()),
        }
    }

    /// How long to hold a check of this account, given failures from
    /// everywhere.
    pub fn delay(&self, account: &str) -> Duration {
        let n = self
            .accounts
            .get(&KeyHash::of(account))
            .map_or(0, |c| c.failures.load(Ordering::Acquire));
        let over = n.saturating_sub(self.settings.per_account_slow);
        Duration::from_millis(u64::from(over.min(10)) * 100)
    }

    /// Records a failure.
    pub fn failure(&self, account: &str, ip: IpAddr) {
        let now = self.clock.now();
        let max = self.settings.max_lockout;
        self.pairs
            .get_with(pair_key(account, ip), Default::default)
            .fail(self.settings.per_account_ip, now, max);
        self.ips
            .get_with(ip, Default::default)
            .fail(self.settings.per_ip, now, max);
        self.accounts
            .get_with(KeyHash::of(account), Default::default)
            .fail(u32::MAX, now, max);
    }

    /// Records a success: the pair starts clean (the IP's and account's
    /// counts stand, so one good login does not reset a spray).
    pub fn success(&self, account: &str, ip: IpAddr) {
        self.pairs.invalidate(&pair_key(account, ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn locks_the_pair_not_the_account() {
        let clock = ManualClock::new(1000);
        let t = Throttle::new(ThrottleSettings::default(), clock.clone());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..4 {
            t.failure("alice", a);
            assert!(t.check("alice", a).is_ok());
        }
        t.failure("alice", a);
        assert_eq!(t.check("alice", a), Err(2));
        // The owner, elsewhere, is not locked out.
        assert!(t.check("alice", b).is_ok());
        t.failure("alice", a);
        assert_eq!(t.check("alice", a), Err(3));
        clock.advance(3);
        assert!(t.check("alice", a).is_ok());
        t.success("alice", a);
        assert!(t.check("alice", a).is_ok());
    }

    #[test]
    fn locks_a_spraying_ip_and_caps() {
        let clock = ManualClock::new(1000);
        let s = ThrottleSettings {
            max_lockout: 60,
            ..ThrottleSettings::default()
        };
        let t = Throttle::new(s, clock.clone());
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..19 {
            t.failure(&format!("user{i}"), ip);
        }
        assert!(t.check("someone", ip).is_ok());
        t.failure("user19", ip);
        assert!(t.check("someone", ip).is_err());
        for i in 0..40 {
            t.failure(&format!("x{i}"), ip);
        }
        assert_eq!(t.check("someone", ip), Err(61));
        assert_eq!(t.delay("alice"), Duration::ZERO);
    }
}
