//! Verifying an API key: format check, cache, then store.
//!
//! The order is what keeps the store off the hot path:
//! 1. the format and CRC32 checksum (no allocation, no lookup) — a made-up
//!    key never reaches a cache or the store;
//! 2. the positive cache (a hit costs one SHA-256 and one lookup);
//! 3. the negative cache of well-formed keys the store does not know,
//!    held for `negative_ttl`, so a flood of unknown keys costs at most one
//!    store query per key per `negative_ttl`;
//! 4. the store. Concurrent misses for one key share one query: the
//!    first asks the store, the others wait for its answer (a waiter whose
//!    leader was cancelled asks again itself).
//!
//! Changes made anywhere (this process's admin API, or the CLI in another
//! process) are appended to the store's change log; a watcher applies it to
//! the caches every `sync_interval` (250 ms by default), which bounds how
//! long a revoked key can still pass to that interval plus one query.
//! Where the store can wake the watcher ([`Store::changes_wake`]: Postgres
//! `LISTEN`), it reads the log as soon as a change is announced; the
//! interval stays the backstop, so a lost wake-up costs latency only. The
//! log is read through a [`ChangeCursor`], which waits a grace for a row
//! committed out of sequence order instead of skipping it.
//!
//! When the store fails (declared behaviour, docs/configuration.md
//! `[store]`):
//! - a failed change-log poll, or a lookup that finds the store
//!   unreachable (connection, timeout), opens a *breaker*: lookups then
//!   answer [`StoreError::Unavailable`] at once instead of each waiting for
//!   a timeout; the watcher keeps polling every interval, and its next
//!   successful poll applies every change made meanwhile and closes it;
//! - keys already cached keep verifying until `stale_grace` has passed
//!   since the last successful poll; after that this instance cannot know
//!   about revocations, so it drops both caches and every key is
//!   [`StoreError::Unavailable`] (503) until a poll succeeds again.

use crate::clock::SharedClock;
use crate::store::{Store, StoreError};
use moka::sync::Cache;
use portcullis_core::changes::ChangeCursor;
use portcullis_core::key::{KeyFormatError, check_format};
use portcullis_core::{KeyGrant, KeyHash, KeyState};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, watch};

/// Tuning for the verifier.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Known keys kept in memory.
    pub positive_capacity: u64,
    /// How long a known key stays cached without being read again.
    pub positive_ttl: Duration,
    /// Unknown keys remembered.
    pub negative_capacity: u64,
    /// How long an unknown key is remembered.
    pub negative_ttl: Duration,
    /// How often the change log is read.
    pub sync_interval: Duration,
    /// How often last-used times are written.
    pub touch_interval: Duration,
    /// How long keys already cached keep verifying while the change log
    /// cannot be read; after it, the caches are dropped and keys answer
    /// [`StoreError::Unavailable`].
    pub stale_grace: Duration,
    /// The longest one change-log poll or key lookup may take before it
    /// counts as a store failure (a partitioned database can leave a
    /// query waiting far longer than any server-side timeout).
    pub store_timeout: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            positive_capacity: 1_000_000,
            positive_ttl: Duration::from_secs(600),
            negative_capacity: 100_000,
            negative_ttl: Duration::from_secs(30),
            sync_interval: Duration::from_millis(250),
            touch_interval: Duration::from_secs(5),
            stale_grace: Duration::from_secs(30),
            store_timeout: Duration::from_secs(10),
        }
    }
}

/// A key as held in the cache.
#[derive(Debug)]
pub struct CachedKey {
    /// What the store said.
    pub grant: KeyGrant,
    hash: KeyHash,
    last_used: AtomicI64,
    pending_touch: AtomicBool,
}

/// Why a key was refused. `reason()` goes to the log; the client only
/// ever sees the generic 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRejection {
    /// Not a key: bad shape, length or checksum.
    Malformed(KeyFormatError),
    /// Well-formed but not in the store.
    Unknown,
    /// Known but not usable now.
    State {
        /// The key's id (safe to log).
        key_id: portcullis_core::shared_str::SharedStr,
        /// Why.
        state: KeyState,
    },
    /// Its uses are spent until the next refill.
    Exhausted {
        /// The key's id (safe to log).
        key_id: portcullis_core::shared_str::SharedStr,
        /// Seconds until the refill.
        retry_after_secs: u64,
    },
}

impl KeyRejection {
    /// The reason for the log.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyRejection::Malformed(KeyFormatError::Checksum) => "bad_checksum",
            KeyRejection::Malformed(_) => "malformed_key",
            KeyRejection::Unknown => "unknown_key",
            KeyRejection::State { state, .. } => state.reason(),
            KeyRejection::Exhausted { .. } => KeyState::Exhausted.reason(),
        }
    }
    /// The key id, when the key is known.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            KeyRejection::State { key_id, .. } | KeyRejection::Exhausted { key_id, .. } => {
                Some(key_id)
            }
            _ => None,
        }
    }
}

/// The outcome of a verification.
#[derive(Debug)]
pub enum KeyVerdict {
    /// The key is good.
    Valid(Arc<CachedKey>),
    /// The key is refused.
    Rejected(KeyRejection),
}

/// Verifies keys against the store through two caches.
pub struct Verifier {
    store: Store,
    clock: SharedClock,
    known: Cache<KeyHash, Arc<CachedKey>>,
    unknown: Cache<KeyHash, ()>,
    touches: mpsc::UnboundedSender<Arc<CachedKey>>,
    touch_rx: Mutex<mpsc::UnboundedReceiver<Arc<CachedKey>>>,
    cursor: Mutex<ChangeCursor>,
    health: Health,
    // Bumped by sync_changes before it invalidates. A lookup that saw the
    // store before a change but inserts after the change's invalidation
    // notices the bump and drops what it inserted.
    generation: AtomicU64,
    config: VerifierConfig,
    listeners: std::sync::Mutex<Vec<Listener>>,
    // Called when the caches are dropped whole (past stale_grace): the
    // identity caches (users, sessions, tokens) go with the key caches.
    droppers: std::sync::Mutex<Vec<Dropper>>,
    // Store lookups under way, by hash: touched on a cache miss only.
    flights: std::sync::Mutex<Flights>,
    // Cache hits and misses, lookup times: handles registered once.
    metrics: crate::metrics::VerifierMetrics,
}

/// How far below the newest change a starting verifier reads the log:
/// a write that took its number before the start but commits after it
/// (overlapping writers) is then awaited as a gap, not skipped. Rows in
/// the window that are already there are not delivered (the caches are
/// empty at the start).
const STARTUP_WINDOW: i64 = 1_000;

/// The watcher's view of the store, read on every cache miss.
#[derive(Debug)]
struct Health {
    /// When the change log was last read (clock seconds).
    last_ok: AtomicI64,
    /// The last poll failed.
    poll_failing: AtomicBool,
    /// Lookups answer `Unavailable` at once.
    breaker: AtomicBool,
    /// The caches were dropped for this outage.
    dropped: AtomicBool,
    /// Set by the watchdog when no poll has succeeded for `stale_grace` of
    /// real (monotonic) time, whatever the watcher is doing — a poll stuck
    /// on a dead connection included. One relaxed load on the hot path.
    stale_flag: AtomicBool,
    /// When the change log was last read, in milliseconds since `born`.
    last_ok_mono: AtomicU64,
    /// The verifier's creation, the watchdog's time origin.
    born: std::time::Instant,
}

impl Health {
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// What [`Verifier::health`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierHealth {
    /// Seconds since the change log was last read successfully.
    pub last_poll_age_secs: i64,
    /// Key lookups answer [`StoreError::Unavailable`] without asking the
    /// store, until the next successful poll.
    pub breaker_open: bool,
    /// The change log has not been read for longer than `stale_grace`:
    /// the caches are not trusted and every key answers
    /// [`StoreError::Unavailable`].
    pub stale: bool,
}

impl VerifierHealth {
    /// Whether this instance can verify keys as it should (what
    /// `/readyz` reports).
    pub fn ready(&self) -> bool {
        !self.breaker_open && !self.stale
    }
}

/// Whether a failure says the store cannot be reached or cannot answer in
/// time (so the next query would most likely wait and fail the same way),
/// as opposed to one query's own failure (a missing table, a bad row).
/// Whether a failed *lookup* says the store is unreachable (its
/// connection failed), as opposed to busy: a pool with no free connection,
/// a statement cancelled by its timeout, a lookup that waited too long.
/// A busy store fails that one request with 503; only an unreachable one
/// opens the breaker, or a flood of made-up keys (each a store query)
/// could make valid keys fail by filling the pool. The change-log poll
/// opens the breaker on any failure.
fn is_unreachable(e: &StoreError) -> bool {
    match e {
        StoreError::Shared(inner) => is_unreachable(inner),
        StoreError::Database(sqlx::Error::PoolTimedOut) => false,
        StoreError::Database(sqlx::Error::Database(db))
            if db
                .code()
                .is_some_and(|c| c == "57014" || c.starts_with("53")) =>
        {
            false
        }
        // Our own bound (`bounded`) and the store's gate: busy, not gone.
        StoreError::Unavailable(_) => false,
        e => is_outage(e),
    }
}

fn is_outage(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_) => true,
        StoreError::Shared(inner) => is_outage(inner),
        StoreError::Database(e) => match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => match db.code() {
                // Postgres SQLSTATEs are five characters: class 08
                // (connection exception), 53 (insufficient resources),
                // 57 (operator intervention: shutdown, statement timeout).
                Some(code) if code.len() == 5 => {
                    code.starts_with("08") || code.starts_with("53") || code.starts_with("57")
                }
                // SQLite's are numbers whose low byte is the primary code:
                // PERM, BUSY, LOCKED, IOERR, CORRUPT, CANTOPEN, NOTADB.
                Some(code) => code
                    .parse::<i32>()
                    .is_ok_and(|c| matches!(c & 0xff, 3 | 5 | 6 | 10 | 11 | 14 | 26)),
                None => false,
            },
            _ => false,
        },
        _ => false,
    }
}

/// Called with the hashes each change-log poll found changed.
type Listener = Box<dyn Fn(Arc<[KeyHash]>) + Send + Sync>;

/// Called when every cache must go (the change log went unread too long).
type Dropper = Box<dyn Fn() + Send + Sync>;

/// What a store lookup found: the cached key, `None` for an unknown key,
/// or the store's failure.
type Found = Result<Option<Arc<CachedKey>>, Arc<StoreError>>;

/// The lookups under way.
#[derive(Default)]
struct Flights {
    by_hash: HashMap<KeyHash, Flight>,
    next_id: u64,
}

/// One lookup under way: its waiters read the answer from `rx` (`None`
/// until it lands; closed without an answer if the lookup was dropped).
struct Flight {
    id: u64,
    // The generation the lookup started at: a later arrival that has seen
    // a newer one does not wait for it.
    generation: u64,
    rx: watch::Receiver<Option<Found>>,
}

/// What a missing request does.
enum Step<'a> {
    /// Waits for the lookup under way.
    Wait(watch::Receiver<Option<Found>>),
    /// Asks the store itself.
    Lead(Leader<'a>),
}

/// Held by the request that queries the store for the others: on drop,
/// finished or cancelled, it takes its flight off the map (so no one new
/// waits for it) and then closes the channel (so a waiter left without an
/// answer asks again).
struct Leader<'a> {
    flights: &'a std::sync::Mutex<Flights>,
    hash: KeyHash,
    id: u64,
    tx: watch::Sender<Option<Found>>,
    landed: bool,
}

impl Leader<'_> {
    fn land(&mut self) {
        if !self.landed {
            self.landed = true;
            let mut f = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            if f.by_hash.get(&self.hash).is_some_and(|x| x.id == self.id) {
                f.by_hash.remove(&self.hash);
            }
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.land();
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier. Call [`Verifier::spawn_background`] to start the change
    /// watcher and the last-used writer.
    pub async fn new(
        store: Store,
        clock: SharedClock,
        config: VerifierConfig,
    ) -> Result<Arc<Verifier>, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Start from the newest change, not from history, but watch the
        // numbers just below it for writes still in flight.
        let last = store.last_change().await?;
        let mut cursor = ChangeCursor::new((last - STARTUP_WINDOW).max(0));
        let now = {
            let clock = clock.clone();
            move || clock.now()
        };
        let mut already = Vec::new();
        store.poll_changes(&mut cursor, &now, &mut already).await?;
        let health = Health {
            last_ok: AtomicI64::new(clock.now()),
            poll_failing: AtomicBool::new(false),
            breaker: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            stale_flag: AtomicBool::new(false),
            last_ok_mono: AtomicU64::new(0),
            born: std::time::Instant::now(),
        };
        Ok(Arc::new(Verifier {
            known: Cache::builder()
                .max_capacity(config.positive_capacity)
                .time_to_idle(config.positive_ttl)
                .build(),
            unknown: Cache::builder()
                .max_capacity(config.negative_capacity)
                .time_to_live(config.negative_ttl)
                .build(),
            store,
            clock,
            touches: tx,
            touch_rx: Mutex::new(rx),
            cursor: Mutex::new(cursor),
            health,
            generation: AtomicU64::new(0),
            config,
            listeners: std::sync::Mutex::new(Vec::new()),
            droppers: std::sync::Mutex::new(Vec::new()),
            flights: std::sync::Mutex::new(Flights::default()),
            metrics: crate::metrics::VerifierMetrics::new(),
        }))
    }

    /// The clock in use.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Verifies a presented key and spends one of its uses, if its uses
    /// are limited.
    pub async fn verify(&self, presented: &str) -> Result<KeyVerdict, StoreError> {
        match self.verify_unspent(presented).await? {
            KeyVerdict::Valid(k) => match self.spend(&k, 1).await? {
                None => Ok(KeyVerdict::Valid(k)),
                Some(r) => Ok(KeyVerdict::Rejected(r)),
            },
            r => Ok(r),
        }
    }

    /// Spends `cost` uses of a verified key whose uses are limited (a
    /// no-op for the others): `Some` rejection when not enough are left.
    /// Kept apart from verification so a request refused by a rate limit
    /// spends nothing.
    pub async fn spend(
        &self,
        key: &CachedKey,
        cost: u32,
    ) -> Result<Option<KeyRejection>, StoreError> {
        if key.grant.remaining_uses.is_none() {
            return Ok(None);
        }
        self.check_breaker()?;
        let now = self.clock.now();
        // Counted in the store, atomically, so two gateways cannot both
        // spend the last use.
        let spent = self
            .bounded(self.store.consume_use(&key.hash, cost, now))
            .await;
        if spent?.is_some() {
            return Ok(None);
        }
        self.known.invalidate(&key.hash);
        Ok(Some(match key.grant.refill {
            Some(r) => KeyRejection::Exhausted {
                key_id: key.grant.key_id.clone(),
                retry_after_secs: u64::try_from(r.every.next_start(now) - now).unwrap_or(1),
            },
            None => KeyRejection::State {
                key_id: key.grant.key_id.clone(),
                state: KeyState::UsedUp,
            },
        }))
    }

    /// Verifies a presented key without spending a use; follow with
    /// [`Verifier::spend`].
    pub async fn verify_unspent(&self, presented: &str) -> Result<KeyVerdict, StoreError> {
        if let Err(e) = check_format(presented) {
            return Ok(KeyVerdict::Rejected(KeyRejection::Malformed(e)));
        }
        let hash = KeyHash::of(presented);
        // Two relaxed loads on the hot path; the clock only during an outage.
        if self.health.stale_flag.load(Ordering::Relaxed)
            || (self.health.poll_failing.load(Ordering::Relaxed) && self.stale(self.clock.now()))
        {
            // Whatever is cached may have been revoked since: ask the
            // store, which is down (or the watcher would have read it).
            self.drop_caches();
            return Err(StoreError::Unavailable(
                "the change log has not been read for longer than stale_grace",
            ));
        }
        let m = &self.metrics;
        let cached = match self.known.get(&hash) {
            Some(c) => {
                m.positive_hit.increment(1);
                c
            }
            None => {
                m.positive_miss.increment(1);
                if self.unknown.contains_key(&hash) {
                    m.negative_hit.increment(1);
                    return Ok(KeyVerdict::Rejected(KeyRejection::Unknown));
                }
                m.negative_miss.increment(1);
                match self.look_up(hash).await? {
                    Some(c) => c,
                    None => return Ok(KeyVerdict::Rejected(KeyRejection::Unknown)),
                }
            }
        };
        let now = self.clock.now();
        let state = cached.grant.state(now);
        if state == KeyState::Exhausted
            && let Some(r) = cached.grant.refill
        {
            return Ok(KeyVerdict::Rejected(KeyRejection::Exhausted {
                key_id: cached.grant.key_id.clone(),
                retry_after_secs: u64::try_from(r.every.next_start(now) - now).unwrap_or(1),
            }));
        }
        if state != KeyState::Active {
            return Ok(KeyVerdict::Rejected(KeyRejection::State {
                key_id: cached.grant.key_id.clone(),
                state,
            }));
        }
        cached.last_used.store(now, Ordering::Relaxed);
        if !cached.pending_touch.swap(true, Ordering::AcqRel) {
            // Queued once per flush interval per key, not once per request.
            let _ = self.touches.send(cached.clone());
        }
        Ok(KeyVerdict::Valid(cached))
    }

    /// A cache miss: asks the store, or waits for a lookup of the same key
    /// already under way. `None` for an unknown key.
    async fn look_up(&self, hash: KeyHash) -> Result<Option<Arc<CachedKey>>, StoreError> {
        self.check_breaker()?;
        loop {
            // Read before the map: a lookup started at this generation or
            // later saw the store after every change applied so far.
            let generation = self.generation.load(Ordering::SeqCst);
            // The guard must not live across an await: the block ends
            // before any.
            let step = {
                let mut f = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
                match f.by_hash.get(&hash) {
                    Some(x) if x.generation >= generation => Step::Wait(x.rx.clone()),
                    _ => {
                        // A leader fills the caches before it leaves the
                        // map: one that just left was missed by the checks
                        // above, not by these.
                        if let Some(c) = self.known.get(&hash) {
                            return Ok(Some(c));
                        }
                        if self.unknown.contains_key(&hash) {
                            return Ok(None);
                        }
                        let (tx, rx) = watch::channel(None);
                        let id = f.next_id;
                        f.next_id = f.next_id.wrapping_add(1);
                        // Replaces a lookup that started before a change
                        // this request has seen applied; that one leaves
                        // its waiters served but the map to this one.
                        f.by_hash.insert(hash, Flight { id, generation, rx });
                        Step::Lead(Leader {
                            flights: &self.flights,
                            hash,
                            id,
                            tx,
                            landed: false,
                        })
                    }
                }
            };
            let mut rx = match step {
                Step::Wait(rx) => rx,
                Step::Lead(leader) => return self.lead(leader, generation).await,
            };
            let found = match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone(),
                // The leader was dropped before it had an answer (its
                // request was cancelled): ask again.
                Err(_) => continue,
            };
            match found {
                Some(Ok(c)) => return Ok(c),
                Some(Err(e)) => return Err(StoreError::Shared(e)),
                None => continue,
            }
        }
    }

    /// Queries the store for `leader`'s key, fills the caches, and hands
    /// the answer to the requests waiting for it.
    async fn lead(
        &self,
        mut leader: Leader<'_>,
        generation: u64,
    ) -> Result<Option<Arc<CachedKey>>, StoreError> {
        let hash = leader.hash;
        // Cancelled here, `leader` is dropped: off the map, channel closed.
        let started = std::time::Instant::now();
        let found = self.bounded(self.store.grant_by_hash(&hash)).await;
        let took = crate::metrics::secs(started.elapsed());
        match &found {
            Ok(Some(_)) => self.metrics.lookup_found.record(took),
            Ok(None) => self.metrics.lookup_unknown.record(took),
            Err(_) => self.metrics.lookup_error.record(took),
        }
        let stale = || self.generation.load(Ordering::SeqCst) != generation;
        let found = match found {
            Err(e) => Err(e),
            Ok(None) => {
                self.unknown.insert(hash, ());
                if stale() {
                    self.unknown.invalidate(&hash);
                }
                Ok(None)
            }
            Ok(Some(grant)) => {
                let c = Arc::new(CachedKey {
                    grant,
                    hash,
                    last_used: AtomicI64::new(0),
                    pending_touch: AtomicBool::new(false),
                });
                self.known.insert(hash, c.clone());
                if stale() {
                    // A change was applied while we read: what we read may
                    // predate it, so answer this request (and those that
                    // waited for it) from the read but keep nothing.
                    self.known.invalidate(&hash);
                }
                Ok(Some(c))
            }
        };
        // Off the map first (after the caches are filled), so that no one
        // starts waiting once the answer is sent.
        leader.land();
        match found {
            Ok(v) => {
                leader.tx.send_replace(Some(Ok(v.clone())));
                Ok(v)
            }
            // Not cached: the next request asks again.
            Err(e) if leader.tx.receiver_count() == 0 => Err(e),
            Err(e) => {
                let e = Arc::new(e);
                leader.tx.send_replace(Some(Err(e.clone())));
                Err(StoreError::Shared(e))
            }
        }
    }

    /// Reads the change log and drops every changed key from both caches.
    /// A failure opens the breaker; a success closes it (see the module
    /// documentation).
    pub async fn sync_changes(&self) {
        let mut cursor = self.cursor.lock().await;
        let clock = self.clock.clone();
        let now = move || clock.now();
        let mut hashes = Vec::new();
        let polled = self
            .bounded(self.store.poll_changes(&mut cursor, &now, &mut hashes))
            .await;
        drop(cursor);
        // Rows of pages read before a failure were taken by the cursor:
        // applied now, or never.
        self.apply(hashes);
        let now = self.clock.now();
        let h = &self.health;
        match polled {
            Ok(()) => {
                if self.stale(now) || h.stale_flag.load(Ordering::SeqCst) {
                    // Back after longer than stale_grace: the log may have
                    // been pruned meanwhile, so nothing cached is trusted.
                    self.drop_caches();
                }
                h.last_ok.store(now, Ordering::SeqCst);
                h.last_ok_mono.store(h.mono_ms(), Ordering::SeqCst);
                h.stale_flag.store(false, Ordering::SeqCst);
                let failing = h.poll_failing.swap(false, Ordering::SeqCst);
                h.dropped.store(false, Ordering::SeqCst);
                if h.breaker.swap(false, Ordering::SeqCst) || failing {
                    tracing::info!("the store answers again; key lookups resume");
                }
            }
            Err(e) => {
                h.breaker.store(true, Ordering::SeqCst);
                // Logged once per outage, not once per poll.
                if !h.poll_failing.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        error = %e,
                        "could not read the key change log; key lookups answer 503 until it can be read"
                    );
                }
                if self.stale(now) && !h.dropped.load(Ordering::SeqCst) {
                    tracing::warn!(
                        "the key change log has not been read for longer than stale_grace; \
                         dropping the key caches: every key answers 503 until the store is back"
                    );
                    self.drop_caches();
                }
            }
        }
    }

    /// Drops the changed keys from both caches and tells the listeners.
    fn apply(&self, hashes: Vec<KeyHash>) {
        if hashes.is_empty() {
            return;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        for h in &hashes {
            self.known.invalidate(h);
            self.unknown.invalidate(h);
        }
        let changed: Arc<[KeyHash]> = hashes.into();
        if let Ok(ls) = self.listeners.lock() {
            for l in ls.iter() {
                l(changed.clone());
            }
        }
    }

    /// Whether the change log has gone unread for longer than
    /// `stale_grace` because polls fail (a verifier whose log is read by
    /// hand, in tests, is never stale for the clock alone).
    fn stale(&self, now: i64) -> bool {
        let h = &self.health;
        let grace = i64::try_from(self.config.stale_grace.as_secs()).unwrap_or(i64::MAX);
        h.poll_failing.load(Ordering::SeqCst)
            && now.saturating_sub(h.last_ok.load(Ordering::SeqCst)) > grace
    }

    /// Empties both caches, once per outage. The generation bump makes a
    /// lookup under way keep nothing it read.
    fn drop_caches(&self) {
        if !self.health.dropped.swap(true, Ordering::SeqCst) {
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.known.invalidate_all();
            self.unknown.invalidate_all();
            if let Ok(ds) = self.droppers.lock() {
                for d in ds.iter() {
                    d();
                }
            }
        }
    }

    /// `Unavailable` at once while the breaker is open.
    fn check_breaker(&self) -> Result<(), StoreError> {
        if self.health.breaker.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "a recent query failed; waiting for the next change-log poll",
            ));
        }
        Ok(())
    }

    /// Runs a store call within `store_timeout`; a timeout, or a failure
    /// that says the store is unreachable, opens the breaker.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(self.config.store_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable("the store did not answer in time")),
        };
        if let Err(e) = &r
            && is_unreachable(e)
            && !self.health.breaker.swap(true, Ordering::SeqCst)
        {
            tracing::warn!(
                error = %e,
                "the store is unreachable; key lookups answer 503 until a change-log poll succeeds"
            );
        }
        r
    }

    /// The watcher's view of the store: what `/readyz` reports.
    pub fn health(&self) -> VerifierHealth {
        let now = self.clock.now();
        VerifierHealth {
            last_poll_age_secs: now
                .saturating_sub(self.health.last_ok.load(Ordering::SeqCst))
                .max(0),
            breaker_open: self.health.breaker.load(Ordering::SeqCst),
            stale: self.stale(now) || self.health.stale_flag.load(Ordering::SeqCst),
        }
    }

    /// Registers a listener for the change log: sessions, users, clients
    /// and signing keys share it with keys.
    pub fn on_change(&self, f: impl Fn(Arc<[KeyHash]>) + Send + Sync + 'static) {
        if let Ok(mut ls) = self.listeners.lock() {
            ls.push(Box::new(f));
        }
    }

    /// Registers what to drop with the key caches when the change log has
    /// gone unread for longer than `stale_grace`: every cache that a
    /// missed change could have made wrong (users, sessions, tokens).
    pub fn on_drop_all(&self, f: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut ds) = self.droppers.lock() {
            ds.push(Box::new(f));
        }
    }

    /// Writes queued last-used times.
    pub async fn flush_last_used(&self) {
        let mut rx = self.touch_rx.lock().await;
        let mut batch = Vec::new();
        while let Ok(c) = rx.try_recv() {
            c.pending_touch.store(false, Ordering::Release);
            batch.push((
                c.grant.key_id.to_string(),
                c.last_used.load(Ordering::Relaxed),
            ));
        }
        drop(rx);
        if let Err(e) = self.store.touch_last_used(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "could not write last-used times");
        }
    }

    /// Starts the change watcher, the last-used writer and the change-log
    /// pruner. They stop when the verifier is dropped.
    pub fn spawn_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.config.sync_interval;
        // Held outside the loop: a wake-up that arrives while a poll runs
        // is kept by the Notify (one permit) and starts the next at once.
        let wake = self.store.changes_wake();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                let ticked = match &wake {
                    Some(w) => {
                        tokio::select! {
                            _ = tick.tick() => true,
                            () = w.notified() => false,
                        }
                    }
                    None => {
                        tick.tick().await;
                        true
                    }
                };
                let Some(v) = weak.upgrade() else { break };
                v.sync_changes().await;
                // Counted in ticks, not polls: wake-ups add polls.
                n += u64::from(ticked);
                if ticked && n.is_multiple_of(14_400) {
                    // Hourly at the default interval: rows older than a day
                    // have been seen by every running gateway.
                    // Bounded: a prune stuck on a dead connection must not
                    // stall the watcher (the watchdog would still catch it).
                    let _ = v
                        .bounded(v.store.prune_changes(v.clock.now() - 86_400))
                        .await;
                }
            }
        });
        // The watchdog: stale_grace measured in real time, apart from the
        // watcher, so a watcher stuck in a poll cannot keep stale caches in
        // use (a poll is bounded by store_timeout, but stale_grace may be
        // shorter).
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(v) = weak.upgrade() else { break };
                let h = &v.health;
                let age = h
                    .mono_ms()
                    .saturating_sub(h.last_ok_mono.load(Ordering::SeqCst));
                let grace = u64::try_from(v.config.stale_grace.as_millis()).unwrap_or(u64::MAX);
                if age > grace && !h.stale_flag.swap(true, Ordering::SeqCst) {
                    h.breaker.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        age_ms = age,
                        "the key change log has not been read for longer than stale_grace; \
                         dropping the caches: every key answers 503 until the store is back"
                    );
                    v.drop_caches();
                }
            }
        });
        let weak = Arc::downgrade(self);
        let interval = self.config.touch_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(v) = weak.upgrade() else { break };
                v.flush_last_used().await;
            }
        });
    }

    /// Entries in the positive and negative caches, after the caches'
    /// pending maintenance (recent inserts, expiries) has run: still
    /// approximate while requests are being verified.
    pub fn cache_sizes(&self) -> (u64, u64) {
        self.known.run_pending_tasks();
        self.unknown.run_pending_tasks();
        (self.known.entry_count(), self.unknown.entry_count())
    }

    /// Key lookups that reached the store ([`Store::key_lookups`]; shared
    /// with every clone of the store this verifier was built with).
    pub fn store_key_lookups(&self) -> u64 {
        self.store.key_lookups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_told_from_one_query_failing() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for e in [
            StoreError::Database(sqlx::Error::Io(io)),
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Database(sqlx::Error::PoolClosed),
            StoreError::Unavailable("down"),
            StoreError::Shared(Arc::new(StoreError::Database(sqlx::Error::PoolTimedOut))),
        ] {
            assert!(is_outage(&e), "{e:?}");
        }
        for e in [
            StoreError::NotFound,
            StoreError::Corrupt("api_keys"),
            StoreError::Database(sqlx::Error::RowNotFound),
            StoreError::Shared(Arc::new(StoreError::NotFound)),
        ] {
            assert!(!is_outage(&e), "{e:?}");
        }
    }
}
