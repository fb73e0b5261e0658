//! The memory rate limiter: one GCRA counter (a TAT in nanoseconds since
//! the Unix epoch) per (caller, limit), in a sharded hash map.
//!
//! A counter whose TAT has passed holds nothing a missing counter would
//! not (its caller has a full burst either way), so expiry needs no timer:
//! a shard that grows drops its passed counters, and one that is full
//! drops those closest to passing. Memory is bounded by `capacity`
//! counters of 24 bytes plus the map's overhead.
//!
//! Several limits on one request are decided together: every shard
//! involved is locked (in index order, so two requests cannot deadlock),
//! all limits are decided, and the new values are written only if every
//! limit admits the request. A refused request changes no counter.

use super::{Check, Verdict};
use crate::clock::SharedClock;
use portcullis_core::ratelimit::{Decision, decide};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard};

/// Shards: enough that two cores rarely meet on one lock.
const SHARDS: usize = 64;

/// Checks decided with scratch space on the stack (no allocation): a
/// policy has at most 8 limits, and a request usually meets one or two.
const INLINE: usize = 8;

/// Fills the scratch decisions before each is decided.
const PLACEHOLDER: Decision = Decision::Refuse {
    retry_after_ns: 0,
    reset_ns: 0,
};

/// The counter names are already keyed SipHash outputs: the map uses
/// their low bits as they are instead of hashing them again.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        // The low 64 bits, one of the two keyed hashes.
        self.0 = v as u64;
    }
}

type Map = HashMap<u128, u64, BuildHasherDefault<Prehashed>>;

struct Shard {
    map: Map,
    /// The size at which the shard next drops passed counters.
    sweep_at: usize,
}

/// The in-process limiter.
pub struct MemoryLimiter {
    clock: SharedClock,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    keys: (RandomState, RandomState),
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("counters", &self.len())
            .finish()
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A poisoned shard (a panic while held) still holds valid numbers.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shard {
    /// Makes room for one more counter at `now`.
    fn room(&mut self, now: u64, cap: usize) {
        if self.map.len() < self.sweep_at.min(cap) {
            return;
        }
        self.map.retain(|_, tat| *tat > now);
        if self.map.len() >= cap {
            // Still full of live counters: drop the eighth closest to
            // passing, whose callers lose the least by starting afresh.
            let mut tats: Vec<u64> = self.map.values().copied().collect();
            let nth = tats.len() / 8;
            let (_, cut, _) = tats.select_nth_unstable(nth);
            let cut = *cut;
            self.map.retain(|_, tat| *tat > cut);
        }
        self.sweep_at = (self.map.len() * 2).clamp(1024, cap);
    }
}

impl MemoryLimiter {
    /// A limiter holding about `capacity` counters (at most 1.125 ×).
    pub fn new(clock: SharedClock, capacity: u64) -> MemoryLimiter {
        let cap = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .max(SHARDS * 16);
        // Callers do not spread evenly over shards: each may hold an
        // eighth more than its share, so the whole holds at most 1.125 ×
        // `capacity`, and a million callers fit a million's capacity.
        let shard_cap = cap / SHARDS + cap / (SHARDS * 8);
        MemoryLimiter {
            clock,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: Map::default(),
                        sweep_at: 1024.min(shard_cap),
                    })
                })
                .collect(),
            shard_cap,
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// Decides a request of `cost` against every check, all or none.
    pub fn check(&self, checks: &[Check<'_>], cost: u32) -> Option<Verdict> {
        let n = checks.len();
        if n == 0 {
            return None;
        }
        if n <= INLINE {
            // The usual request (one to a few limits): scratch space on the
            // stack, so deciding allocates nothing.
            let mut names = [0u128; INLINE];
            let mut order = [0usize; INLINE];
            let mut decisions = [PLACEHOLDER; INLINE];
            let mut guards: [Option<MutexGuard<'_, Shard>>; INLINE] = Default::default();
            self.check_in(
                checks,
                cost,
                &mut names[..n],
                &mut order[..n],
                &mut decisions[..n],
                &mut guards[..n],
            )
        } else {
            let mut names = vec![0u128; n];
            let mut order = vec![0usize; n];
            let mut decisions = vec![PLACEHOLDER; n];
            let mut guards: Vec<Option<MutexGuard<'_, Shard>>> = (0..n).map(|_| None).collect();
            self.check_in(
                checks,
                cost,
                &mut names,
                &mut order,
                &mut decisions,
                &mut guards,
            )
        }
    }

    /// [`MemoryLimiter::check`] with scratch slices as long as `checks`.
    fn check_in<'s>(
        &'s self,
        checks: &[Check<'_>],
        cost: u32,
        names: &mut [u128],
        order: &mut [usize],
        decisions: &mut [Decision],
        guards: &mut [Option<MutexGuard<'s, Shard>>],
    ) -> Option<Verdict> {
        let now = self.clock.now_nanos();
        for (name, c) in names.iter_mut().zip(checks) {
            *name = c.memory_key(&self.keys);
        }
        // The shard of a name: its top bits (the map uses the low ones).
        let shard_of = |k: u128| ((k >> 122) as usize) % SHARDS;
        for (s, k) in order.iter_mut().zip(names.iter()) {
            *s = shard_of(*k);
        }
        // Each shard involved once, locked in index order, so two requests
        // cannot deadlock.
        order.sort_unstable();
        let mut m = 0;
        for i in 0..order.len() {
            if m == 0 || order[m - 1] != order[i] {
                order[m] = order[i];
                m += 1;
            }
        }
        let order = &order[..m];
        for (g, s) in guards.iter_mut().zip(order) {
            *g = Some(lock(&self.shards[*s]));
        }
        // `order` holds every name's shard (built from `names` above), so the
        // search always finds it, and `guards` holds a lock for each entry
        // of `order`, in the same positions.
        let guard_of = |k: u128| order.binary_search(&shard_of(k)).unwrap_or(0);
        for ((d, c), name) in decisions.iter_mut().zip(checks).zip(names.iter()) {
            let tat = guards[guard_of(*name)]
                .as_ref()
                .and_then(|g| g.map.get(name).copied());
            *d = decide(c.limit, tat, now, cost);
        }
        if decisions
            .iter()
            .all(|d| matches!(d, Decision::Admit { .. }))
        {
            for (d, name) in decisions.iter().zip(names.iter()) {
                if let (Decision::Admit { tat, .. }, Some(shard)) =
                    (d, guards[guard_of(*name)].as_mut())
                {
                    if !shard.map.contains_key(name) {
                        shard.room(now, self.shard_cap);
                    }
                    // The same counter checked twice (one limit named
                    // twice) was decided twice from the same TAT: one
                    // write.
                    let e = shard.map.entry(*name).or_insert(0);
                    *e = (*e).max(*tat);
                }
            }
        }
        // Unlock before the verdict is put together.
        for g in guards.iter_mut() {
            *g = None;
        }
        super::verdict(checks, decisions.iter().copied())
    }

    /// Counters held, including passed ones not yet dropped.
    pub fn len(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).map.len() as u64).sum()
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
    use std::sync::Arc;

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
        let m = MemoryLimiter::new(clock.clone(), 1000);
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

    /// Admits requests at the clock's now until one is refused.
    fn drain(m: &MemoryLimiter, c: Check<'_>) -> u32 {
        let mut n = 0;
        while m.check(&[c], 1).unwrap().admitted {
            n += 1;
        }
        n
    }

    /// `5000/second` and `100000/minute` (once refused at start) admit
    /// exactly that many per period on the injected clock.
    #[test]
    fn fast_limits_admit_exactly_their_rate() {
        let clock = ManualClock::new(1_700_000_000);
        let m = MemoryLimiter::new(clock.clone(), 1000);
        for (policy, period, label) in
            [("5000/second", 1, "five"), ("100000/minute", 60, "hundred")]
        {
            let p = portcullis_core::ratelimit::Policy::parse(policy).unwrap();
            let c = named(label, &p.limits()[0]);
            let count = p.limits()[0].count;
            assert_eq!(drain(&m, c), count, "{policy} from idle");
            let v = m.check(&[c], 1).unwrap();
            assert_eq!((v.admitted, v.retry_after_secs), (false, 1), "{policy}");
            for round in 0..3 {
                clock.advance(period);
                assert_eq!(drain(&m, c), count, "{policy}, period {round}");
            }
        }
    }

    /// A clock that moves in nanoseconds.
    #[derive(Default)]
    struct NanoClock(std::sync::atomic::AtomicU64);

    impl crate::clock::Clock for NanoClock {
        fn now(&self) -> i64 {
            (self.now_nanos() / 1_000_000_000) as i64
        }
        fn now_ms(&self) -> u64 {
            self.now_nanos() / 1_000_000
        }
        fn now_nanos(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Below a millisecond: `5000/second burst 1` admits one request every
    /// 200 µs and refuses one 199.999 µs after the last.
    #[test]
    fn sub_millisecond_spacing_is_exact() {
        let clock = Arc::new(NanoClock::default());
        let t0 = 1_700_000_000_000_000_000u64;
        clock.0.store(t0, std::sync::atomic::Ordering::SeqCst);
        let m = MemoryLimiter::new(clock.clone(), 1000);
        let l = portcullis_core::ratelimit::Policy::parse("5000/second burst 1").unwrap();
        let c = named("steady", &l.limits()[0]);
        for i in 0..10_000u64 {
            let at = t0 + i * 200_000;
            if i > 0 {
                clock.0.store(at - 1, std::sync::atomic::Ordering::SeqCst);
                assert!(
                    !m.check(&[c], 1).unwrap().admitted,
                    "a nanosecond early, request {i}"
                );
            }
            clock.0.store(at, std::sync::atomic::Ordering::SeqCst);
            assert!(m.check(&[c], 1).unwrap().admitted, "request {i}");
        }
    }

    /// More checks than fit the stack scratch space decide the same way,
    /// and one counter named twice counts once.
    #[test]
    fn many_checks_and_repeated_counters() {
        let clock = ManualClock::new(1000);
        let m = MemoryLimiter::new(clock.clone(), 1000);
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let loose = Limit {
            count: 100,
            period_ms: 3_600_000,
            burst: 100,
        };
        let tight = Limit {
            count: 2,
            period_ms: 3_600_000,
            burst: 2,
        };
        let mut checks: Vec<Check<'_>> = names.iter().map(|n| named(n, &loose)).collect();
        checks.push(named("tight", &tight));
        checks.push(named("tight", &tight));
        assert!(checks.len() > INLINE);
        for want in [1, 0] {
            let v = m.check(&checks, 1).unwrap();
            assert!(v.admitted);
            assert_eq!((v.index, v.remaining), (12, want));
        }
        let v = m.check(&checks, 1).unwrap();
        assert!(!v.admitted);
        assert_eq!(v.index, 12);
        // The refusal wrote nothing: every loose counter spent exactly 2.
        let v = m.check(&checks[..12], 98).unwrap();
        assert!(v.admitted && v.remaining == 0, "{v:?}");
    }

    #[test]
    fn exact_under_concurrency() {
        let clock = ManualClock::new(1000);
        let m = Arc::new(MemoryLimiter::new(clock, 1000));
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

#[cfg(test)]
mod memory_bound {
    use super::super::{Pool, Subject};
    use super::*;
    use portcullis_core::ratelimit::Limit;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The stated bound (docs/configuration.md, `max_counters`): a
    /// million counters take at most this much memory.
    const BOUND_MIB: u64 = 256;

    /// A million distinct callers, each with one counter: the limiter holds
    /// them within the bound, and two million callers against a capacity
    /// of one million leave at most a million counters. Runs in a child
    /// process of its own, so no other test's memory is counted.
    #[test]
    fn a_million_callers_stay_within_the_memory_bound() {
        const NAME: &str =
            "ratelimit::memory::memory_bound::a_million_callers_stay_within_the_memory_bound";
        if std::env::var_os("PORTCULLIS_MEMORY_PROBE").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env("PORTCULLIS_MEMORY_PROBE", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("memory probe:"), "{text}");
            for l in text
                .lines()
                .filter_map(|l| l.find("memory probe:").map(|i| &l[i..]))
            {
                println!("{l}");
            }
            return;
        }
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let m = MemoryLimiter::new(clock, 1_000_000);
        // Per hour: each counter stays live (its TAT 6 minutes ahead) for
        // the whole run, however slow the machine, so only the capacity
        // drops counters (per minute, a run longer than 6 s on a loaded
        // machine saw the first callers' counters pass and be swept).
        let l = Limit {
            count: 10,
            period_ms: 3_600_000,
            burst: 10,
        };
        let check = |i: u32| {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            let c = Check {
                pool: Pool::Route(0),
                subject: Subject::Ip(ip),
                limit: &l,
            };
            assert!(m.check(&[c], 1).unwrap().admitted);
        };
        let before = rss_kib();
        for i in 0..1_000_000 {
            check(i);
        }
        let n = m.len();
        let grown_mib = rss_kib().saturating_sub(before) / 1024;
        println!("memory probe: {n} counters, +{grown_mib} MiB");
        assert!(n >= 990_000, "{n}");
        assert!(grown_mib <= BOUND_MIB, "{grown_mib} MiB for {n} counters");
        for i in 1_000_000..2_000_000 {
            check(i);
        }
        let n = m.len();
        let grown_mib = rss_kib().saturating_sub(before) / 1024;
        println!("memory probe: after 2M callers, {n} counters, +{grown_mib} MiB");
        assert!(n <= 1_125_000, "{n}");
        assert!(grown_mib <= BOUND_MIB, "{grown_mib} MiB");
    }
}
