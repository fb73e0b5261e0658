//! Rate-limit policies and the GCRA decision, with no I/O: callers keep
//! one number per counter (the theoretical arrival time, TAT) wherever
//! they like (memory, Redis) and ask [`decide`] what to do with a request.
//!
//! GCRA spreads a limit of `count` per `period` as one request every
//! `period / count`, with a burst allowance: no double burst at a window
//! edge, and a refused request changes nothing, so it never eats into the
//! caller's allowance.
//!
//! Time is kept in integer nanoseconds: a u64 of them covers 584 years
//! from the Unix epoch, and every interval a policy can name is a whole
//! number of them, rounded down by less than one nanosecond when `count`
//! does not divide the period (`7/second` is one every 142 857 142 ns). So
//! `5000/second` is one request every 200 µs exactly, and any rate up to
//! one request a nanosecond is counted as written. Nanoseconds rather than
//! microseconds because a microsecond interval would round `3/second` to
//! 333 333 µs (3.000003 a second) and cap rates at a million a second.

use std::fmt;

/// The longest a counter's allowance takes to refill, in nanoseconds: 50
/// years of 366 days. A limit whose burst would take longer to refill is
/// cut to 50 years' worth of requests: `1/366 days burst 100` admits 50
/// back to back, not 100 (a client can tell: its 51st request is
/// refused). Parsing does not refuse such a burst, because the admin
/// API's pattern promises every string it takes parses; such limits are
/// for one-off allowances where the difference is harmless, and
/// docs/configuration.md says so. The bound keeps every number the
/// decision adds up (the TAT ahead of now, one request's increment, the
/// window) within 2^53 microseconds, where the Redis script's Lua doubles
/// are exact (see `portcullis::ratelimit::redis`).
pub const MAX_SPAN_NS: u64 = 50 * 366 * 86_400 * NS_PER_SEC;

/// Nanoseconds in a second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// One limit: `count` requests per `period_ms`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests per period.
    pub count: u32,
    /// The period, in milliseconds (a whole number of seconds when parsed).
    pub period_ms: u64,
    /// Requests admitted back to back from an idle start.
    pub burst: u32,
}

/// A policy: one or more limits that must all admit a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy(pub Vec<Limit>);

/// A policy string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

fn unit_ms(u: &str) -> Option<u64> {
    let u = u.strip_suffix('s').unwrap_or(u);
    Some(match u {
        "second" | "sec" => 1_000,
        "minute" | "min" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        _ => return None,
    })
}

impl Limit {
    /// Nanoseconds between two requests at the steady rate:
    /// `period / count`, rounded down, at least 1 (the parser refuses
    /// anything faster than one a nanosecond; a hand-built `Limit` that is
    /// faster counts one a nanosecond).
    pub fn emission_ns(&self) -> u64 {
        (self.period_ms.saturating_mul(1_000_000) / u64::from(self.count.max(1))).max(1)
    }

    /// Nanoseconds for the whole burst to come back from empty:
    /// `burst × emission`, at most [`MAX_SPAN_NS`].
    pub fn window_ns(&self) -> u64 {
        self.emission_ns()
            .saturating_mul(u64::from(self.burst))
            .min(MAX_SPAN_NS)
    }

    /// Nanoseconds one request of `cost` moves the TAT: `cost × emission`,
    /// at most `2 × MAX_SPAN_NS` (anything over the window is refused
    /// whatever its size; the cap only keeps the arithmetic exact).
    pub fn increment_ns(&self, cost: u32) -> u64 {
        self.emission_ns()
            .saturating_mul(u64::from(cost.max(1)))
            .min(2 * MAX_SPAN_NS)
    }

    /// Requests left when the TAT is `ahead_ns` past now:
    /// `(window - ahead) / emission`.
    pub fn room(&self, ahead_ns: u64) -> u32 {
        let room = self.window_ns().saturating_sub(ahead_ns) / self.emission_ns();
        u32::try_from(room).unwrap_or(u32::MAX)
    }

    /// The policy's name in `RateLimit-Policy` (`100;w=60`).
    pub fn header_value(&self) -> String {
        format!("{};w={}", self.count, self.period_ms.div_ceil(1000))
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match self.period_ms {
            p if p % 86_400_000 == 0 => (p / 86_400_000, "day"),
            p if p % 3_600_000 == 0 => (p / 3_600_000, "hour"),
            p if p % 60_000 == 0 => (p / 60_000, "minute"),
            p => (p / 1000, "second"),
        };
        if n == 1 {
            write!(f, "{}/{unit}", self.count)?;
        } else {
            write!(f, "{}/{n} {unit}s", self.count)?;
        }
        if self.burst != self.count {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl Policy {
    /// Parses slowapi's syntax: limits separated by `;` or `,`, each
    /// `N/unit`, `N per unit`, `N/M units` or `N per M units` (units
    /// second to day), optionally followed by `burst B`.
    pub fn parse(s: &str) -> Result<Policy, PolicyError> {
        let mut out = Vec::new();
        for item in s.split([';', ',']) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            out.push(parse_limit(item)?);
        }
        if out.is_empty() {
            return Err(PolicyError(format!(
                "{s:?} names no limit; write e.g. \"100/minute\" or \"10/second; 1000/hour\""
            )));
        }
        if out.len() > 8 {
            return Err(PolicyError("at most 8 limits in one policy".into()));
        }
        Ok(Policy(out))
    }

    /// The limits.
    pub fn limits(&self) -> &[Limit] {
        &self.0
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

fn parse_limit(item: &str) -> Result<Limit, PolicyError> {
    let bad = || {
        PolicyError(format!(
            "{item:?} is not a limit; write e.g. \"100/minute\", \"5 per 10 seconds\" or \"100/minute burst 20\""
        ))
    };
    let lower = item.to_ascii_lowercase();
    let (rate, burst) = match lower.split_once("burst") {
        Some((r, b)) => (r.trim().to_owned(), Some(b.trim().to_owned())),
        None => (lower.clone(), None),
    };
    let (count, per) = match rate.split_once('/') {
        Some((c, p)) => (c.trim().to_owned(), p.trim().to_owned()),
        None => match rate.split_once(" per ") {
            Some((c, p)) => (c.trim().to_owned(), p.trim().to_owned()),
            None => return Err(bad()),
        },
    };
    let count: u32 = count.parse().map_err(|_| bad())?;
    let mut words = per.split_whitespace();
    let (n, unit) = match (words.next(), words.next(), words.next()) {
        (Some(u), None, None) => (1u64, u),
        (Some(n), Some(u), None) => (n.parse::<u64>().map_err(|_| bad())?, u),
        _ => return Err(bad()),
    };
    let period_ms = unit_ms(unit)
        .ok_or_else(|| {
            PolicyError(format!(
                "{item:?}: the unit must be second, minute, hour or day"
            ))
        })?
        .checked_mul(n)
        .filter(|p| *p > 0 && *p <= 366 * 86_400_000)
        .ok_or_else(bad)?;
    if count == 0 {
        return Err(PolicyError(format!(
            "{item:?}: a limit of 0 admits nothing; leave the limit out or deny the route"
        )));
    }
    // Counters keep time in whole nanoseconds, so the steady rate can be
    // at most one request a nanosecond (a billion a second). A faster
    // limit would silently count as that: refuse it instead. (A u32 count
    // over a period of at least a second only passes this at 1e9+/second.)
    if period_ms.saturating_mul(1_000_000) < u64::from(count) {
        return Err(PolicyError(format!(
            "{item:?}: at most 1000000000 per second can be counted (one per nanosecond)"
        )));
    }
    // The steady rate is counted as a whole number of nanoseconds per
    // request, rounded down, which admits more than written: 700000000/second
    // would be counted as 1 ns apart, a billion a second (+43 %). Refuse a
    // limit the rounding over-admits by more than 1 % (the remainder of
    // period / count, over the period), with the ceiling that counts it
    // within that: the rate counted is count × P / (P − r) for a period of
    // P ns and a remainder r, at most 1 % over while 101·r ≤ P (100·r ≤ P
    // would let it reach 1.0101×, which a property test found). Every count
    // of up to 7 digits passes at any period of a second or more (P is at
    // least 100 counts plus r, and r is below the count, so P > 101·r),
    // which is what the admin API's pattern takes.
    let period_ns = period_ms.saturating_mul(1_000_000);
    if (period_ns % u64::from(count)).saturating_mul(101) > period_ns {
        return Err(PolicyError(format!(
            "{item:?}: counted in whole nanoseconds per request, this rate would admit more \
             than 1 % over what it says; use at most 10000000 per second, or a count that \
             divides the period's nanoseconds more evenly"
        )));
    }
    let burst = match burst {
        None => count,
        Some(b) => {
            let b: u32 = b.parse().map_err(|_| bad())?;
            if b == 0 {
                return Err(PolicyError(format!("{item:?}: burst must be at least 1")));
            }
            b
        }
    };
    Ok(Limit {
        count,
        period_ms,
        burst,
    })
}

/// What GCRA says about one request against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admit, and store `tat` as the counter's new value.
    Admit {
        /// The new TAT, in nanoseconds.
        tat: u64,
        /// Requests left right now.
        remaining: u32,
        /// Nanoseconds until the allowance is whole again.
        reset_ns: u64,
    },
    /// Refuse; store nothing.
    Refuse {
        /// Nanoseconds until one request would be admitted.
        retry_after_ns: u64,
        /// Nanoseconds until the allowance is whole again.
        reset_ns: u64,
    },
}

/// GCRA: a request of `cost` at `now_ns` against `limit`, with the
/// counter's stored TAT in nanoseconds (`None` when it has none, or it
/// expired).
pub fn decide(limit: &Limit, tat: Option<u64>, now_ns: u64, cost: u32) -> Decision {
    let window = limit.window_ns();
    let tat = tat.unwrap_or(now_ns).max(now_ns);
    // Saturating: `now_ns` near u64::MAX (only a fuzzer's clock) must not
    // panic; with real clocks every sum stays far below it.
    let new_tat = tat.saturating_add(limit.increment_ns(cost));
    let allow_at = new_tat.saturating_sub(window);
    if now_ns < allow_at {
        return Decision::Refuse {
            retry_after_ns: allow_at - now_ns,
            reset_ns: tat - now_ns,
        };
    }
    Decision::Admit {
        tat: new_tat,
        remaining: limit.room(new_tat - now_ns),
        reset_ns: new_tat - now_ns,
    }
}

/// Nanoseconds to whole seconds for headers (`Retry-After`, `reset`):
/// rounded up, so a client that waits that long is admitted.
pub fn ns_to_secs_ceil(ns: u64) -> u64 {
    ns.div_ceil(NS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = NS_PER_SEC;
    /// A Unix time in nanoseconds (2023-11-14).
    const T0: u64 = 1_700_000_000 * SEC;

    fn lim(count: u32, period_ms: u64, burst: u32) -> Limit {
        Limit {
            count,
            period_ms,
            burst,
        }
    }

    /// Admits `cost`-1 requests at `now` until one is refused; returns how
    /// many were admitted and the TAT.
    fn drain(l: &Limit, mut tat: Option<u64>, now: u64) -> (u32, Option<u64>) {
        let mut n = 0;
        while let Decision::Admit { tat: t, .. } = decide(l, tat, now, 1) {
            tat = Some(t);
            n += 1;
        }
        (n, tat)
    }

    #[test]
    fn a_window_near_u64_max_does_not_overflow() {
        // Found by the `ratelimit_policy` fuzz target: a burst that takes
        // 700 million years to refill. The window is capped at
        // MAX_SPAN_NS, and nothing overflows at any time.
        let p = Policy::parse("1/60 days burst 4294967295").unwrap();
        let l = &p.limits()[0];
        assert_eq!(l.window_ns(), MAX_SPAN_NS);
        for now in [0u64, T0, 4_102_444_800 * SEC, u64::MAX - 1, u64::MAX] {
            assert!(matches!(decide(l, None, now, 1), Decision::Admit { .. }));
            for cost in [1, u32::MAX] {
                let _ = decide(l, Some(u64::MAX), now, cost);
            }
        }
    }

    #[test]
    fn parses_slowapi_syntax() {
        let p = Policy::parse("10/second; 1000/hour").unwrap();
        assert_eq!(p.0, vec![lim(10, 1000, 10), lim(1000, 3_600_000, 1000)]);
        assert_eq!(
            Policy::parse("5 per 10 seconds").unwrap().0[0].period_ms,
            10_000
        );
        assert_eq!(Policy::parse("100/Minute burst 20").unwrap().0[0].burst, 20);
        assert_eq!(Policy::parse("3/day").unwrap().to_string(), "3/day");
        assert_eq!(
            Policy::parse("5 per 10 seconds").unwrap().to_string(),
            "5/10 seconds"
        );
        for bad in [
            "",
            "x",
            "0/minute",
            "5/fortnight",
            "5/minute burst 0",
            "-1/second",
            "5//",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_rate_up_to_one_a_nanosecond_parses_and_faster_is_refused() {
        for ok in [
            "1001/second",
            "5000/second",
            "100000/minute",
            "1000000/second",
            "1000000000/second",
            "999999999/second",
            "4000000000/minute",
        ] {
            assert!(Policy::parse(ok).is_ok(), "{ok}");
        }
        let e = Policy::parse("1000000001/second").unwrap_err().to_string();
        assert!(e.contains("one per nanosecond"), "{e}");
        assert!(Policy::parse("4294967295/second").is_err());
    }

    /// Whole-nanosecond intervals round the rate up: a limit the rounding
    /// would over-admit by more than 1 % is refused, not run faster.
    #[test]
    fn a_rate_rounding_would_raise_by_over_one_percent_is_refused() {
        let e = Policy::parse("700000000/second").unwrap_err().to_string();
        assert!(e.contains("more than 1 %"), "{e}");
        for bad in [
            // 1.0101× by the old check (100·r ≤ P); found by the property test.
            "3561044777/241 seconds",
            "4294967295/minute",
            "4294967295/5 seconds",
            "600000000/second",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        // 1 ns apart for 999999999 a second: one in a billion over.
        assert_eq!(
            Policy::parse("999999999/second").unwrap().0[0].emission_ns(),
            1
        );
    }

    proptest::proptest! {
        /// What parses runs within 1 % of what it says; every count of up
        /// to 7 digits parses at any period.
        #[test]
        fn what_parses_runs_within_one_percent(
            count in 1u32..=u32::MAX,
            secs in 1u64..=86_400,
        ) {
            let item = format!("{count}/{secs} seconds");
            match Policy::parse(&item) {
                Ok(p) => {
                    let l = p.0[0];
                    let period_ns = l.period_ms * 1_000_000;
                    let counted = u128::from(period_ns / l.emission_ns());
                    proptest::prop_assert!(counted * 100 <= u128::from(count) * 101, "{}", item);
                }
                Err(_) => proptest::prop_assert!(count >= 10_000_000, "{}", item),
            }
        }
    }

    #[test]
    fn intervals_are_exact_nanoseconds() {
        let e = |s: &str| Policy::parse(s).unwrap().0[0].emission_ns();
        assert_eq!(e("5000/second"), 200_000);
        assert_eq!(e("100000/minute"), 600_000);
        assert_eq!(e("1000/second"), MS);
        assert_eq!(e("1000000000/second"), 1);
        assert_eq!(e("100/minute"), 600 * MS);
        // Rounded down by less than a nanosecond.
        assert_eq!(e("7/second"), 142_857_142);
        assert_eq!(e("3/second"), 333_333_333);
    }

    #[test]
    fn five_thousand_a_second_is_exactly_that() {
        let l = Policy::parse("5000/second").unwrap().0[0];
        // From idle: the whole burst at once, then nothing.
        let (n, tat) = drain(&l, None, T0);
        assert_eq!(n, 5000);
        assert_eq!(tat, Some(T0 + SEC));
        assert_eq!(
            decide(&l, tat, T0, 1),
            Decision::Refuse {
                retry_after_ns: 200_000,
                reset_ns: SEC
            }
        );
        // 199 µs later: still nothing; 200 µs: exactly one.
        assert_eq!(drain(&l, tat, T0 + 199_999).0, 0);
        let (n, tat) = drain(&l, tat, T0 + 200_000);
        assert_eq!(n, 1);
        // One second after the start: the 4999 that came back since.
        assert_eq!(drain(&l, tat, T0 + SEC).0, 4999);
        // A steady 5000 a second, one every 200 µs for ten seconds, with
        // no burst to lean on: every one admitted, and a 5001st in any
        // second refused.
        let one = lim(5000, 1000, 1);
        let mut tat = None;
        for i in 0..50_000u64 {
            match decide(&one, tat, T0 + i * 200_000, 1) {
                Decision::Admit { tat: t, .. } => tat = Some(t),
                d => panic!("{i}: {d:?}"),
            }
            if i % 5000 == 4999 {
                assert!(matches!(
                    decide(&one, tat, T0 + i * 200_000 + 100_000, 1),
                    Decision::Refuse {
                        retry_after_ns: 100_000,
                        ..
                    }
                ));
            }
        }
    }

    #[test]
    fn a_hundred_thousand_a_minute_is_exactly_that() {
        let l = Policy::parse("100000/minute").unwrap().0[0];
        let (n, tat) = drain(&l, None, T0);
        assert_eq!(n, 100_000);
        // 600 µs a request: a minute later, exactly the whole burst again;
        // a nanosecond earlier, one fewer.
        assert_eq!(drain(&l, tat, T0 + 60 * SEC - 1).0, 99_999);
        assert_eq!(drain(&l, tat, T0 + 60 * SEC).0, 100_000);
        assert_eq!(drain(&l, tat, T0 + 600_000).0, 1);
        assert_eq!(drain(&l, tat, T0 + 599_999).0, 0);
    }

    #[test]
    fn gcra_admits_exactly_the_burst_and_refusals_cost_nothing() {
        let l = lim(5, 1000, 5);
        let now = 10 * SEC;
        let mut tat = None;
        for i in 0..5 {
            match decide(&l, tat, now, 1) {
                Decision::Admit {
                    tat: t, remaining, ..
                } => {
                    tat = Some(t);
                    assert_eq!(remaining, 4 - i);
                }
                d => panic!("{i}: {d:?}"),
            }
        }
        // Refused, many times, without moving the counter.
        for _ in 0..100 {
            match decide(&l, tat, now, 1) {
                Decision::Refuse { retry_after_ns, .. } => assert_eq!(retry_after_ns, 200 * MS),
                d => panic!("{d:?}"),
            }
        }
        // One emission interval later, exactly one more.
        assert!(matches!(
            decide(&l, tat, now + 200 * MS, 1),
            Decision::Admit { .. }
        ));
        // Idle for a whole period: the full burst again, not two.
        assert_eq!(drain(&l, tat, 20 * SEC).0, 5);
    }

    #[test]
    fn smaller_burst_spreads_requests() {
        let l = lim(60, 60_000, 2);
        let Decision::Admit { tat, .. } = decide(&l, None, 0, 1) else {
            panic!()
        };
        let Decision::Admit { tat, .. } = decide(&l, Some(tat), 0, 1) else {
            panic!()
        };
        assert!(matches!(
            decide(&l, Some(tat), 0, 1),
            Decision::Refuse {
                retry_after_ns: SEC,
                ..
            }
        ));
        assert!(matches!(
            decide(&l, Some(tat), SEC, 1),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn cost_counts_as_several_requests() {
        let l = lim(10, 1000, 10);
        let Decision::Admit { tat, remaining, .. } = decide(&l, None, 0, 4) else {
            panic!()
        };
        assert_eq!(remaining, 6);
        assert!(matches!(
            decide(&l, Some(tat), 0, 7),
            Decision::Refuse { .. }
        ));
        assert!(matches!(
            decide(&l, Some(tat), 0, 6),
            Decision::Admit { remaining: 0, .. }
        ));
        // More than the burst at once: never admitted, however long the
        // counter has been idle.
        assert!(matches!(decide(&l, None, 0, 11), Decision::Refuse { .. }));
        assert!(matches!(
            decide(&l, None, 0, u32::MAX),
            Decision::Refuse { .. }
        ));
    }

    #[test]
    fn headers_round_up_to_whole_seconds() {
        assert_eq!(ns_to_secs_ceil(0), 0);
        assert_eq!(ns_to_secs_ceil(1), 1);
        assert_eq!(ns_to_secs_ceil(200_000), 1);
        assert_eq!(ns_to_secs_ceil(SEC), 1);
        assert_eq!(ns_to_secs_ceil(SEC + 1), 2);
    }

    /// A limit of any rate the parser takes (a second to a day per period,
    /// up to a million a second), and any burst up to 2000.
    fn any_limit() -> impl Strategy<Value = Limit> {
        (1u64..=86_400, 1u32..=2000).prop_flat_map(|(period_s, burst)| {
            let most = u32::try_from((period_s * 1_000_000).min(u64::from(u32::MAX))).unwrap();
            (1u32..=most).prop_map(move |count| lim(count, period_s * 1000, burst))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the arrivals (gaps from 0 to three intervals, costs 1
        /// to 3), what is admitted between any two of them never exceeds
        /// the burst plus the intervals elapsed: `burst + (b - a) / e`.
        #[test]
        fn never_more_than_the_policy_allows(
            l in any_limit(),
            steps in proptest::collection::vec((0u64..3000, 1u32..=3), 1..300),
        ) {
            let e = l.emission_ns();
            let mut now = T0;
            let mut tat = None;
            // (time, cost) of every admitted request.
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap, cost) in steps {
                // Gaps in thousandths of an interval, so every scale of
                // rate sees arrivals both faster and slower than it.
                now += (u128::from(e) * u128::from(gap) / 1000) as u64;
                match decide(&l, tat, now, cost) {
                    Decision::Admit { tat: t, remaining, reset_ns } => {
                        prop_assert!(t > now && reset_ns == t - now);
                        prop_assert!(remaining < l.burst);
                        tat = Some(t);
                        admitted.push((now, u64::from(cost)));
                    }
                    Decision::Refuse { retry_after_ns, .. } => {
                        prop_assert!(retry_after_ns > 0);
                        // Waiting that long admits it (the counter is
                        // untouched by the refusal), unless it asks for
                        // more than the whole burst.
                        let later = decide(&l, tat, now + retry_after_ns, cost);
                        prop_assert_eq!(
                            matches!(later, Decision::Admit { .. }),
                            cost <= l.burst,
                            "{:?}", later
                        );
                    }
                }
            }
            for (i, &(from, _)) in admitted.iter().enumerate() {
                let mut sum = 0;
                for &(to, cost) in &admitted[i..] {
                    sum += cost;
                    let allowed = u64::from(l.burst) + (to - from) / e;
                    prop_assert!(sum <= allowed, "{} admitted in {} ns, allowed {}", sum, to - from, allowed);
                }
            }
        }

        /// Requests at exactly the policy's rate — the i-th at
        /// `i × period / count`, to the nanosecond — are all admitted, with
        /// any burst, from idle or after a full burst was spent.
        #[test]
        fn a_steady_stream_at_the_rate_is_all_admitted(
            l in any_limit(),
            n in 1u64..2000,
            spent in any::<bool>(),
        ) {
            let period_ns = l.period_ms * MS;
            let mut tat = None;
            if spent {
                tat = drain(&l, None, T0).1;
            }
            // After a spent burst, the stream starts one interval later.
            let start = if spent { T0 + l.emission_ns() } else { T0 };
            for i in 0..n {
                let at = start
                    + (u128::from(i) * u128::from(period_ns) / u128::from(l.count)) as u64;
                match decide(&l, tat, at, 1) {
                    Decision::Admit { tat: t, .. } => tat = Some(t),
                    d => prop_assert!(false, "request {} at +{} ns: {:?}", i, at - T0, d),
                }
            }
        }
    }
}
