//! What Portcullis records through the [`metrics`] facade: the metric
//! names (docs/metrics.md describes each), their help text, and the
//! handles the hot path records into.
//!
//! Install a recorder (e.g. `metrics-exporter-prometheus`) before building
//! the verifier, the limiter and [`AdmissionMetrics`]: they resolve their
//! handles from the recorder installed at that moment, once. Without one,
//! every handle is a no-op.
//!
//! Why handles, not the macros, on the hot path: `counter!(name, labels)`
//! builds a key and looks it up in the recorder's registry (a hash and a
//! lock) on every call. Here each label combination is registered once —
//! eagerly where it is known at start, or on first use in a `OnceLock`
//! cell indexed by small integers — and recording is then an atomic add.
//!
//! Labels are bounded: routes are route patterns (never raw paths),
//! outcomes come from the fixed [`Outcome`] set, schemes and entrances
//! from fixed enums. No credential, key id, user or address is ever a
//! label: per-key counts are the analytics' job.

use crate::auth::verifier::Verifier;
use crate::pipeline::{Decision, Entrance, Observer};
use crate::ratelimit::{BreakerState, Limiter};
use metrics::{Counter, Histogram, SharedString, Unit};
use portcullis_core::{Outcome, Scheme};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Requests answered by the gateway, by `route`, `method` (class) and `status`.
pub const HTTP_REQUESTS: &str = "portcullis_http_requests_total";
/// Time from a request's head to its answer's head, by `route`.
pub const HTTP_REQUEST_DURATION: &str = "portcullis_http_request_duration_seconds";
/// Admission decisions, by `route`, `entrance`, `scheme` and `outcome`.
pub const ADMISSIONS: &str = "portcullis_admission_decisions_total";
/// Time the upstream took to answer with its head, by `route`.
pub const UPSTREAM_DURATION: &str = "portcullis_upstream_duration_seconds";
/// Requests the upstream did not answer, by `kind`.
pub const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";
/// One key lookup in the store (a cache miss), by `result`.
pub const STORE_LOOKUP_DURATION: &str = "portcullis_store_lookup_duration_seconds";
/// Key verifications answered from a cache, by `cache`.
pub const KEY_CACHE_HITS: &str = "portcullis_key_cache_hits_total";
/// Key verifications a cache could not answer, by `cache`.
pub const KEY_CACHE_MISSES: &str = "portcullis_key_cache_misses_total";
/// Entries in a key cache, by `cache`.
pub const KEY_CACHE_ENTRIES: &str = "portcullis_key_cache_entries";
/// Key lookups that reached the store.
pub const STORE_KEY_LOOKUPS: &str = "portcullis_store_key_lookups_total";
/// 1 when keys verify as they should (what `/readyz` says).
pub const STORE_UP: &str = "portcullis_store_up";
/// 1 while key lookups answer 503 without asking the store.
pub const STORE_BREAKER_OPEN: &str = "portcullis_store_breaker_open";
/// 1 while the change log has gone unread for longer than `stale_grace`.
pub const STORE_STALE: &str = "portcullis_store_stale";
/// Seconds since the change log was last read.
pub const STORE_LAST_POLL_AGE: &str = "portcullis_store_last_poll_age_seconds";
/// One rate-limit decision in Redis, by `result`.
pub const REDIS_DECISION_DURATION: &str = "portcullis_ratelimit_redis_duration_seconds";
/// The Redis breaker: 1 for the current `state`, 0 for the others.
pub const RATELIMIT_BREAKER_STATE: &str = "portcullis_ratelimit_breaker_state";
/// Rate-limit decisions made while Redis was unusable.
pub const RATELIMIT_FALLBACKS: &str = "portcullis_ratelimit_fallback_decisions_total";
/// Redis calls that failed or timed out.
pub const RATELIMIT_REDIS_ERRORS: &str = "portcullis_ratelimit_redis_errors_total";
/// Times the Redis breaker opened.
pub const RATELIMIT_BREAKER_OPENED: &str = "portcullis_ratelimit_breaker_opened_total";
/// Decisions the per-key analytics counted, by `row` (`key`: the key's
/// or subject's own row; `unverified`: a credential that did not verify;
/// `overflow`: a key past `max_keys_per_window`).
pub const ANALYTICS_DECISIONS: &str = "portcullis_analytics_decisions_total";
/// Analytics flushes to the store, by `result` (`ok`, `error`).
pub const ANALYTICS_FLUSHES: &str = "portcullis_analytics_flushes_total";
/// Decisions the analytics dropped after the store kept refusing them.
pub const ANALYTICS_DROPPED: &str = "portcullis_analytics_dropped_decisions_total";
/// Distinct keys (and subjects) held in memory for the current minutes.
pub const ANALYTICS_KEYS: &str = "portcullis_analytics_keys_in_window";
/// Always 1, labelled with the `version`.
pub const BUILD_INFO: &str = "portcullis_build_info";
/// Fetches of a trusted issuer's keys, by `issuer`, `trigger` and `result`.
pub const JWKS_FETCHES: &str = "portcullis_jwks_fetches_total";
/// Keys held for a trusted issuer, by `issuer`.
pub const JWKS_KEYS: &str = "portcullis_jwks_keys";
/// A trusted issuer's key set: 1 for the current `state` (fresh, stale,
/// unusable), 0 for the others, by `issuer`.
pub const JWKS_STATE: &str = "portcullis_jwks_state";

/// Failed credentials counted against client addresses.
pub const ABUSE_FAILURES: &str = "portcullis_abuse_failures_total";
/// Times a client address became blocked.
pub const ABUSE_BLOCKS: &str = "portcullis_abuse_blocks_total";
/// Requests refused before verification, by `reason` (`blocked`, `busy`).
pub const ABUSE_REFUSED: &str = "portcullis_abuse_refused_total";
/// Client addresses (IPv4 addresses, IPv6 /64s) tracked for failures, as
/// of the last new block.
pub const ABUSE_ADDRESSES: &str = "portcullis_abuse_addresses";

/// The label value of a decision that named no route.
pub const NO_ROUTE: &str = "none";
/// The label value that stands for every route past [`AdmissionMetrics`]'s
/// capacity.
pub const OTHER_ROUTES: &str = "other";

/// Registers the help text and unit of every metric above with the
/// installed recorder (Prometheus's `# HELP` lines). Call once, after
/// installing it.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        ANALYTICS_DECISIONS,
        Unit::Count,
        "Decisions the per-key analytics counted, by row: key (its own), unverified (a credential that did not verify), overflow (past max_keys_per_window)."
    );
    describe_counter!(
        ANALYTICS_FLUSHES,
        Unit::Count,
        "Analytics flushes to the store, by result (ok, error)."
    );
    describe_counter!(
        ANALYTICS_DROPPED,
        Unit::Count,
        "Decisions the analytics dropped after the store kept refusing them."
    );
    describe_gauge!(
        ANALYTICS_KEYS,
        Unit::Count,
        "Distinct keys and subjects held in memory for the current minutes."
    );
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "Requests answered, by route pattern, method class and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's head to the head of its answer, by route pattern."
    );
    describe_counter!(
        ADMISSIONS,
        Unit::Count,
        "Admission decisions, by route pattern, entrance (proxy, decision, layer), credential scheme and outcome."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time the upstream took to answer with its head (or to fail), by route pattern."
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        Unit::Count,
        "Proxied requests the upstream did not answer, by kind (connect, request, timeout, busy)."
    );
    describe_histogram!(
        STORE_LOOKUP_DURATION,
        Unit::Seconds,
        "One API-key lookup in the store after both caches missed, by result (found, unknown, error)."
    );
    describe_counter!(
        KEY_CACHE_HITS,
        Unit::Count,
        "Key verifications answered from a cache (positive: known keys; negative: unknown keys)."
    );
    describe_counter!(
        KEY_CACHE_MISSES,
        Unit::Count,
        "Key verifications a cache could not answer (a negative-cache miss goes to the store)."
    );
    describe_gauge!(
        KEY_CACHE_ENTRIES,
        Unit::Count,
        "Entries in a key cache, at scrape time."
    );
    describe_counter!(
        STORE_KEY_LOOKUPS,
        Unit::Count,
        "Key lookups that reached the store."
    );
    describe_gauge!(
        STORE_UP,
        "1 when API keys verify as they should (the store answers, the caches are fresh); 0 when keys answer 503."
    );
    describe_gauge!(
        STORE_BREAKER_OPEN,
        "1 while key lookups answer 503 without asking the store (a query or poll failed)."
    );
    describe_gauge!(
        STORE_STALE,
        "1 while the key change log has gone unread for longer than stale_grace."
    );
    describe_gauge!(
        STORE_LAST_POLL_AGE,
        Unit::Seconds,
        "Seconds since the key change log was last read."
    );
    describe_histogram!(
        REDIS_DECISION_DURATION,
        Unit::Seconds,
        "One rate-limit decision in Redis, by result (ok, error)."
    );
    describe_gauge!(
        RATELIMIT_BREAKER_STATE,
        "The Redis breaker: 1 for its current state (closed, open, half_open), 0 for the others."
    );
    describe_counter!(
        RATELIMIT_FALLBACKS,
        Unit::Count,
        "Rate-limit decisions made by on_backend_error while Redis was unusable."
    );
    describe_counter!(
        RATELIMIT_REDIS_ERRORS,
        Unit::Count,
        "Redis rate-limit calls that failed or timed out."
    );
    describe_counter!(
        RATELIMIT_BREAKER_OPENED,
        Unit::Count,
        "Times the Redis breaker opened."
    );
    describe_counter!(
        ABUSE_FAILURES,
        Unit::Count,
        "Failed credentials (malformed, unknown, invalid) counted against client addresses."
    );
    describe_counter!(
        ABUSE_BLOCKS,
        Unit::Count,
        "Times a client address (IPv4 address, IPv6 /64) became blocked for too many failed credentials."
    );
    describe_counter!(
        ABUSE_REFUSED,
        Unit::Count,
        "Requests refused before any verification, by reason (blocked: the address is blocked; busy: it has too many verifications waiting)."
    );
    describe_gauge!(
        ABUSE_ADDRESSES,
        Unit::Count,
        "Client addresses tracked for failed credentials, as of the last new block."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is the label.");
    describe_counter!(
        JWKS_FETCHES,
        Unit::Count,
        "Fetches of a trusted issuer's keys, by issuer (configured ones only), trigger (start, scheduled, unknown_kid) and result (ok, error)."
    );
    describe_gauge!(JWKS_KEYS, "Keys held for a trusted issuer.");
    describe_gauge!(
        JWKS_STATE,
        "A trusted issuer's key set: 1 for its state (fresh; stale: past max-age, provider unreachable, still serving; unusable: its tokens get 503), 0 for the others."
    );
}

/// Counts one fetch of a trusted issuer's keys. The issuer label is
/// bounded: only configured issuers fetch.
pub fn jwks_fetch(issuer: &str, trigger: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(JWKS_FETCHES, "issuer" => issuer.to_owned(), "trigger" => trigger, "result" => result)
        .increment(1);
}

/// Sets a trusted issuer's key count and state gauges.
pub fn jwks_state(issuer: &str, keys: usize, state: &'static str) {
    metrics::gauge!(JWKS_KEYS, "issuer" => issuer.to_owned()).set(keys as f64);
    for s in ["fresh", "stale", "unusable"] {
        let v = if s == state { 1.0 } else { 0.0 };
        metrics::gauge!(JWKS_STATE, "issuer" => issuer.to_owned(), "state" => s).set(v);
    }
}

/// Sets `portcullis_build_info{version}` to 1.
pub fn build_info(version: &'static str) {
    metrics::gauge!(BUILD_INFO, "version" => version).set(1.0);
}

/// Seconds as a histogram records them.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// --- state read at scrape time ------------------------------------------------

/// Sets the verifier's gauges and counters from its state: cache sizes,
/// health, store lookups. For a scrape (or a timer), not for a request:
/// it runs the caches' pending maintenance.
pub fn record_verifier(v: &Verifier) {
    use metrics::{counter, gauge};
    let (known, unknown) = v.cache_sizes();
    gauge!(KEY_CACHE_ENTRIES, "cache" => "positive").set(known as f64);
    gauge!(KEY_CACHE_ENTRIES, "cache" => "negative").set(unknown as f64);
    let h = v.health();
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauge!(STORE_UP).set(flag(h.ready()));
    gauge!(STORE_BREAKER_OPEN).set(flag(h.breaker_open));
    gauge!(STORE_STALE).set(flag(h.stale));
    gauge!(STORE_LAST_POLL_AGE).set(h.last_poll_age_secs as f64);
    counter!(STORE_KEY_LOOKUPS).absolute(v.store_key_lookups());
}

/// Sets the per-key analytics' counts: what was counted under which row,
/// flushes, drops, keys held. For a scrape or a timer.
pub fn record_analytics(a: &crate::analytics::Analytics) {
    use metrics::{counter, gauge};
    let st = a.stats();
    let own = st.counted.saturating_sub(st.unverified + st.overflowed);
    counter!(ANALYTICS_DECISIONS, "row" => "key").absolute(own);
    counter!(ANALYTICS_DECISIONS, "row" => "unverified").absolute(st.unverified);
    counter!(ANALYTICS_DECISIONS, "row" => "overflow").absolute(st.overflowed);
    counter!(ANALYTICS_FLUSHES, "result" => "ok").absolute(st.flushes);
    counter!(ANALYTICS_FLUSHES, "result" => "error").absolute(st.flush_failures);
    counter!(ANALYTICS_DROPPED).absolute(st.dropped);
    gauge!(ANALYTICS_KEYS).set(st.keys_in_window as f64);
}

/// Sets the limiter's breaker state and its counts (fallbacks, Redis
/// errors, openings). For a scrape or a timer.
pub fn record_limiter(l: &Limiter) {
    use metrics::{counter, gauge};
    use std::sync::atomic::Ordering::Relaxed;
    let now = l.breaker_state();
    for s in [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ] {
        gauge!(RATELIMIT_BREAKER_STATE, "state" => s.as_str()).set(if s == now {
            1.0
        } else {
            0.0
        });
    }
    let st = l.stats();
    counter!(RATELIMIT_FALLBACKS).absolute(st.fallback.load(Relaxed));
    counter!(RATELIMIT_REDIS_ERRORS).absolute(st.errors.load(Relaxed));
    counter!(RATELIMIT_BREAKER_OPENED).absolute(st.opened.load(Relaxed));
}

// --- handles the library records into ----------------------------------------

/// The verifier's handles: cache hits and misses, store lookup times.
#[derive(Debug, Clone)]
pub(crate) struct VerifierMetrics {
    pub(crate) positive_hit: Counter,
    pub(crate) positive_miss: Counter,
    pub(crate) negative_hit: Counter,
    pub(crate) negative_miss: Counter,
    pub(crate) lookup_found: Histogram,
    pub(crate) lookup_unknown: Histogram,
    pub(crate) lookup_error: Histogram,
}

impl VerifierMetrics {
    /// Resolved from the recorder installed now.
    pub(crate) fn new() -> VerifierMetrics {
        use metrics::{counter, histogram};
        VerifierMetrics {
            positive_hit: counter!(KEY_CACHE_HITS, "cache" => "positive"),
            positive_miss: counter!(KEY_CACHE_MISSES, "cache" => "positive"),
            negative_hit: counter!(KEY_CACHE_HITS, "cache" => "negative"),
            negative_miss: counter!(KEY_CACHE_MISSES, "cache" => "negative"),
            lookup_found: histogram!(STORE_LOOKUP_DURATION, "result" => "found"),
            lookup_unknown: histogram!(STORE_LOOKUP_DURATION, "result" => "unknown"),
            lookup_error: histogram!(STORE_LOOKUP_DURATION, "result" => "error"),
        }
    }
}

/// The Redis limiter's handles: decision times by result.
#[derive(Debug, Clone)]
pub(crate) struct RedisMetrics {
    pub(crate) ok: Histogram,
    pub(crate) error: Histogram,
}

impl RedisMetrics {
    /// Resolved from the recorder installed now.
    pub(crate) fn new() -> RedisMetrics {
        use metrics::histogram;
        RedisMetrics {
            ok: histogram!(REDIS_DECISION_DURATION, "result" => "ok"),
            error: histogram!(REDIS_DECISION_DURATION, "result" => "error"),
        }
    }
}

// --- admission outcomes --------------------------------------------------------

/// The entrances, in label order.
const ENTRANCES: [Entrance; 3] = [Entrance::Proxy, Entrance::Decision, Entrance::Layer];
/// Schemes plus "none".
const SCHEME_SLOTS: usize = Scheme::ALL.len() + 1;
/// Counters per route: entrance × scheme × outcome.
const CELLS: usize = ENTRANCES.len() * SCHEME_SLOTS * Outcome::ALL.len();

/// The label value of an entrance.
pub fn entrance_label(e: Entrance) -> &'static str {
    match e {
        Entrance::Proxy => "proxy",
        Entrance::Decision => "decision",
        Entrance::Layer => "layer",
    }
}

fn entrance_index(e: Entrance) -> usize {
    match e {
        Entrance::Proxy => 0,
        Entrance::Decision => 1,
        Entrance::Layer => 2,
    }
}

fn scheme_index(s: Option<Scheme>) -> usize {
    match s {
        None => 0,
        Some(s) => Scheme::ALL
            .iter()
            .position(|x| *x == s)
            .map_or(0, |i| i + 1),
    }
}

fn scheme_label(i: usize) -> &'static str {
    match i.checked_sub(1).and_then(|i| Scheme::ALL.get(i)) {
        Some(s) => s.name(),
        None => "none",
    }
}

/// A route's slot once claimed: its label and its counters.
type Claimed = (Box<str>, RouteCells);

/// One route's counters, each registered on its first decision.
struct RouteCells {
    label: SharedString,
    cells: Box<[OnceLock<Counter>]>,
}

impl RouteCells {
    fn new(label: SharedString) -> RouteCells {
        RouteCells {
            label,
            cells: (0..CELLS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn count(&self, entrance: Entrance, scheme: Option<Scheme>, outcome: Outcome) {
        let (e, s, o) = (
            entrance_index(entrance),
            scheme_index(scheme),
            outcome.index(),
        );
        let i = (e * SCHEME_SLOTS + s) * Outcome::ALL.len() + o;
        let Some(cell) = self.cells.get(i) else {
            return;
        };
        cell.get_or_init(|| {
            // Once per label combination: the only time the registry is
            // asked (and a key allocated).
            metrics::counter!(
                ADMISSIONS,
                "route" => self.label.clone(),
                "entrance" => entrance_label(entrance),
                "scheme" => scheme_label(s),
                "outcome" => outcome.as_str(),
            )
        })
        .increment(1);
    }
}

/// Counts every admission decision by route, entrance, scheme and
/// outcome: an [`Observer`] for `Pipeline::observed_by` (the gateway) or
/// `Builder::observer` (a service).
///
/// Routes are found by their label in a fixed-size open-addressing table
/// whose slots are filled once (`OnceLock`) and never change: a lookup is
/// a hash of the route pattern and atomic loads, with no lock, and no
/// allocation after a route's first decision. Routes past the table's
/// capacity share the label `other`, so a service with unexpectedly many
/// patterns cannot grow the label set without bound.
pub struct AdmissionMetrics {
    slots: Box<[OnceLock<Claimed>]>,
    /// Routes with a slot (at most `capacity`).
    claimed: AtomicUsize,
    capacity: usize,
    /// Decisions that named no route: always their own label.
    none: RouteCells,
    other: RouteCells,
}

impl std::fmt::Debug for AdmissionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionMetrics")
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl AdmissionMetrics {
    /// Room for `routes` distinct route labels (the table is twice that,
    /// so probes stay short).
    pub fn with_capacity(routes: usize) -> AdmissionMetrics {
        let capacity = routes.max(8);
        AdmissionMetrics {
            slots: (0..(capacity * 2).next_power_of_two())
                .map(|_| OnceLock::new())
                .collect(),
            claimed: AtomicUsize::new(0),
            capacity,
            none: RouteCells::new(SharedString::const_str(NO_ROUTE)),
            other: RouteCells::new(SharedString::const_str(OTHER_ROUTES)),
        }
    }

    /// Claims the slots of `routes` now, so their order in the table does
    /// not depend on which is asked first (optional).
    pub fn register<'a>(self, routes: impl IntoIterator<Item = &'a str>) -> AdmissionMetrics {
        for r in routes {
            let _ = self.cells(r);
        }
        self
    }

    /// The counters of `route`.
    fn cells(&self, route: &str) -> &RouteCells {
        if route.is_empty() {
            return &self.none;
        }
        let mask = self.slots.len() - 1;
        let mut i = fnv1a(route.as_bytes()) as usize & mask;
        // Slots fill in probe order and never empty, so the first empty
        // slot on the way means `route` is not in the table yet.
        for _ in 0..self.slots.len() {
            let Some(slot) = self.slots.get(i) else { break };
            let claimed = match slot.get() {
                Some(s) => s,
                None => {
                    if self.claimed.load(Ordering::Relaxed) >= self.capacity
                        || self.claimed.fetch_add(1, Ordering::Relaxed) >= self.capacity
                    {
                        return &self.other;
                    }
                    // Another route may win the race for this slot: then
                    // probing goes on.
                    slot.get_or_init(|| {
                        (
                            route.into(),
                            RouteCells::new(SharedString::from(route.to_owned())),
                        )
                    })
                }
            };
            if &*claimed.0 == route {
                return &claimed.1;
            }
            i = (i + 1) & mask;
        }
        &self.other
    }
}

impl Observer for AdmissionMetrics {
    fn decided(&self, d: &Decision<'_>) {
        self.cells(d.route).count(d.entrance, d.scheme, d.outcome);
    }
}

/// FNV-1a: short route patterns, chosen by the operator, not by clients,
/// so a fast unkeyed hash is enough.
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_index_is_in_range_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for e in ENTRANCES {
            for s in 0..SCHEME_SLOTS {
                for o in Outcome::ALL {
                    let i = (entrance_index(e) * SCHEME_SLOTS + s) * Outcome::ALL.len() + o.index();
                    assert!(i < CELLS);
                    assert!(seen.insert(i));
                }
            }
        }
        assert_eq!(seen.len(), CELLS);
        assert_eq!(scheme_label(0), "none");
        assert_eq!(scheme_label(scheme_index(Some(Scheme::Bearer))), "bearer");
    }

    #[test]
    fn routes_find_their_own_slot_and_overflow_to_other() {
        let m = AdmissionMetrics::with_capacity(8);
        let names: Vec<String> = (0..40).map(|i| format!("/r{i}")).collect();
        let mut own = 0;
        for n in &names {
            let c = m.cells(n);
            if &*c.label == n.as_str() {
                own += 1;
                // Asked again, the same cells.
                assert!(std::ptr::eq(c, m.cells(n)));
            } else {
                assert_eq!(&*c.label, OTHER_ROUTES);
            }
        }
        // Exactly the capacity asked for.
        assert_eq!(own, 8);
        assert_eq!(&*m.cells("").label, NO_ROUTE);
    }
}
