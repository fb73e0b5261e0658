//! The change-log cursor: which rows a poll of the change log has not
//! delivered yet, and where the next poll starts.
//!
//! Rows carry sequence numbers, but a sequence number is taken when a
//! write transaction inserts its row, and the row becomes visible when the
//! transaction commits. Where writers overlap (Postgres), a transaction
//! that took seq 7 can commit after one that took seq 8: a poller that
//! keeps only the highest number seen (8) would skip 7 forever. A
//! transaction that rolls back leaves its number unused for good.
//!
//! So the cursor keeps the highest number seen and the *gaps* below it
//! (numbers not seen yet), each with the time it was first noticed. A poll
//! reads from just below the lowest gap, so a late row fills its gap; each
//! row is delivered once; a gap still open [`GAP_GRACE_SECS`] after it was
//! noticed is taken for a rolled-back number and given up.
//!
//! Why that is enough: a gap `g` is noticed by a query that returned a row
//! `s > g`; `s` was committed before that query ran, and numbers are taken
//! in increasing order over time, so `g` was taken before the gap was
//! noticed. A row commits within the grace of its number being taken, so
//! by the time a gap is given up its row, if any, had been visible to a
//! query that covered it. The property test below checks exactly that.
//!
//! With serialised writers (SQLite) rows become visible in number order,
//! no gap is ever noticed, and the cursor is the plain high mark.

use std::collections::BTreeMap;

/// How long a gap in the change log is waited for before it is taken for
/// a rolled-back sequence number, in seconds.
///
/// It must exceed the longest a write transaction can stay open between
/// taking its number and committing, or a slow commit would be skipped
/// (and a revocation never applied by this instance). The Postgres backend
/// bounds every transaction with `idle_in_transaction_session_timeout` and
/// `statement_timeout` of a few seconds; 30 s leaves a wide margin, and
/// the only cost of a long grace is that polls re-read the rows above a
/// rolled-back number for that long.
pub const GAP_GRACE_SECS: i64 = 30;

/// The most gaps remembered. Beyond it the oldest (lowest) are given up:
/// a burst of rolled-back writes must not make the poller's memory or its
/// queries grow without bound.
pub const MAX_GAPS: usize = 10_000;

/// Where a change-log poller stands. Times are in any unit the caller
/// keeps consistently (the library uses Unix seconds), and the grace is
/// in that unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCursor {
    /// Every number at or below it has been delivered, is a gap, or was
    /// given up.
    high: i64,
    /// Numbers below `high` not seen yet → when first noticed.
    gaps: BTreeMap<i64, i64>,
    grace: i64,
    max_gaps: usize,
}

impl ChangeCursor {
    /// A cursor that treats every number up to `high` as already seen,
    /// with [`GAP_GRACE_SECS`] and [`MAX_GAPS`].
    pub fn new(high: i64) -> ChangeCursor {
        ChangeCursor::with_limits(high, GAP_GRACE_SECS, MAX_GAPS)
    }

    /// [`ChangeCursor::new`] with another grace (in the caller's time
    /// unit) and gap bound.
    pub fn with_limits(high: i64, grace: i64, max_gaps: usize) -> ChangeCursor {
        ChangeCursor {
            high,
            gaps: BTreeMap::new(),
            grace,
            max_gaps: max_gaps.max(1),
        }
    }

    /// The highest number seen.
    pub fn high(&self) -> i64 {
        self.high
    }

    /// How many numbers below the high mark are still awaited.
    pub fn open_gaps(&self) -> usize {
        self.gaps.len()
    }

    /// The next poll reads rows with a number above this.
    pub fn after(&self) -> i64 {
        match self.gaps.first_key_value() {
            Some((&lowest, _)) => lowest - 1,
            None => self.high,
        }
    }

    /// Takes the numbers one query returned (a query for rows above some
    /// bound, in number order, possibly cut short by a page limit) and
    /// says, for each, whether it is new: `false` for a row already
    /// delivered.
    ///
    /// Numbers between the previous high mark and a returned one that the
    /// query did not return become gaps noticed at `now`, which must be
    /// read once the query has answered (not before it ran): a gap must
    /// never look older than the number it stands for.
    pub fn take(&mut self, seqs: &[i64], now: i64) -> Vec<bool> {
        seqs.iter().map(|&s| self.take_one(s, now)).collect()
    }

    fn take_one(&mut self, s: i64, now: i64) -> bool {
        if s <= self.high {
            return self.gaps.remove(&s).is_some();
        }
        // The numbers skipped are new gaps; only the newest `max_gaps` of
        // them can be kept, so a jump (a sequence advanced by hand, a long
        // run of rollbacks) costs no more than the bound.
        let cap = i64::try_from(self.max_gaps).unwrap_or(i64::MAX);
        let from = (self.high + 1).max(s.saturating_sub(cap));
        for g in from..s {
            self.gaps.insert(g, now);
        }
        self.high = s;
        while self.gaps.len() > self.max_gaps {
            self.gaps.pop_first();
        }
        true
    }

    /// Gives up the gaps noticed more than the grace before `now`: call it
    /// once a poll is complete (its pages read up to a short page), with
    /// the time its *first* query was issued — every gap's position was
    /// covered by a query issued at or after that.
    pub fn expire(&mut self, now: i64) {
        let grace = self.grace;
        self.gaps
            .retain(|_, noticed| now.saturating_sub(*noticed) <= grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_rows_move_the_high_mark_and_leave_no_gap() {
        let mut c = ChangeCursor::new(0);
        assert_eq!(c.take(&[1, 2, 3], 10), vec![true, true, true]);
        assert_eq!((c.high(), c.open_gaps(), c.after()), (3, 0, 3));
        // Re-read rows are not delivered twice.
        assert_eq!(c.take(&[3], 11), vec![false]);
    }

    #[test]
    fn a_late_commit_is_delivered_and_a_rollback_is_given_up_after_the_grace() {
        let mut c = ChangeCursor::with_limits(0, 30, 100);
        // 2 and 4 are taken but not visible yet.
        assert_eq!(c.take(&[1, 3, 5], 100), vec![true, true, true]);
        assert_eq!((c.after(), c.open_gaps()), (1, 2));
        // 4 commits; the poll re-reads 3 and 5 without delivering them.
        assert_eq!(c.take(&[3, 4, 5], 101), vec![false, true, false]);
        c.expire(101);
        assert_eq!((c.after(), c.open_gaps()), (1, 1));
        // 2 was rolled back: kept for the grace, then given up.
        c.expire(130);
        assert_eq!(c.after(), 1);
        c.expire(131);
        assert_eq!((c.after(), c.open_gaps()), (5, 0));
    }

    #[test]
    fn the_gap_set_is_bounded_by_giving_up_the_oldest() {
        let mut c = ChangeCursor::with_limits(0, 30, 4);
        assert_eq!(c.take(&[1_000_000], 0), vec![true]);
        assert_eq!((c.open_gaps(), c.after()), (4, 999_995));
        assert_eq!(c.take(&[1_000_003, 1_000_005], 0), vec![true, true]);
        // 999_996..=999_998 were given up to keep four.
        assert_eq!(c.open_gaps(), 4);
        assert_eq!(c.after(), 999_998);
        // A number below the kept gaps was given up: not delivered again.
        assert_eq!(c.take(&[999_996], 0), vec![false]);
    }

    /// One row of the model: its number is taken at `alloc`; it commits
    /// `delay` later, or never (rolled back).
    #[derive(Debug, Clone)]
    struct Row {
        alloc: i64,
        commit: Option<i64>,
    }

    const GRACE: i64 = 30;

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec((0i64..4, prop::option::weighted(0.85, 0..=GRACE)), 0..60).prop_map(
            |steps| {
                // Numbers are taken in increasing order over time.
                let mut t = 0;
                steps
                    .into_iter()
                    .map(|(dt, delay)| {
                        t += dt;
                        Row {
                            alloc: t,
                            commit: delay.map(|d| t + d),
                        }
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// Whatever order rows commit in (each within the grace of its
        /// number being taken), and whenever the polls run, with pages cut
        /// short at any size, every committed row is delivered exactly
        /// once and no rolled-back number is delivered.
        #[test]
        fn every_committed_row_is_delivered_exactly_once(
            rows in rows(),
            gaps in prop::collection::vec(0i64..12, 1..40),
            page in 1usize..6,
            max_gaps in 50usize..100,
        ) {
            // The premise: each row commits within the grace.
            for r in &rows {
                prop_assert!(r.commit.is_none_or(|at| at - r.alloc <= GRACE));
            }
            let mut c = ChangeCursor::with_limits(0, GRACE, max_gaps);
            let mut delivered = vec![0u32; rows.len() + 1];
            let last_commit = rows.iter().filter_map(|r| r.commit).max().unwrap_or(0);
            let mut times: Vec<i64> = gaps
                .iter()
                .scan(0i64, |t, d| {
                    *t += d;
                    Some(*t)
                })
                .collect();
            // A last poll after every commit, then one after every grace.
            let end = times.last().copied().unwrap_or(0).max(last_commit) + 1;
            times.push(end);
            times.push(end + GRACE + 1);
            for t0 in times {
                let mut from = c.after();
                let mut t = t0;
                loop {
                    // The rows a query at `t` sees: committed by then,
                    // above `from`, in number order, one page.
                    let seen: Vec<i64> = rows
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.commit.is_some_and(|at| at <= t))
                        .map(|(i, _)| i as i64 + 1)
                        .filter(|&s| s > from)
                        .take(page)
                        .collect();
                    for (s, new) in seen.iter().zip(c.take(&seen, t)) {
                        if new {
                            delivered[*s as usize] += 1;
                        }
                    }
                    if seen.len() < page {
                        break;
                    }
                    from = *seen.last().unwrap_or(&from);
                    // Later pages of one poll may run a little later.
                    t += 1;
                }
                c.expire(t0);
            }
            for (i, r) in rows.iter().enumerate() {
                let want = u32::from(r.commit.is_some());
                prop_assert_eq!(delivered[i + 1], want, "row {} ({:?})", i + 1, r);
            }
        }
    }
}
