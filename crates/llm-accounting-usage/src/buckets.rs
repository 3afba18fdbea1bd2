//! Counter buckets: how a limit's usage is kept as a handful of running totals instead of
//! being summed from every event of its window.
//!
//! A limit's usage is split into buckets, each `[start, end)` and named by its start:
//!
//! - fixed windows: one bucket per window ([`Window::bounds`]);
//! - [`Window::RollingMonths`]: one bucket per calendar month (the window is whole months up
//!   to now);
//! - [`Window::Rolling`]: buckets of one [`step`] (1 s, 10 s, 1 min, 10 min, 1 h or 1 day,
//!   the shortest that gives at most `max_buckets` buckets per window).
//!
//! At `now` a limit's usage is the sum of the whole buckets its window covers
//! ([`CounterPlan::buckets`]) plus, for a rolling window, the part of the bucket at its oldest
//! edge that is still inside it ([`CounterPlan::edge`]): stores that keep the events count that
//! part exactly from them; stores that do not ([`CounterPlan::conservative`]) count the
//! whole edge bucket, which can only refuse early, never let a call past the limit.

use chrono::{DateTime, Duration, Utc};

use crate::Window;

/// Rolling-window bucket lengths, in seconds, shortest first.
const STEPS: [i64; 6] = [1, 10, 60, 600, 3_600, 86_400];

/// Buckets per rolling window that stores which count the edge exactly use (see
/// [`CounterPlan::new`]).
pub const EXACT_MAX_BUCKETS: u64 = 1_500;

/// A bucket: its start (inclusive, also its name) and end (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    /// Start, inclusive.
    pub start: DateTime<Utc>,
    /// End, exclusive.
    pub end: DateTime<Utc>,
}

impl Bucket {
    /// The start in microseconds since the epoch: the bucket's name in counter tables.
    pub fn key(&self) -> i64 {
        self.start.timestamp_micros()
    }
}

/// The bucket length, in seconds, of a rolling window of `seconds` with at most
/// `max_buckets` buckets (the longest step when even that gives more).
pub fn step(seconds: u64, max_buckets: u64) -> i64 {
    let len = i64::try_from(seconds).unwrap_or(i64::MAX / 2);
    let max = i64::try_from(max_buckets.max(1)).unwrap_or(i64::MAX);
    STEPS
        .into_iter()
        .find(|s| (len + s - 1) / s <= max)
        .unwrap_or(STEPS[STEPS.len() - 1])
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The bucket of `window` that holds time `t` (with at most `max_buckets` per rolling
/// window): where an event at `t` is counted.
pub fn bucket_of(window: Window, t: DateTime<Utc>, max_buckets: u64) -> Bucket {
    match window {
        Window::Fixed { .. } => {
            let (start, end) = window.bounds(t);
            Bucket { start, end }
        }
        Window::RollingMonths { .. } => {
            let (start, end) = Window::Fixed {
                unit: crate::WindowUnit::Month,
                every: 1,
            }
            .bounds(t);
            Bucket { start, end }
        }
        Window::Rolling { seconds } => {
            let g = step(seconds, max_buckets) * 1_000_000;
            let start = micros(t).div_euclid(g) * g;
            Bucket {
                start: from_micros(start),
                end: from_micros(start.saturating_add(g)),
            }
        }
    }
}

/// What to read at one moment to know a limit's usage: whole buckets, and for rolling
/// windows the part of a bucket at the window's oldest edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterPlan {
    /// The whole buckets the window covers, oldest first.
    pub buckets: Vec<Bucket>,
    /// `[since, until)`: the part of the oldest bucket still inside a rolling window, to be
    /// counted from the events themselves; `None` when the window starts on a bucket's start.
    pub edge: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl CounterPlan {
    /// The plan for `window` at `now`, with at most `max_buckets` buckets per rolling window
    /// (use [`EXACT_MAX_BUCKETS`] with [`CounterPlan::edge`] counted from events).
    pub fn new(window: Window, now: DateTime<Utc>, max_buckets: u64) -> Self {
        match window {
            Window::Fixed { .. } => CounterPlan {
                buckets: vec![bucket_of(window, now, max_buckets)],
                edge: None,
            },
            Window::RollingMonths { .. } => {
                let (since, _) = window.bounds(now);
                let mut buckets = Vec::new();
                let mut t = since;
                while t <= now {
                    let b = bucket_of(window, t, max_buckets);
                    buckets.push(b);
                    t = b.end;
                }
                CounterPlan {
                    buckets,
                    edge: None,
                }
            }
            Window::Rolling { seconds } => {
                let g = step(seconds, max_buckets) * 1_000_000;
                let (since, _) = window.bounds(now);
                let first_whole = micros(since).div_euclid(g) * g;
                let first_whole = if first_whole < micros(since) {
                    first_whole.saturating_add(g)
                } else {
                    first_whole
                };
                let last = micros(now).div_euclid(g) * g;
                let buckets = (0..)
                    .map(|i: i64| first_whole.saturating_add(i.saturating_mul(g)))
                    .take_while(|s| *s <= last)
                    .map(|s| Bucket {
                        start: from_micros(s),
                        end: from_micros(s.saturating_add(g)),
                    })
                    .collect();
                let edge = (micros(since) < first_whole).then(|| (since, from_micros(first_whole)));
                CounterPlan { buckets, edge }
            }
        }
    }

    /// The plan for stores that cannot count an edge exactly: the edge's whole bucket is
    /// counted too (which may count usage a little older than the window, never less).
    pub fn conservative(window: Window, now: DateTime<Utc>, max_buckets: u64) -> Self {
        let mut plan = CounterPlan::new(window, now, max_buckets);
        if let Some((since, _)) = plan.edge.take() {
            plan.buckets
                .insert(0, bucket_of(window, since, max_buckets));
        }
        plan
    }
}

/// How long a bucket of `window` has to be kept after it ends to still be read by a plan.
pub fn keep_for(window: Window) -> Duration {
    match window {
        Window::Fixed { .. } => Duration::zero(),
        Window::Rolling { seconds } => {
            Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2)) + Duration::days(1)
        }
        Window::RollingMonths { months } => Duration::days(31 * (i64::from(months) + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WindowUnit;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect(s)
            .with_timezone(&Utc)
    }

    #[test]
    fn rolling_steps_keep_the_bucket_count_bounded() {
        assert_eq!(step(3_600, EXACT_MAX_BUCKETS), 10);
        assert_eq!(step(86_400, EXACT_MAX_BUCKETS), 60);
        assert_eq!(step(7 * 86_400, EXACT_MAX_BUCKETS), 600);
        assert_eq!(step(30 * 86_400, EXACT_MAX_BUCKETS), 3_600);
        assert_eq!(step(45, EXACT_MAX_BUCKETS), 1);
        assert_eq!(step(100 * 366 * 86_400, EXACT_MAX_BUCKETS), 86_400);
    }

    #[test]
    fn a_fixed_window_is_one_bucket() {
        let w = Window::fixed(WindowUnit::Day, 1).expect("ok");
        let now = t("2026-03-15T13:47:29Z");
        let plan = CounterPlan::new(w, now, EXACT_MAX_BUCKETS);
        assert_eq!(plan.edge, None);
        assert_eq!(plan.buckets.len(), 1);
        assert_eq!(plan.buckets[0].start, t("2026-03-15T00:00:00Z"));
        assert_eq!(bucket_of(w, now, EXACT_MAX_BUCKETS), plan.buckets[0]);
    }

    #[test]
    fn a_rolling_window_is_whole_buckets_and_an_exact_edge() {
        let w = Window::rolling(86_400).expect("ok");
        let now = t("2026-03-15T13:47:29Z");
        let plan = CounterPlan::new(w, now, EXACT_MAX_BUCKETS);
        let (since, until) = plan.edge.expect("an edge");
        assert_eq!(since, t("2026-03-14T13:47:29Z"));
        assert_eq!(until, t("2026-03-14T13:48:00Z"));
        assert_eq!(plan.buckets[0].start, until);
        let last = plan.buckets.last().expect("buckets");
        assert!(last.start <= now && now < last.end);
        assert_eq!(plan.buckets.len(), 1_440);
        // Every instant of the window is in exactly one part.
        for b in plan.buckets.windows(2) {
            assert_eq!(b[0].end, b[1].start);
        }
        let c = CounterPlan::conservative(w, now, EXACT_MAX_BUCKETS);
        assert_eq!(c.edge, None);
        assert_eq!(c.buckets.len(), 1_441);
        assert_eq!(c.buckets[0].start, t("2026-03-14T13:47:00Z"));
        // On a bucket boundary there is no edge.
        let plan = CounterPlan::new(w, t("2026-03-15T13:47:00Z"), EXACT_MAX_BUCKETS);
        assert_eq!(plan.edge, None);
    }

    #[test]
    fn rolling_months_are_calendar_months_up_to_now() {
        let w = Window::rolling_months(1).expect("ok");
        let plan = CounterPlan::new(w, t("2026-11-30T10:00:00Z"), EXACT_MAX_BUCKETS);
        let starts: Vec<_> = plan.buckets.iter().map(|b| b.start).collect();
        assert_eq!(
            starts,
            vec![t("2026-10-01T00:00:00Z"), t("2026-11-01T00:00:00Z")]
        );
        assert_eq!(
            bucket_of(w, t("2026-10-31T23:59:59Z"), EXACT_MAX_BUCKETS).start,
            t("2026-10-01T00:00:00Z")
        );
    }
}
