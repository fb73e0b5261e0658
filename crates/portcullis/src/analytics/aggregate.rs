//! The in-memory aggregator: counts per (key id, subject, outcome) for the
//! current minute, written to the store in batches.
//!
//! The hot path ([`Analytics::decided`]) takes one shard's mutex for a
//! hash-map lookup and an increment: no allocation once a key has been
//! seen in the current minute, no await, no store call. The map is split
//! into shards (by the hash of the key id) so concurrent requests rarely
//! meet on one lock. When a shard sees the minute change, its map is
//! sealed for the next flush and a new one begins: memory holds at most
//! `max_keys_per_window` keys per minute, whatever arrives.
//!
//! The flush task drains every shard (sealed minutes, and the current
//! minute's counts so far, which it zeroes) into one batch and writes it
//! with [`Store::record_usage`]: one transaction that adds each count to
//! its minute, hour and day rows. Additive upserts, so several gateways
//! writing the same buckets sum correctly. A failed write keeps the batch
//! and retries it at the next flush, a bounded number of times.

use super::{OUTCOMES, OVERFLOW_KEY, RowOf, Span, row_for};
use portcullis_core::PrincipalKind;

/// The id a decision is counted with when its credential id looked like a
/// key's but the credential is not one.
const NOT_A_KEY: &str = "token";
use crate::clock::SharedClock;
use crate::pipeline::{Decision, Observer};
use crate::store::usage::UsageRow;
use crate::store::{Store, StoreError};
use portcullis_core::Outcome;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long each span's buckets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Minute buckets (default 48 hours).
    pub minutes: Duration,
    /// Hour buckets (default 31 days).
    pub hours: Duration,
    /// Day buckets (default 400 days).
    pub days: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minutes: Duration::from_secs(48 * 3_600),
            hours: Duration::from_secs(31 * 86_400),
            days: Duration::from_secs(400 * 86_400),
        }
    }
}

impl Retention {
    /// How long `span`'s buckets are kept.
    pub fn of(&self, span: Span) -> Duration {
        match span {
            Span::Minute => self.minutes,
            Span::Hour => self.hours,
            Span::Day => self.days,
        }
    }
}

/// The aggregator's settings.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    /// How often the counts are written (default 10 s).
    pub flush_interval: Duration,
    /// Distinct (key, subject) pairs counted per minute (default
    /// 100,000); decisions of further keys are counted in the overflow
    /// row ([`OVERFLOW_KEY`]).
    pub max_keys_per_window: usize,
    /// How long buckets are kept.
    pub retention: Retention,
    /// How often buckets past their retention are deleted (default
    /// hourly).
    pub prune_interval: Duration,
    /// Consecutive failed flushes after which the counts held for retry
    /// are dropped (default 30: five minutes at the default interval).
    pub max_retries: u32,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            flush_interval: Duration::from_secs(10),
            max_keys_per_window: 100_000,
            retention: Retention::default(),
            prune_interval: Duration::from_secs(3_600),
            max_retries: 30,
        }
    }
}

/// The aggregator's counters since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnalyticsStats {
    /// Decisions counted (in any row).
    pub counted: u64,
    /// Decisions without a credential (or anonymous): not counted.
    pub skipped: u64,
    /// Decisions of credentials that did not verify (unknown, malformed,
    /// ...), counted in the overflow row whatever id they name.
    pub unverified: u64,
    /// Decisions of verified keys beyond `max_keys_per_window`, counted in
    /// the overflow row.
    pub overflowed: u64,
    /// Distinct (key, subject) pairs held for the current minutes.
    pub keys_in_window: u64,
    /// Successful flushes that wrote something.
    pub flushes: u64,
    /// Rows (minute, key, subject, outcome) written by them.
    pub rows_written: u64,
    /// Failed flushes.
    pub flush_failures: u64,
    /// Decisions dropped after the store refused them `max_retries`
    /// times (or too many were held).
    pub dropped: u64,
}

/// One (key, subject)'s counts in the current minute.
struct Slot {
    subject: Box<str>,
    counts: [u64; OUTCOMES],
}

/// One minute's counts in one shard.
#[derive(Default)]
struct Window {
    keys: HashMap<Box<str>, Vec<Slot>>,
    /// Slots in `keys`.
    slots: usize,
    /// The overflow row's counts.
    overflow: [u64; OUTCOMES],
}

struct Shard {
    minute: i64,
    /// Decisions counted here, and of them in the overflow row because
    /// their credential did not verify: counted under the shard's lock,
    /// so the hot path touches no shared counter.
    counted: u64,
    unverified: u64,
    current: Window,
    /// Minutes this shard has left behind, waiting for the flush.
    sealed: Vec<(i64, Window)>,
}

/// What a failed flush keeps for the next one.
#[derive(Default)]
struct Pending {
    rows: HashMap<(i64, Box<str>, Box<str>, Outcome), u64>,
    failures: u32,
}

/// The per-key analytics aggregator. Add it to the pipeline
/// ([`crate::pipeline::Pipeline::observed_by`]), start its tasks with
/// [`Analytics::spawn`], and call [`Analytics::flush`] at shutdown.
pub struct Analytics {
    store: Store,
    clock: SharedClock,
    config: AnalyticsConfig,
    shards: Box<[Mutex<Shard>]>,
    /// Seeds the shard hash.
    seed: u64,
    /// (key, subject) pairs in every shard's current window.
    distinct: AtomicUsize,
    /// The last minute whose first overflow was logged.
    warned: AtomicI64,
    pending: tokio::sync::Mutex<Pending>,
    skipped: AtomicU64,
    overflowed: AtomicU64,
    flushes: AtomicU64,
    rows_written: AtomicU64,
    flush_failures: AtomicU64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("config", &self.config)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Nothing panics while a shard is held (increments and map inserts),
    // so a poisoned lock still holds consistent counts.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Analytics {
    /// An aggregator writing to `store`, timing buckets by `clock`.
    pub fn new(store: Store, clock: SharedClock, config: AnalyticsConfig) -> Arc<Analytics> {
        // A few shards per core: enough that requests on different cores
        // rarely wait for each other, few enough that a flush's sweep is
        // short.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cores * 4).next_power_of_two().clamp(8, 128);
        let minute = Span::Minute.start_of(clock.now());
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    minute,
                    counted: 0,
                    unverified: 0,
                    current: Window::default(),
                    sealed: Vec::new(),
                })
            })
            .collect();
        Arc::new(Analytics {
            store,
            clock,
            config,
            shards,
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8),
            distinct: AtomicUsize::new(0),
            warned: AtomicI64::new(i64::MIN),
            pending: Default::default(),
            skipped: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &AnalyticsConfig {
        &self.config
    }

    /// The counters since start.
    pub fn stats(&self) -> AnalyticsStats {
        let (counted, unverified) = self.shards.iter().fold((0, 0), |(c, u), m| {
            let s = lock(m);
            (c + s.counted, u + s.unverified)
        });
        AnalyticsStats {
            counted,
            skipped: self.skipped.load(Relaxed),
            unverified,
            overflowed: self.overflowed.load(Relaxed),
            keys_in_window: self.distinct.load(Relaxed) as u64,
            flushes: self.flushes.load(Relaxed),
            rows_written: self.rows_written.load(Relaxed),
            flush_failures: self.flush_failures.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }

    /// Counts one decision of `outcome` by the credential `credential_id`
    /// of `subject`, now (`presented`: a credential was sent, even one no
    /// id could be read from). What [`Observer::decided`] does.
    pub fn record(
        &self,
        outcome: Outcome,
        presented: bool,
        credential_id: Option<&str>,
        subject: Option<&str>,
    ) {
        let (shard_by, key, subject) = match row_for(outcome, presented, credential_id, subject) {
            RowOf::Skip => {
                self.skipped.fetch_add(1, Relaxed);
                return;
            }
            RowOf::Overflow => {
                // Each thread counts the overflow row in a shard of its
                // own, so a flood of made-up credentials (one row) does
                // not queue on one lock; the flush sums them.
                (None, None, "")
            }
            RowOf::Own(k, s) => (Some(if k.is_empty() { s } else { k }), Some(k), s),
        };
        let minute = Span::Minute.start_of(self.clock.now());
        let hash = match shard_by {
            Some(k) => shard_hash(k, self.seed),
            None => HOME.with(|h| *h),
        };
        let i = (hash as usize) & (self.shards.len() - 1);
        let mut shard = lock(&self.shards[i]);
        if minute > shard.minute {
            self.roll(&mut shard, minute);
        }
        shard.counted += 1;
        if key.is_none() {
            shard.unverified += 1;
        }
        // A decision timed just before another thread rolled the shard
        // over lands in the new minute: off by under a second.
        let w = &mut shard.current;
        let o = outcome.index();
        let Some(key) = key else {
            w.overflow[o] += 1;
            return;
        };
        if let Some(slot) = w
            .keys
            .get_mut(key)
            .and_then(|slots| slots.iter_mut().find(|s| &*s.subject == subject))
        {
            slot.counts[o] += 1;
            return;
        }
        // A new (key, subject) in this minute: within the cap, or the
        // overflow row.
        if self.distinct.fetch_add(1, Relaxed) >= self.config.max_keys_per_window {
            self.distinct.fetch_sub(1, Relaxed);
            w.overflow[o] += 1;
            self.overflowed.fetch_add(1, Relaxed);
            if self.warned.swap(minute, Relaxed) != minute {
                tracing::warn!(
                    max_keys_per_window = self.config.max_keys_per_window,
                    "analytics: more keys in this minute than max_keys_per_window; further keys are counted in the overflow row \"-\""
                );
            }
            return;
        }
        let mut counts = [0; OUTCOMES];
        counts[o] = 1;
        let slot = Slot {
            subject: subject.into(),
            counts,
        };
        w.slots += 1;
        w.keys.entry(key.into()).or_default().push(slot);
    }

    /// Seals the shard's current minute for the flush and starts `minute`.
    fn roll(&self, shard: &mut Shard, minute: i64) {
        let old = std::mem::take(&mut shard.current);
        self.distinct.fetch_sub(old.slots, Relaxed);
        if old.slots > 0 || old.overflow.iter().any(|c| *c > 0) {
            let at = shard.minute;
            shard.sealed.push((at, old));
        }
        shard.minute = minute;
    }

    /// Moves every count held in memory into `p`, zeroing the current
    /// minutes' counts (their keys stay known, so the hot path does not
    /// allocate again this minute).
    fn drain_into(&self, p: &mut Pending) {
        let now = Span::Minute.start_of(self.clock.now());
        for m in &self.shards {
            let (minute, sealed, current) = {
                let mut s = lock(m);
                if now > s.minute {
                    self.roll(&mut s, now);
                }
                let sealed = std::mem::take(&mut s.sealed);
                // Copied out under the lock (the counts only); the keys
                // are cloned after it is released.
                let mut current: Vec<(Box<str>, Box<str>, [u64; OUTCOMES])> = Vec::new();
                let minute = s.minute;
                let w = &mut s.current;
                for (k, slots) in w.keys.iter_mut() {
                    for slot in slots.iter_mut() {
                        if slot.counts.iter().any(|c| *c > 0) {
                            current.push((k.clone(), slot.subject.clone(), slot.counts));
                            slot.counts = [0; OUTCOMES];
                        }
                    }
                }
                if w.overflow.iter().any(|c| *c > 0) {
                    current.push((OVERFLOW_KEY.into(), "".into(), w.overflow));
                    w.overflow = [0; OUTCOMES];
                }
                (minute, sealed, current)
            };
            for (at, w) in sealed {
                for (k, slots) in w.keys {
                    for slot in slots {
                        add_counts(p, at, &k, &slot.subject, &slot.counts);
                    }
                }
                add_counts(p, at, OVERFLOW_KEY, "", &w.overflow);
            }
            for (k, s, counts) in current {
                add_counts(p, minute, &k, &s, &counts);
            }
        }
    }

    /// Writes every count held in memory to the store in one batch: what
    /// the flush task does every `flush_interval`, and what to call at
    /// shutdown. Returns the rows (minute, key, subject, outcome) written.
    ///
    /// On a store failure the counts are kept and written with the next
    /// flush; after `max_retries` failures in a row (or more rows held
    /// than four times `max_keys_per_window`) they are dropped, and the
    /// log says how many decisions.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let mut p = self.pending.lock().await;
        self.drain_into(&mut p);
        if p.rows.is_empty() {
            return Ok(0);
        }
        let rows: Vec<UsageRow> = p
            .rows
            .iter()
            .map(|((minute, k, s, o), n)| UsageRow {
                minute: *minute,
                key_id: k.to_string(),
                subject: s.to_string(),
                outcome: *o,
                count: *n,
            })
            .collect();
        match self.store.record_usage(&rows).await {
            Ok(()) => {
                let n = rows.len();
                p.rows.clear();
                p.failures = 0;
                self.flushes.fetch_add(1, Relaxed);
                self.rows_written.fetch_add(n as u64, Relaxed);
                Ok(n)
            }
            Err(e) => {
                p.failures += 1;
                self.flush_failures.fetch_add(1, Relaxed);
                let cap = self.config.max_keys_per_window.saturating_mul(4).max(1_000);
                if p.failures >= self.config.max_retries.max(1) || p.rows.len() > cap {
                    let lost = p.rows.values().fold(0u64, |a, n| a.saturating_add(*n));
                    self.dropped.fetch_add(lost, Relaxed);
                    tracing::error!(
                        error = %e,
                        decisions = lost,
                        rows = p.rows.len(),
                        failures = p.failures,
                        "analytics: the store refused the usage counts too often; dropped them"
                    );
                    p.rows.clear();
                    p.failures = 0;
                } else {
                    tracing::warn!(
                        error = %e,
                        rows = p.rows.len(),
                        failures = p.failures,
                        "analytics: could not write the usage counts; kept for the next flush"
                    );
                }
                Err(e)
            }
        }
    }

    /// Deletes buckets past their retention, in batches. Returns the rows
    /// deleted.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        self.store
            .prune_usage(&self.config.retention, self.clock.now())
            .await
    }

    /// Starts the flush task (every `flush_interval`) and the prune task
    /// (every `prune_interval`, and once at start). They stop when the
    /// aggregator is dropped.
    pub fn spawn(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.config.flush_interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(a) = weak.upgrade() else { break };
                // Failures are logged and counted by `flush`.
                let _ = a.flush().await;
            }
        });
        let weak = Arc::downgrade(self);
        let every = self.config.prune_interval.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(a) = weak.upgrade() else { break };
                if let Err(e) = a.prune().await {
                    tracing::warn!(error = %e, "analytics: could not delete old usage buckets");
                }
            }
        });
    }
}

/// FNV-1a over the key, from a per-process seed: picks a shard only
/// (the maps inside keep std's keyed hasher). Cheaper than a second
/// SipHash on every decision; the keys that get here verified, so no
/// caller chooses them to crowd one shard.
fn shard_hash(key: &str, seed: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The low bits pick the shard: fold the high ones in.
    h ^ (h >> 29)
}

thread_local! {
    /// This thread's shard for the overflow row: its id, hashed.
    static HOME: u64 = std::collections::hash_map::RandomState::new()
        .hash_one(std::thread::current().id());
}

fn add_counts(p: &mut Pending, minute: i64, key: &str, subject: &str, counts: &[u64; OUTCOMES]) {
    for (i, n) in counts.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let o = Outcome::ALL[i];
        let e = p
            .rows
            .entry((minute, key.into(), subject.into(), o))
            .or_insert(0);
        *e = e.saturating_add(*n);
    }
}

impl Observer for Analytics {
    fn decided(&self, d: &Decision<'_>) {
        // Only a credential that is an API key names a key's row: a
        // token whose id merely looks like one (an external issuer's
        // `jti` of `key_…`) counts under its subject, as tokens do.
        let id = match d.credential_id {
            Some(id) if id.starts_with("key_") && d.kind != Some(PrincipalKind::ApiKey) => {
                Some(NOT_A_KEY)
            }
            other => other,
        };
        self.record(d.outcome, d.scheme.is_some(), id, d.subject);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    async fn analytics(max_keys: usize) -> (Arc<Analytics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = Store::open(&url, true).await.unwrap();
        let config = AnalyticsConfig {
            max_keys_per_window: max_keys,
            ..AnalyticsConfig::default()
        };
        let clock = crate::clock::ManualClock::new(1_900_000_000);
        (Analytics::new(store, clock, config), dir)
    }

    #[tokio::test]
    async fn known_keys_keep_their_slot_across_flushes() {
        let (a, _dir) = analytics(2).await;
        a.record(Outcome::Valid, true, Some("key_a"), Some("ann"));
        a.record(Outcome::Valid, true, Some("key_b"), Some("bob"));
        assert_eq!(a.stats().keys_in_window, 2);
        // A flush zeroes the counts but keeps the keys known this minute
        // (no new slot, no allocation for them again).
        assert_eq!(a.flush().await.unwrap(), 2);
        a.record(Outcome::Valid, true, Some("key_a"), Some("ann"));
        let s = a.stats();
        assert_eq!((s.keys_in_window, s.overflowed), (2, 0));
        // A third key is over the cap of 2: the overflow row.
        a.record(Outcome::Valid, true, Some("key_c"), Some("cy"));
        assert_eq!(a.stats().overflowed, 1);
    }

    /// How long a decision takes to count, against a plain mutex-guarded
    /// hash-map increment (the least any shared counter costs), one thread
    /// and four. A measurement, not a test: `cargo test -p portcullis
    /// --lib -- --ignored --nocapture hot_path_cost` (add `--release` for
    /// figures that mean something).
    #[tokio::test]
    #[ignore = "a measurement"]
    async fn hot_path_cost() {
        let (a, _dir) = analytics(100_000).await;
        let keys: Vec<String> = (0..1_000).map(|i| format!("key_{i:017}")).collect();
        let n = 2_000_000usize;
        for threads in [1usize, 4] {
            let per = n / threads;
            let t0 = std::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (a, keys) = (&a, &keys);
                    s.spawn(move || {
                        for i in 0..per {
                            let k = &keys[(i * 7 + t) % keys.len()];
                            a.record(Outcome::Valid, true, Some(k), Some("owner"));
                        }
                    });
                }
            });
            let ours = t0.elapsed().as_nanos() as f64 / n as f64;
            let base: Mutex<HashMap<String, u64>> =
                Mutex::new(keys.iter().map(|k| (k.clone(), 0)).collect());
            let t0 = std::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (base, keys) = (&base, &keys);
                    s.spawn(move || {
                        for i in 0..per {
                            let k = &keys[(i * 7 + t) % keys.len()];
                            if let Some(c) = base.lock().unwrap().get_mut(k.as_str()) {
                                *c += 1;
                            }
                        }
                    });
                }
            });
            let plain = t0.elapsed().as_nanos() as f64 / n as f64;
            println!(
                "{threads} thread(s): {ours:.0} ns per decision counted; one mutex + map: {plain:.0} ns"
            );
        }
    }
}
