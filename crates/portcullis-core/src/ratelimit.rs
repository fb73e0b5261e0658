//! Rate-limit policies and the GCRA decision, with no I/O: callers keep
//! one number per counter (the theoretical arrival time, TAT) wherever
//! they like (memory, Redis) and ask [`decide`] what to do with a request.
//!
//! GCRA spreads a limit of `count` per `period` as one request every
//! `period / count`, with a burst allowance: no double burst at a window
//! edge, and a refused request changes nothing, so it never eats into the
//! caller's allowance.

use std::fmt;

/// One limit: `count` requests per `period_ms`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests per period.
    pub count: u32,
    /// The period, in milliseconds.
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
    /// Milliseconds between two requests at the steady rate.
    pub fn emission_ms(&self) -> u64 {
        (self.period_ms / u64::from(self.count.max(1))).max(1)
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
    // Counters keep time in whole milliseconds (in memory and in Redis),
    // so the steady rate can be at most one request per millisecond. A
    // faster limit would silently become 1000/second after its burst:
    // refuse it instead.
    if period_ms < u64::from(count) {
        return Err(PolicyError(format!(
            "{item:?}: at most 1000 per second can be counted (one per millisecond); for more, write e.g. \"1000/second burst 100000\""
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
        /// The new TAT.
        tat: u64,
        /// Requests left right now.
        remaining: u32,
        /// Milliseconds until the allowance is whole again.
        reset_ms: u64,
    },
    /// Refuse; store nothing.
    Refuse {
        /// Milliseconds until one request would be admitted.
        retry_after_ms: u64,
        /// Milliseconds until the allowance is whole again.
        reset_ms: u64,
    },
}

/// GCRA: a request of `cost` at `now_ms` against `limit`, with the
/// counter's stored TAT (`None` when it has none, or it expired).
pub fn decide(limit: &Limit, tat: Option<u64>, now_ms: u64, cost: u32) -> Decision {
    let t = limit.emission_ms();
    let window = t.saturating_mul(u64::from(limit.burst));
    let tat = tat.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat.saturating_add(t.saturating_mul(u64::from(cost.max(1))));
    let allow_at = new_tat.saturating_sub(window);
    if now_ms < allow_at {
        return Decision::Refuse {
            retry_after_ms: allow_at - now_ms,
            reset_ms: tat - now_ms,
        };
    }
    // Saturating: a slow limit with a huge burst (`1/60 days burst
    // 4294967295`) has a window near u64::MAX (found by fuzzing).
    let room = now_ms.saturating_add(window).saturating_sub(new_tat) / t;
    Decision::Admit {
        tat: new_tat,
        remaining: u32::try_from(room).unwrap_or(u32::MAX),
        reset_ms: new_tat - now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_near_u64_max_does_not_overflow() {
        // Found by the `ratelimit_policy` fuzz target.
        let p = Policy::parse("1/60 days burst 4294967295").unwrap();
        let l = &p.limits()[0];
        for now in [0u64, 1_700_000_000_000, 4_102_444_800_000] {
            assert!(matches!(decide(l, None, now, 1), Decision::Admit { .. }));
        }
    }

    #[test]
    fn parses_slowapi_syntax() {
        let p = Policy::parse("10/second; 1000/hour").unwrap();
        assert_eq!(
            p.0,
            vec![
                Limit {
                    count: 10,
                    period_ms: 1000,
                    burst: 10
                },
                Limit {
                    count: 1000,
                    period_ms: 3_600_000,
                    burst: 1000
                }
            ]
        );
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
    fn limits_faster_than_one_per_millisecond_are_refused() {
        assert!(Policy::parse("1000/second").is_ok());
        assert!(Policy::parse("60000/minute").is_ok());
        let e = Policy::parse("1001/second").unwrap_err().to_string();
        assert!(e.contains("at most 1000 per second"), "{e}");
        assert!(Policy::parse("1000000/second").is_err());
        assert!(Policy::parse("1000/second burst 1000000").is_ok());
    }

    #[test]
    fn gcra_admits_exactly_the_burst_and_refusals_cost_nothing() {
        let l = Limit {
            count: 5,
            period_ms: 1000,
            burst: 5,
        };
        let mut tat = None;
        for i in 0..5 {
            match decide(&l, tat, 10_000, 1) {
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
            match decide(&l, tat, 10_000, 1) {
                Decision::Refuse { retry_after_ms, .. } => assert_eq!(retry_after_ms, 200),
                d => panic!("{d:?}"),
            }
        }
        // One emission interval later, exactly one more.
        assert!(matches!(decide(&l, tat, 10_200, 1), Decision::Admit { .. }));
        // Idle for a whole period: the full burst again, not two.
        let mut tat2 = tat;
        let mut n = 0;
        while let Decision::Admit { tat: t, .. } = decide(&l, tat2, 20_000, 1) {
            tat2 = Some(t);
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn smaller_burst_spreads_requests() {
        let l = Limit {
            count: 60,
            period_ms: 60_000,
            burst: 2,
        };
        let a = decide(&l, None, 0, 1);
        let Decision::Admit { tat, .. } = a else {
            panic!()
        };
        let Decision::Admit { tat, .. } = decide(&l, Some(tat), 0, 1) else {
            panic!()
        };
        assert!(matches!(
            decide(&l, Some(tat), 0, 1),
            Decision::Refuse {
                retry_after_ms: 1000,
                ..
            }
        ));
        assert!(matches!(
            decide(&l, Some(tat), 1000, 1),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn cost_counts_as_several_requests() {
        let l = Limit {
            count: 10,
            period_ms: 1000,
            burst: 10,
        };
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
    }
}
