//! Time series of usage: totals per period (hour, day, week, month, year, in UTC) and group,
//! what `usage stats --period`, its chart and the usage report draw.
//!
//! [`UsageStore::series`] answers a [`SeriesQuery`]; its default sums each period with
//! [`UsageStore::stats`] ([`summed_per_period`]), and stores that keep rollups read them
//! instead.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeZone, Timelike, Utc};
use llm_accounting_core::{Error, Result};
use serde::Serialize;

use crate::{GroupBy, StatsQuery, StatsRow, UsageStore};

/// The most periods one series may have (a year by hour is 8,784): beyond, the query is
/// refused rather than answered slowly with more points than anything draws.
pub const MAX_PERIODS: usize = 10_000;

/// The length of one point of a series, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// An hour.
    Hour,
    /// A calendar day.
    Day,
    /// A calendar week, from Monday.
    Week,
    /// A calendar month.
    Month,
    /// A calendar year.
    Year,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 5] = [
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
    ];

    /// Its name: `hour`, `day`, `week`, `month`, `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// The start of the period holding `t`.
    pub fn start_of(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.date_naive();
        let midnight = |d: NaiveDate| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
        match self {
            Period::Hour => midnight(day) + Duration::hours(i64::from(t.hour())),
            Period::Day => midnight(day),
            Period::Week => {
                midnight(day) - Duration::days(i64::from(day.weekday().num_days_from_monday()))
            }
            Period::Month => midnight(day.with_day(1).unwrap_or(day)),
            Period::Year => midnight(NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day)),
        }
    }

    /// The start of the period after the one starting at `start` (a period's start, as
    /// [`Period::start_of`] gives).
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Period::Hour => start + Duration::hours(1),
            Period::Day => start + Duration::days(1),
            Period::Week => start + Duration::weeks(1),
            Period::Month => start
                .checked_add_months(Months::new(1))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            Period::Year => start
                .checked_add_months(Months::new(12))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// How far back a series of this period reaches when no start is given: a day of hours,
    /// 30 days, 12 weeks, 12 months, 5 years.
    pub fn default_span(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let months = |n: u32| {
            now.checked_sub_months(Months::new(n))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        let back = match self {
            Period::Hour => now - Duration::hours(23),
            Period::Day => now - Duration::days(29),
            Period::Week => now - Duration::weeks(11),
            Period::Month => months(11),
            Period::Year => months(48),
        };
        self.start_of(back)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Period::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "period",
                    format!("{s:?} is not one of hour, day, week, month, year"),
                )
            })
    }
}

/// What a series sums: the events with `since <= at < until`, per [`Period`] and group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Start (inclusive). The first point is the period holding it, counted from `since`.
    pub since: DateTime<Utc>,
    /// End (exclusive).
    pub until: DateTime<Utc>,
    /// The length of a point.
    pub period: Period,
    /// Grouping within each point.
    pub by: GroupBy,
}

impl SeriesQuery {
    /// The points' spans in order: each period's `[start, next)` cut to `[since, until)`,
    /// named by the period's start.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `since` is not before `until`, or the range has more
    /// than [`MAX_PERIODS`] periods.
    pub fn spans(&self) -> Result<Vec<Span>> {
        if self.since >= self.until {
            return Err(Error::invalid(
                "since",
                "the start of the series must be before its end",
            ));
        }
        let mut out = Vec::new();
        let mut start = self.period.start_of(self.since);
        while start < self.until {
            if out.len() == MAX_PERIODS {
                return Err(Error::invalid(
                    "period",
                    format!(
                        "more than {MAX_PERIODS} {}s between the start and the end: choose a \
                         longer period or a shorter range",
                        self.period
                    ),
                ));
            }
            let next = self.period.next(start);
            out.push(Span {
                start,
                from: start.max(self.since),
                to: next.min(self.until),
            });
            start = next;
        }
        Ok(out)
    }
}

/// One point's span: the period starting at `start`, counted over `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The period's start (the point's name).
    pub start: DateTime<Utc>,
    /// The first instant counted (the period's start, or the series' start).
    pub from: DateTime<Utc>,
    /// The end, exclusive (the next period's start, or the series' end).
    pub to: DateTime<Utc>,
}

/// One point of a series: a period's totals for one group (or for everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesRow {
    /// The period's start.
    pub start: DateTime<Utc>,
    /// The totals, as [`StatsRow`] has them (`group` as `usage stats --by` names it).
    pub totals: StatsRow,
}

/// A series summed one period at a time with [`UsageStore::stats`] (the default of
/// [`UsageStore::series`], for stores without rollups).
///
/// # Errors
///
/// As [`SeriesQuery::spans`] and [`UsageStore::stats`].
pub async fn summed_per_period<S: UsageStore + ?Sized>(
    store: &S,
    query: &SeriesQuery,
) -> Result<Vec<SeriesRow>> {
    let mut points = BTreeMap::new();
    for span in query.spans()? {
        let q = StatsQuery {
            since: Some(span.from),
            until: Some(span.to),
            by: query.by,
            top: None,
        };
        for row in store.stats(&q).await? {
            accumulate(&mut points, span.start, row);
        }
    }
    Ok(finish(points))
}

/// Adds `row` to the point of `start` and the same group in `points`.
pub fn accumulate(
    points: &mut BTreeMap<(DateTime<Utc>, Option<String>), StatsRow>,
    start: DateTime<Utc>,
    row: StatsRow,
) {
    match points.get_mut(&(start, row.group.clone())) {
        None => {
            points.insert((start, row.group.clone()), row);
        }
        Some(m) => {
            m.add(&row);
        }
    }
}

/// The points in order: by period, then by cost (highest first), requests, group; rows with
/// no request dropped (a period without events has no point).
pub fn finish(points: BTreeMap<(DateTime<Utc>, Option<String>), StatsRow>) -> Vec<SeriesRow> {
    let mut out: Vec<SeriesRow> = points
        .into_iter()
        .filter(|(_, r)| r.requests > 0)
        .map(|((start, _), totals)| SeriesRow { start, totals })
        .collect();
    out.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.totals.cost.cmp(&a.totals.cost))
            .then(b.totals.requests.cmp(&a.totals.requests))
            .then(a.totals.group.cmp(&b.totals.group))
    });
    out
}

/// A series arranged for a stacked chart (the terminal's `--chart`, the report's SVG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stacks {
    /// The groups, the largest total of the measure first: the order stacks are drawn and
    /// named in.
    pub groups: Vec<Option<String>>,
    /// Per period that has points, each group's amount, in the order of `groups`.
    pub periods: BTreeMap<DateTime<Utc>, Vec<u64>>,
}

/// Arranges `points` for a stacked chart of `measure` (cost in micro-dollars, requests, ...).
pub fn stacks(points: &[SeriesRow], measure: impl Fn(&StatsRow) -> u64) -> Stacks {
    let mut totals: BTreeMap<Option<&str>, u64> = BTreeMap::new();
    for p in points {
        *totals.entry(p.totals.group.as_deref()).or_default() += measure(&p.totals);
    }
    let mut ranked: Vec<(Option<&str>, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let index: BTreeMap<Option<&str>, usize> = ranked
        .iter()
        .enumerate()
        .map(|(i, (g, _))| (*g, i))
        .collect();
    let mut periods: BTreeMap<DateTime<Utc>, Vec<u64>> = BTreeMap::new();
    for p in points {
        periods
            .entry(p.start)
            .or_insert_with(|| vec![0; ranked.len()])[index[&p.totals.group.as_deref()]] +=
            measure(&p.totals);
    }
    Stacks {
        groups: ranked
            .into_iter()
            .map(|(g, _)| g.map(str::to_owned))
            .collect(),
        periods,
    }
}

/// The group [`keep_top`] sums the rest into.
pub const OTHER: &str = "(other)";

/// Keeps the `n` groups with the highest cost over the whole series (then most requests, then
/// name) and sums every other group of a period into one [`OTHER`] point, so that a chart's
/// stacks name the same few groups in every period.
pub fn keep_top(rows: Vec<SeriesRow>, n: usize) -> Vec<SeriesRow> {
    let mut totals: BTreeMap<Option<String>, (crate::Money, u64)> = BTreeMap::new();
    for r in &rows {
        let t = totals.entry(r.totals.group.clone()).or_default();
        t.0 = t.0.saturating_add(r.totals.cost);
        t.1 = t.1.saturating_add(r.totals.requests);
    }
    if totals.len() <= n {
        return rows;
    }
    let mut ranked: Vec<(Option<String>, (crate::Money, u64))> = totals.into_iter().collect();
    ranked.sort_by(|a, b| {
        b.1.0
            .cmp(&a.1.0)
            .then(b.1.1.cmp(&a.1.1))
            .then(a.0.cmp(&b.0))
    });
    let kept: std::collections::BTreeSet<Option<String>> =
        ranked.into_iter().take(n).map(|(g, _)| g).collect();
    let mut points = BTreeMap::new();
    for r in rows {
        let mut totals = r.totals;
        if !kept.contains(&totals.group) {
            totals.group = Some(OTHER.to_owned());
        }
        accumulate(&mut points, r.start, totals);
    }
    finish(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn periods_start_in_utc_and_follow_the_calendar() {
        let at = t("2026-03-18T13:45:10Z"); // a Wednesday
        assert_eq!(Period::Hour.start_of(at), t("2026-03-18T13:00:00Z"));
        assert_eq!(Period::Day.start_of(at), t("2026-03-18T00:00:00Z"));
        assert_eq!(Period::Week.start_of(at), t("2026-03-16T00:00:00Z"));
        assert_eq!(Period::Month.start_of(at), t("2026-03-01T00:00:00Z"));
        assert_eq!(Period::Year.start_of(at), t("2026-01-01T00:00:00Z"));
        assert_eq!(
            Period::Month.next(t("2026-01-01T00:00:00Z")),
            t("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            Period::Month.next(t("2024-02-01T00:00:00Z")),
            t("2024-03-01T00:00:00Z")
        );
        assert_eq!(
            Period::Year.next(t("2024-01-01T00:00:00Z")),
            t("2025-01-01T00:00:00Z")
        );
        for p in Period::ALL {
            assert_eq!(p.as_str().parse::<Period>().expect("parse"), p);
            assert_eq!(p.start_of(p.start_of(at)), p.start_of(at));
        }
        assert!("fortnight".parse::<Period>().is_err());
    }

    #[test]
    fn spans_cut_the_first_and_last_period() {
        let q = SeriesQuery {
            since: t("2026-03-18T13:45:00Z"),
            until: t("2026-03-20T06:00:00Z"),
            period: Period::Day,
            by: GroupBy::Nothing,
        };
        let spans = q.spans().expect("spans");
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].start, t("2026-03-18T00:00:00Z"));
        assert_eq!(spans[0].from, q.since);
        assert_eq!(spans[0].to, t("2026-03-19T00:00:00Z"));
        assert_eq!(spans[2].from, t("2026-03-20T00:00:00Z"));
        assert_eq!(spans[2].to, q.until);
        let empty = SeriesQuery {
            until: q.since,
            ..q.clone()
        };
        assert!(empty.spans().is_err());
        let long = SeriesQuery {
            since: t("2000-01-01T00:00:00Z"),
            period: Period::Hour,
            ..q
        };
        let e = long.spans().expect_err("too many");
        assert!(e.to_string().contains("10000"), "{e}");
    }

    #[test]
    fn keep_top_sums_the_rest_into_other() {
        let row = |start: &str, group: &str, micros: u64| SeriesRow {
            start: t(start),
            totals: StatsRow {
                group: Some(group.to_owned()),
                requests: 1,
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
                reasoning_tokens: 0,
                cost: crate::Money::from_micros(micros),
            },
        };
        let d1 = "2026-01-01T00:00:00Z";
        let d2 = "2026-01-02T00:00:00Z";
        let rows = vec![
            row(d1, "a", 10),
            row(d1, "b", 5),
            row(d1, "c", 4),
            row(d2, "b", 1),
            row(d2, "c", 3),
        ];
        let kept = keep_top(rows.clone(), 2);
        let got: Vec<(String, &str, u64)> = kept
            .iter()
            .map(|r| {
                (
                    r.start.date_naive().to_string(),
                    r.totals.group.as_deref().unwrap_or("-"),
                    r.totals.cost.micros(),
                )
            })
            .collect();
        // a: 10, c: 7, b: 6 over the series: b goes into (other).
        assert_eq!(
            got,
            [
                ("2026-01-01".to_owned(), "a", 10),
                ("2026-01-01".to_owned(), OTHER, 5),
                ("2026-01-01".to_owned(), "c", 4),
                ("2026-01-02".to_owned(), "c", 3),
                ("2026-01-02".to_owned(), OTHER, 1),
            ]
        );
        assert_eq!(keep_top(rows.clone(), 3), rows);
    }
}
