//! Cheap refusals under attack: failed credentials counted per client
//! address ([`ClientBucket`]: an IPv4 address, an IPv6 /64), and an
//! address past the threshold refused before any verification work — no
//! key lookup, no checksum, no signature, no password hash — with 429
//! `too_many_attempts` and `Retry-After`.
//!
//! What counts as a failure (see [`counts`]): a credential that cannot be
//! one (malformed, bad checksum), one nobody issued (unknown key, unknown
//! signing key, unknown session or user), and one that fails its check
//! (bad signature, wrong password, wrong issuer or audience). That is what
//! guessing and floods produce, and what costs work to refuse (a store
//! lookup for an unknown key, an Argon2 hash for a password). Not counted:
//! a request with no credential (a browser before it signs in), and a
//! credential that verified as genuine but is revoked, expired, disabled
//! or used up — the client once held it, it is no guess, refusing it is a
//! cache hit, and one deployed client with a stale key must not get the
//! other users behind its NAT blocked. Nor are the refusals that follow a
//! verified credential (scopes, CSRF, rate limits, quotas). Nor are the
//! refusals a genuine credential gets through no fault of its holder
//! ([`NOT_COUNTED`]): a token not yet valid or issued in the future
//! (clock skew), and a token signed with a key this gateway has not
//! fetched yet (an identity provider rotating its keys: a busy client
//! would cross the threshold in milliseconds). Unknown signing keys cost
//! a throttled key-set fetch, not a store query.
//!
//! A trusted proxy's own address is never counted nor blocked
//! ([`AddressBlock::exempting`]): when it stands for its clients (a
//! forwarded-for entry it wrote that does not parse), blocking it would
//! refuse every client behind it.
//!
//! Past `threshold` failures within one `window`, the address is blocked
//! for `block` seconds; each further block within `max_block` of the last
//! doubles, up to `max_block` (as the password throttle's lockouts do).
//! The moment an address becomes blocked is written to the audit log once
//! (not each refused request: an audit row per request would turn a flood
//! into a flood of writes), and at most [`AUDIT_PER_MINUTE`] times a
//! minute across all addresses, the rest only counted.
//!
//! An address that has failed before may also have at most `max_in_flight`
//! verifications waiting at once (for the store, for the password-hashing
//! pool); past that, its next request is refused at once (429,
//! `Retry-After: 1`) instead of queueing behind its own flood, so a flood
//! from one address cannot fill the queue valid requests wait in. The cap
//! holds only while the failures are recent (one within `window`, or a
//! block that ended within it): one mistyped key behind a NAT does not
//! cap that NAT for good. An address that has never failed is never
//! looked at twice: its check is one cache lookup that finds nothing, and
//! no lookup at all while no address is tracked.
//!
//! State is bounded: at most `max_addresses` addresses are tracked (moka's
//! admission keeps the busiest), and an address is forgotten twice the
//! longest block after its last failure or block, however much valid
//! traffic it sends meanwhile. The lookup takes no lock on the hit path
//! and hashes with a keyed multiply-fold, not SipHash.

use crate::clock::SharedClock;
use crate::store::{NewAudit, Store};
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use portcullis_core::client_bucket::ClientBucket;
use portcullis_core::net::{Cidr, is_trusted};
use portcullis_core::{ErrorCode, Outcome, Problem};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The log reason of a blocked address's 429: a server that sees it may
/// end the connection (see [`AbuseSettings::close_connections`]).
pub const BLOCKED_REASON: &str = "address_blocked";

/// The most audit events written for blocked addresses in one minute;
/// blocks past it are counted in [`AbuseStats::audit_suppressed`] and
/// logged once a minute as a sum.
pub const AUDIT_PER_MINUTE: u32 = 60;

/// When to block an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbuseSettings {
    /// Whether failures are counted and addresses blocked at all.
    pub enabled: bool,
    /// Failed credentials from one address within `window` that block it.
    pub threshold: u32,
    /// The counting window, seconds.
    pub window: i64,
    /// The first block, seconds.
    pub block: i64,
    /// The longest block, seconds: repeated blocks double up to it.
    pub max_block: i64,
    /// The most addresses tracked at once.
    pub max_addresses: u64,
    /// The most verifications an address that has failed may have waiting
    /// at once.
    pub max_in_flight: u32,
    /// Whether a server in front of sockets (the gateway) refuses a
    /// blocked address's connections: its keep-alive connection ends with
    /// the 429, and once it ignores its 429s each new one is refused at
    /// accept, before a byte of it is read (see
    /// [`AddressBlock::refuses_connection`]).
    pub close_connections: bool,
}

impl Default for AbuseSettings {
    /// 50 failures a minute, then 60 s, doubling to 15 minutes; 100 000
    /// addresses; 8 waiting verifications. 50 a minute is far above what
    /// people and misconfigured clients do (a person mistypes a few times;
    /// the password throttle locks an account+address after 5), far below
    /// a flood (thousands a second), and a blocked address costs one cache
    /// lookup per request instead of a store query or a 20 MiB hash.
    fn default() -> Self {
        AbuseSettings {
            enabled: true,
            threshold: 50,
            window: 60,
            block: 60,
            max_block: 900,
            max_addresses: 100_000,
            max_in_flight: 8,
            close_connections: true,
        }
    }
}

impl AbuseSettings {
    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.threshold == 0 {
            return Err("threshold must be at least 1".into());
        }
        if self.window < 1 {
            return Err("window must be at least 1 second".into());
        }
        if self.block < 1 {
            return Err("block must be at least 1 second".into());
        }
        if self.max_block < self.block {
            return Err(format!(
                "max_block ({} s) must be at least block ({} s)",
                self.max_block, self.block
            ));
        }
        if self.max_addresses == 0 {
            return Err("max_addresses must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        Ok(())
    }
}

/// Whether a refusal with this outcome counts as a failed credential
/// (see the module's documentation for why these and not others).
pub fn counts(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Malformed | Outcome::Unknown | Outcome::Invalid
    )
}

/// Refusals, by log reason, of an outcome that [`counts`] but that a
/// genuine credential gets through no fault of its holder: clock skew
/// (`jwt_not_yet_valid`, `jwt_iat_future`) and a signing key not fetched
/// yet (`jwt_unknown_kid`, during an identity provider's key rotation).
pub const NOT_COUNTED: &[&str] = &["jwt_not_yet_valid", "jwt_iat_future", "jwt_unknown_kid"];

/// Whether a refusal with `outcome`, logged as `reason`, counts as a
/// failed credential: [`counts`], less [`NOT_COUNTED`].
pub fn counts_refusal(outcome: Outcome, reason: &str) -> bool {
    counts(outcome) && !NOT_COUNTED.contains(&reason)
}

/// One address's counts. Atomics: no lock on any path.
#[derive(Debug, Default)]
struct Entry {
    window_start: AtomicI64,
    /// When the last failure was counted.
    last_failure: AtomicI64,
    failures: AtomicU32,
    strikes: AtomicU32,
    blocked_until: AtomicI64,
    /// Requests refused during the current block: past `threshold`, the
    /// address ignores its `Retry-After` and its connections are refused.
    refused_in_block: AtomicU32,
    in_flight: AtomicU32,
}

/// What the pipeline's counters say, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AbuseStats {
    /// Failed credentials counted.
    pub failures: u64,
    /// Times an address became blocked.
    pub blocks: u64,
    /// Requests refused because their address was blocked.
    pub refused_blocked: u64,
    /// Requests refused because their address had too many verifications
    /// waiting.
    pub refused_busy: u64,
    /// Connections refused at accept because their address was blocked
    /// and ignored its 429s.
    pub refused_connections: u64,
    /// Blocks not written to the audit log (past [`AUDIT_PER_MINUTE`]).
    pub audit_suppressed: u64,
    /// Addresses tracked now (approximate: moka's count).
    pub addresses: u64,
}

/// The metric handles, resolved once from the recorder installed when the
/// counter is built (see [`crate::metrics`]): recording is an atomic add.
struct Handles {
    failures: metrics::Counter,
    blocks: metrics::Counter,
    refused_blocked: metrics::Counter,
    refused_busy: metrics::Counter,
    refused_connections: metrics::Counter,
    addresses: metrics::Gauge,
}

impl Handles {
    fn resolve() -> Handles {
        use crate::metrics::{ABUSE_ADDRESSES, ABUSE_BLOCKS, ABUSE_FAILURES, ABUSE_REFUSED};
        Handles {
            failures: metrics::counter!(ABUSE_FAILURES),
            blocks: metrics::counter!(ABUSE_BLOCKS),
            refused_blocked: metrics::counter!(ABUSE_REFUSED, "reason" => "blocked"),
            refused_busy: metrics::counter!(ABUSE_REFUSED, "reason" => "busy"),
            refused_connections: metrics::counter!(ABUSE_REFUSED, "reason" => "connection"),
            addresses: metrics::gauge!(ABUSE_ADDRESSES),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    failures: AtomicU64,
    blocks: AtomicU64,
    refused_blocked: AtomicU64,
    refused_busy: AtomicU64,
    refused_connections: AtomicU64,
    audit_suppressed: AtomicU64,
    audit_minute: AtomicI64,
    audit_in_minute: AtomicU32,
}

/// The per-address failure counter and block list.
pub struct AddressBlock {
    settings: AbuseSettings,
    clock: SharedClock,
    entries: Cache<ClientBucket, Arc<Entry>, BucketHasher>,
    /// Entries made minus entries gone: while 0, [`AddressBlock::check`]
    /// skips the cache (a miss there records a read and may run moka's
    /// housekeeping inline).
    tracked: Arc<AtomicU64>,
    /// Addresses never counted nor blocked: the trusted proxies.
    exempt: Vec<Cidr>,
    audit: Option<Store>,
    counters: Counters,
    handles: Handles,
}

impl std::fmt::Debug for AddressBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressBlock")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A verification under way for an address that has failed before: it
/// holds a place in that address's `max_in_flight` until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Entry>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AddressBlock {
    /// A counter under `settings` (checked: see [`AbuseSettings::check`])
    /// on `clock`.
    pub fn new(settings: AbuseSettings, clock: SharedClock) -> AddressBlock {
        // Forgotten twice the longest span it remembers after its last
        // failure or block.
        let keep = settings
            .max_block
            .max(settings.window)
            .max(1)
            .saturating_mul(2);
        let tracked = Arc::new(AtomicU64::new(0));
        let gone = tracked.clone();
        AddressBlock {
            entries: Cache::builder()
                .max_capacity(settings.max_addresses.max(1))
                .expire_after(FromLastFailure {
                    clock: clock.clone(),
                    keep,
                })
                .eviction_listener(move |_, _, cause| {
                    // Entries are only ever made by `get_with` (each made
                    // once, counted once), never replaced; saturating all
                    // the same, so a miscount can only make the fast path
                    // rarer, never skip a tracked address.
                    if cause != RemovalCause::Replaced {
                        let _ = gone.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            Some(n.saturating_sub(1))
                        });
                    }
                })
                .build_with_hasher(BucketHasher::new()),
            tracked,
            exempt: Vec::new(),
            settings,
            clock,
            audit: None,
            counters: Counters::default(),
            handles: Handles::resolve(),
        }
    }

    /// Never counts nor blocks an address in `proxies` (the trusted
    /// proxies): when a proxy's address stands for its clients, blocking
    /// it would refuse all of them.
    pub fn exempting(mut self, proxies: &[Cidr]) -> AddressBlock {
        self.exempt = proxies.to_vec();
        self
    }

    /// Writes each new block to `store`'s audit log (within
    /// [`AUDIT_PER_MINUTE`]).
    pub fn audited_in(mut self, store: Store) -> AddressBlock {
        self.audit = Some(store);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &AbuseSettings {
        &self.settings
    }

    /// Before any verification: `Err` with the 429 when `client`'s address
    /// is blocked or has too many verifications waiting; else, for an
    /// address that has failed before, its place among them.
    pub fn check(&self, client: IpAddr) -> Result<Option<InFlight>, Problem> {
        if !self.settings.enabled || self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(None);
        }
        let Some(e) = self.entries.get(&ClientBucket::of(client)) else {
            return Ok(None);
        };
        // A proxy's /64 may be tracked for another address in it.
        if is_trusted(&self.exempt, client) {
            return Ok(None);
        }
        let now = self.clock.now();
        let until = e.blocked_until.load(Ordering::Acquire);
        if until > now {
            self.counters
                .refused_blocked
                .fetch_add(1, Ordering::Relaxed);
            self.handles.refused_blocked.increment(1);
            // Saturating: counted only up to where it matters.
            let _ = e
                .refused_in_block
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.settings.threshold).then_some(n + 1)
                });
            return Err(blocked(until - now));
        }
        // Capped only while its failures are recent.
        let last = e.last_failure.load(Ordering::Acquire).max(until);
        if now - last >= self.settings.window {
            return Ok(None);
        }
        let n = e.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        // Made before the test, so dropping it gives the place back either way.
        let place = InFlight(e);
        if n > self.settings.max_in_flight {
            self.counters.refused_busy.fetch_add(1, Ordering::Relaxed);
            self.handles.refused_busy.increment(1);
            return Err(busy());
        }
        Ok(Some(place))
    }

    /// At accept, before any byte is read: whether a connection from
    /// `peer` (the socket's own address) is to be refused unserved, with
    /// `close_connections` on. That is when the address is blocked and
    /// has ignored its `Retry-After`: `threshold` of its requests were
    /// refused during this block. A flood gets there in milliseconds, and
    /// its further requests would all get the same 429; refusing its
    /// connections spares parsing and answering them, so they cannot
    /// queue in front of other clients' requests. The people behind a
    /// blocked NAT who send a request now and then still get their 429s,
    /// and public routes stay open to them. A trusted proxy is never
    /// refused here: the address it stands for is judged per request,
    /// from its forwarded-for entry.
    ///
    /// `Some` with the seconds the block has left (at least 1) when it is.
    pub fn refuses_connection(&self, peer: IpAddr) -> Option<u64> {
        if !self.settings.enabled
            || !self.settings.close_connections
            || self.tracked.load(Ordering::Relaxed) == 0
        {
            return None;
        }
        let e = self.entries.get(&ClientBucket::of(peer))?;
        if is_trusted(&self.exempt, peer) {
            return None;
        }
        let left = e.blocked_until.load(Ordering::Acquire) - self.clock.now();
        if left > 0 && e.refused_in_block.load(Ordering::Acquire) >= self.settings.threshold {
            self.counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            self.handles.refused_connections.increment(1);
            return Some(u64::try_from(left).unwrap_or(1));
        }
        None
    }

    /// Counts a refusal of `client`'s credential with `outcome`, logged
    /// as `reason`, when it is one that counts ([`counts_refusal`]).
    pub fn refused(&self, client: IpAddr, outcome: Outcome, reason: &str) {
        if self.settings.enabled && counts_refusal(outcome, reason) {
            self.failure(client);
        }
    }

    /// Counts one failed credential from `client`; blocks its address when
    /// this failure reaches the threshold.
    pub fn failure(&self, client: IpAddr) {
        if !self.settings.enabled || is_trusted(&self.exempt, client) {
            return;
        }
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        self.handles.failures.increment(1);
        let bucket = ClientBucket::of(client);
        let e = self.entries.get_with(bucket, || {
            self.tracked.fetch_add(1, Ordering::AcqRel);
            Default::default()
        });
        let now = self.clock.now();
        e.last_failure.fetch_max(now, Ordering::AcqRel);
        let s = &self.settings;
        let last_until = e.blocked_until.load(Ordering::Acquire);
        if last_until > now {
            // Verifications that were under way when the block began.
            return;
        }
        let start = e.window_start.load(Ordering::Acquire);
        if now - start >= s.window
            && e.window_start
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            e.failures.store(0, Ordering::Release);
        }
        // Exactly one failure reaches the threshold: it alone blocks.
        if e.failures.fetch_add(1, Ordering::AcqRel) + 1 != s.threshold {
            return;
        }
        // A block long after the last one starts over at `block`.
        let strikes = if now - last_until > s.max_block {
            1
        } else {
            e.strikes.load(Ordering::Acquire).saturating_add(1)
        };
        e.strikes.store(strikes, Ordering::Release);
        let secs = s
            .block
            .saturating_mul(1i64 << (strikes - 1).min(20))
            .min(s.max_block);
        e.refused_in_block.store(0, Ordering::Release);
        e.blocked_until.store(now + secs, Ordering::Release);
        // After the block, the address starts a fresh window.
        e.failures.store(0, Ordering::Release);
        e.window_start.store(now + secs, Ordering::Release);
        self.counters.blocks.fetch_add(1, Ordering::Relaxed);
        self.handles.blocks.increment(1);
        self.handles
            .addresses
            .set(self.entries.entry_count() as f64);
        self.record_block(bucket, now, secs, strikes);
    }

    /// The log line and the audit event for a new block, within the
    /// per-minute budget.
    fn record_block(&self, bucket: ClientBucket, now: i64, secs: i64, strikes: u32) {
        let c = &self.counters;
        let minute = now.div_euclid(60);
        if c.audit_minute.swap(minute, Ordering::AcqRel) != minute {
            let skipped = c.audit_in_minute.swap(0, Ordering::AcqRel);
            if skipped > AUDIT_PER_MINUTE {
                tracing::warn!(
                    blocks = skipped - AUDIT_PER_MINUTE,
                    "more addresses were blocked last minute than the audit log records; \
                     see portcullis_abuse_blocks_total"
                );
            }
        }
        if c.audit_in_minute.fetch_add(1, Ordering::AcqRel) >= AUDIT_PER_MINUTE {
            c.audit_suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tracing::warn!(
            address = %bucket,
            seconds = secs,
            strikes,
            threshold = self.settings.threshold,
            window = self.settings.window,
            "address blocked after too many failed credentials"
        );
        let Some(store) = self.audit.clone() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let event = NewAudit {
            at: now,
            actor: "portcullis".into(),
            action: "address.block",
            target: Some(bucket.to_string()),
            detail: serde_json::json!({
                "seconds": secs,
                "strikes": strikes,
                "threshold": self.settings.threshold,
                "window": self.settings.window,
            }),
        };
        // Off the request's path: the request that tipped the block is
        // answered without waiting for the store.
        rt.spawn(async move {
            let r = async {
                let w = store.write().await?;
                w.commit(Some(&event)).await
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not write the address block to the audit log");
            }
        });
    }

    /// The counters so far.
    pub fn stats(&self) -> AbuseStats {
        let c = &self.counters;
        AbuseStats {
            failures: c.failures.load(Ordering::Relaxed),
            blocks: c.blocks.load(Ordering::Relaxed),
            refused_blocked: c.refused_blocked.load(Ordering::Relaxed),
            refused_busy: c.refused_busy.load(Ordering::Relaxed),
            refused_connections: c.refused_connections.load(Ordering::Relaxed),
            audit_suppressed: c.audit_suppressed.load(Ordering::Relaxed),
            addresses: self.entries.entry_count(),
        }
    }
}

/// How long an address's entry is kept: `keep` seconds after its last
/// failure or the end of its block, read from the entry itself, so valid
/// traffic reading it does not keep it alive (moka's idle timer would).
struct FromLastFailure {
    clock: SharedClock,
    keep: i64,
}

impl FromLastFailure {
    fn left(&self, e: &Entry) -> Duration {
        let last = e
            .last_failure
            .load(Ordering::Acquire)
            .max(e.blocked_until.load(Ordering::Acquire));
        let left = last.saturating_add(self.keep) - self.clock.now();
        Duration::from_secs(u64::try_from(left.clamp(0, self.keep)).unwrap_or(0))
    }
}

impl Expiry<ClientBucket, Arc<Entry>> for FromLastFailure {
    fn expire_after_create(
        &self,
        _: &ClientBucket,
        _: &Arc<Entry>,
        _: Instant,
    ) -> Option<Duration> {
        // Made by a failure about to be recorded.
        Some(Duration::from_secs(
            u64::try_from(self.keep).unwrap_or(1800),
        ))
    }

    fn expire_after_read(
        &self,
        _: &ClientBucket,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.left(e))
    }
}

/// The 429 for a blocked address.
fn blocked(secs: i64) -> Problem {
    Problem::new(ErrorCode::TooManyAttempts)
        .detail("Too many failed credentials from this address; try again later")
        .log_reason(BLOCKED_REASON)
        .retry_after(u64::try_from(secs).unwrap_or(1).max(1))
}

/// The 429 for an address with too many verifications waiting.
fn busy() -> Problem {
    Problem::new(ErrorCode::TooManyAttempts)
        .detail("Too many credential checks from this address are under way; retry shortly")
        .log_reason("address_busy")
        .retry_after(1)
}

/// A keyed multiply-fold hasher for [`ClientBucket`]s: one 128-bit
/// multiply per key instead of SipHash's rounds. Keyed per process from
/// std's random source, so addresses an attacker picks do not collide on
/// purpose.
#[derive(Clone)]
struct BucketHasher {
    k0: u64,
    k1: u64,
}

impl BucketHasher {
    fn new() -> BucketHasher {
        let r = std::collections::hash_map::RandomState::new();
        BucketHasher {
            k0: r.hash_one(0x5157_u64),
            // Odd, so the multiply loses no bits.
            k1: r.hash_one(0x9e37_u64) | 1,
        }
    }
}

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    // The product's halves, folded: the truncations are the point.
    (p as u64) ^ ((p >> 64) as u64)
}

impl BuildHasher for BucketHasher {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            h: self.k0,
            k: self.k1,
        }
    }
}

/// The hasher [`BucketHasher`] builds.
struct FoldHasher {
    h: u64,
    k: u64,
}

// The derived `Hash` of `ClientBucket` writes its discriminant (an
// isize) and its integer: both land on `write_u64`.
impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.h = fold(self.h ^ n, self.k);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        fold(self.h, self.k ^ 0x2d35_8dcc_aa6c_78a5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn small() -> AbuseSettings {
        AbuseSettings {
            threshold: 3,
            window: 60,
            block: 10,
            max_block: 40,
            max_in_flight: 2,
            ..AbuseSettings::default()
        }
    }

    #[test]
    fn blocks_at_the_threshold_doubles_and_caps() {
        let clock = ManualClock::new(1000);
        let a = AddressBlock::new(small(), clock.clone());
        let x = ip("192.0.2.1");
        for _ in 0..2 {
            a.failure(x);
            assert!(a.check(x).is_ok());
        }
        a.failure(x);
        let p = a.check(x).unwrap_err();
        assert_eq!(p.status(), 429);
        assert_eq!(p.retry_after, Some(10));
        assert_eq!(p.log_reason, "address_blocked");
        // Another address, even the next one, is untouched.
        assert!(a.check(ip("192.0.2.2")).unwrap().is_none());
        clock.advance(9);
        assert_eq!(a.check(x).unwrap_err().retry_after, Some(1));
        clock.advance(1);
        assert!(a.check(x).is_ok());
        for expected in [20, 40, 40] {
            for _ in 0..3 {
                a.failure(x);
            }
            assert_eq!(a.check(x).unwrap_err().retry_after, Some(expected));
            clock.advance(expected as i64);
        }
        // Long after, a block starts over at `block`.
        clock.advance(41);
        for _ in 0..3 {
            a.failure(x);
        }
        assert_eq!(a.check(x).unwrap_err().retry_after, Some(10));
        assert_eq!(a.stats().blocks, 5);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let clock = ManualClock::new(1000);
        let a = AddressBlock::new(small(), clock.clone());
        let x = ip("192.0.2.1");
        a.failure(x);
        a.failure(x);
        clock.advance(60);
        a.failure(x);
        a.failure(x);
        assert!(a.check(x).is_ok());
        a.failure(x);
        assert!(a.check(x).is_err());
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let clock = ManualClock::new(1000);
        let a = AddressBlock::new(small(), clock);
        for i in 1..=3 {
            a.failure(ip(&format!("2001:db8:1:2::{i}")));
        }
        assert!(a.check(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(a.check(ip("2001:db8:1:3::1")).unwrap().is_none());
        // A mapped IPv4 address is that IPv4 address.
        for _ in 0..3 {
            a.failure(ip("::ffff:198.51.100.7"));
        }
        assert!(a.check(ip("198.51.100.7")).is_err());
    }

    #[test]
    fn caps_waiting_verifications_of_an_address_that_failed() {
        let clock = ManualClock::new(1000);
        let a = AddressBlock::new(small(), clock);
        let x = ip("192.0.2.1");
        // Never failed: never tracked, never capped.
        let free: Vec<_> = (0..10).map(|_| a.check(x).unwrap()).collect();
        assert!(free.iter().all(Option::is_none));
        a.failure(x);
        let one = a.check(x).unwrap();
        let two = a.check(x).unwrap();
        assert!(one.is_some() && two.is_some());
        let p = a.check(x).unwrap_err();
        assert_eq!((p.log_reason, p.retry_after), ("address_busy", Some(1)));
        drop(one);
        assert!(a.check(x).unwrap().is_some());
        assert_eq!(a.stats().refused_busy, 1);
    }

    #[test]
    fn the_cap_ends_a_window_after_the_last_failure() {
        let clock = ManualClock::new(1000);
        let a = AddressBlock::new(small(), clock.clone());
        let x = ip("192.0.2.1");
        a.failure(x);
        assert!(a.check(x).unwrap().is_some());
        clock.advance(61);
        // Valid traffic since: no cap, ten checks at once.
        let places: Vec<_> = (0..10).map(|_| a.check(x)).collect();
        assert!(places.iter().all(|p| matches!(p, Ok(None))));
        // A new failure caps it again.
        a.failure(x);
        assert!(a.check(x).unwrap().is_some());
    }

    #[test]
    fn trusted_proxies_are_never_counted_nor_blocked() {
        let clock = ManualClock::new(1000);
        let proxy: Cidr = "2001:db8:1:2::9/128".parse().unwrap();
        let a = AddressBlock::new(small(), clock).exempting(&[proxy]);
        let p = ip("2001:db8:1:2::9");
        for _ in 0..10 {
            a.failure(p);
        }
        assert!(a.check(p).unwrap().is_none());
        assert_eq!(a.stats().failures, 0);
        // Its /64 blocked for another address in it: the proxy still passes.
        for _ in 0..3 {
            a.failure(ip("2001:db8:1:2::7"));
        }
        assert!(a.check(ip("2001:db8:1:2::8")).is_err());
        assert!(a.check(p).unwrap().is_none());
    }

    #[test]
    fn nothing_tracked_skips_the_cache() {
        let clock = ManualClock::new(1000);
        let a = AddressBlock::new(small(), clock);
        assert_eq!(a.tracked.load(Ordering::Relaxed), 0);
        a.failure(ip("192.0.2.1"));
        a.failure(ip("192.0.2.1"));
        a.failure(ip("192.0.2.2"));
        assert_eq!(a.tracked.load(Ordering::Relaxed), 2);
        a.entries.invalidate_all();
        a.entries.run_pending_tasks();
        assert_eq!(a.tracked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_blocked_address_has_its_connections_refused_unless_exempt_or_off() {
        let clock = ManualClock::new(1000);
        let a =
            AddressBlock::new(small(), clock.clone()).exempting(&["192.0.2.9/32".parse().unwrap()]);
        let (x, other, proxy) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.9"));
        assert!(a.refuses_connection(x).is_none(), "nothing tracked");
        for _ in 0..3 {
            a.failure(x);
            a.failure(proxy);
        }
        assert!(a.refuses_connection(x).is_none(), "its 429s come first");
        for _ in 0..3 {
            assert!(a.check(x).is_err());
        }
        assert_eq!(a.refuses_connection(x), Some(10), "the seconds left");
        clock.advance(9);
        assert_eq!(a.refuses_connection(x), Some(1));
        assert!(a.refuses_connection(other).is_none());
        assert!(
            a.refuses_connection(proxy).is_none(),
            "a trusted proxy stands for others"
        );
        assert_eq!(a.stats().refused_connections, 2);
        clock.advance(1);
        assert!(a.refuses_connection(x).is_none(), "the block is over");

        let off = AddressBlock::new(
            AbuseSettings {
                close_connections: false,
                ..small()
            },
            clock.clone(),
        );
        for _ in 0..3 {
            off.failure(x);
        }
        for _ in 0..4 {
            assert!(off.check(x).is_err(), "blocked all the same");
        }
        assert!(
            off.refuses_connection(x).is_none(),
            "but its connections are served"
        );
    }

    #[test]
    fn disabled_counts_nothing() {
        let clock = ManualClock::new(1000);
        let s = AbuseSettings {
            enabled: false,
            ..small()
        };
        let a = AddressBlock::new(s, clock);
        let x = ip("192.0.2.1");
        for _ in 0..100 {
            a.failure(x);
        }
        assert!(a.check(x).unwrap().is_none());
    }

    #[test]
    fn which_refusals_count() {
        for o in Outcome::ALL {
            let expected = matches!(o, Outcome::Malformed | Outcome::Unknown | Outcome::Invalid);
            assert_eq!(counts(*o), expected, "{o}");
        }
        // Genuine credentials refused for clock skew or a key rotation.
        let invalid = Some(portcullis_core::ErrorCode::InvalidCredentials);
        for r in ["jwt_not_yet_valid", "jwt_iat_future", "jwt_unknown_kid"] {
            assert!(!counts_refusal(Outcome::of(invalid, r), r), "{r}");
        }
        for r in [
            "unknown_key",
            "bad_checksum",
            "jwt_bad_signature",
            "session_unknown",
        ] {
            assert!(counts_refusal(Outcome::of(invalid, r), r), "{r}");
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(AbuseSettings::default().check().is_ok());
        let bad = AbuseSettings {
            max_block: 5,
            block: 10,
            ..AbuseSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("max_block"));
    }
}
