//! Quotas: a key's remaining uses, optionally refilled to a set amount at
//! the start of every UTC day or month (as Unkey's `refill`). Periods are
//! computed here from Unix seconds, with no clock and no time-zone data.

use crate::time::{civil_from_days, days_from_civil};

/// How often a key's uses are refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refill {
    /// At 00:00 UTC every day.
    Daily,
    /// At 00:00 UTC on the first of every month.
    Monthly,
}

impl Refill {
    /// Parses `daily` / `day` or `monthly` / `month`.
    pub fn parse(s: &str) -> Option<Refill> {
        match s {
            "daily" | "day" => Some(Refill::Daily),
            "monthly" | "month" => Some(Refill::Monthly),
            _ => None,
        }
    }

    /// The name stored and shown: `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refill::Daily => "day",
            Refill::Monthly => "month",
        }
    }

    /// The start (Unix seconds) of the period holding `now`.
    pub fn period_start(self, now: i64) -> i64 {
        let day = now.div_euclid(86_400);
        match self {
            Refill::Daily => day * 86_400,
            Refill::Monthly => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1) * 86_400
            }
        }
    }

    /// The start of the next period after the one holding `now`.
    pub fn next_start(self, now: i64) -> i64 {
        let day = now.div_euclid(86_400);
        match self {
            Refill::Daily => (day + 1) * 86_400,
            Refill::Monthly => {
                let (y, m, _) = civil_from_days(day);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * 86_400
            }
        }
    }
}

/// A key's refill: back to `amount` uses at the start of every period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefillPlan {
    /// How often.
    pub every: Refill,
    /// The uses the key has at the start of each period.
    pub amount: i64,
}

impl RefillPlan {
    /// Whether a key last refilled at `refilled_at` is due a refill at
    /// `now`.
    pub fn due(&self, refilled_at: i64, now: i64) -> bool {
        self.every.period_start(now) > refilled_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        // 2026-11-23T15:04:05Z
        let t = 1_795_446_245;
        assert_eq!(Refill::Daily.period_start(t), 1_795_392_000);
        assert_eq!(Refill::Daily.next_start(t), 1_795_478_400);
        // 2026-11-01 and 2026-12-01
        assert_eq!(Refill::Monthly.period_start(t), 1_793_491_200);
        assert_eq!(Refill::Monthly.next_start(t), 1_796_083_200);
        // December rolls into January; February of a leap year.
        let dec = 1_797_000_000; // 2026-12-11
        assert_eq!(Refill::Monthly.next_start(dec), 1_798_761_600); // 2027-01-01
        let feb = 1_709_251_199; // 2024-02-29T23:59:59Z
        assert_eq!(Refill::Monthly.next_start(feb), 1_709_251_200);
        for d in [-1000_i64, 0, 1, 59, 60, 365, 10_957, 20_000, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(Refill::parse("monthly"), Some(Refill::Monthly));
        assert_eq!(Refill::parse("weekly"), None);
    }
}
