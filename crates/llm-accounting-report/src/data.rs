//! What a report shows, gathered from the stores: a handful of queries whatever the number of
//! events (the series and totals read the usage rollups).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use llm_accounting_core::audit::AuditFilter;
use llm_accounting_core::{Error, Result, SecureKeyManager};
use llm_accounting_usage::{
    GroupBy, Limit, LimitKind, Money, Period, SeriesQuery, SeriesRow, StatsQuery, StatsRow,
    UsageStore, resets_at, series,
};
use serde::Serialize;

/// Groups a chart stacks before the rest is summed as `(other)`.
pub const STACKS: usize = 8;

/// Rows of each "top" table.
pub const TOP: usize = 10;

/// What to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// Start (inclusive).
    pub since: DateTime<Utc>,
    /// End (exclusive).
    pub until: DateTime<Utc>,
    /// What the daily charts are stacked by ([`GroupBy::Nothing`]: one stack).
    pub by: GroupBy,
    /// The time the limits' current windows are taken at.
    pub now: DateTime<Utc>,
}

impl ReportQuery {
    /// Checks the range: `since` before `until`, at most [`series::MAX_PERIODS`] days.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] otherwise.
    pub fn validate(&self) -> Result<()> {
        self.day_starts().map(|_| ())
    }

    /// The start of every day of the range, once the range is checked ([`Self::validate`]).
    fn day_starts(&self) -> Result<Vec<DateTime<Utc>>> {
        if self.since >= self.until {
            return Err(Error::invalid(
                "--since",
                "the start of the report must be before its end (--until)",
            ));
        }
        Ok(self.days().spans()?.iter().map(|s| s.start).collect())
    }

    fn days(&self) -> SeriesQuery {
        SeriesQuery {
            since: self.since,
            until: self.until,
            period: Period::Day,
            by: self.by,
        }
    }
}

/// One day's requests and quota denials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayActivity {
    /// The day (its start, UTC).
    pub day: DateTime<Utc>,
    /// Calls recorded.
    pub requests: u64,
    /// Calls refused by a quota (audited refused gets).
    pub denials: u64,
}

/// A limit and where its current window stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitStatus {
    /// The limit's id.
    pub id: i64,
    /// What it counts and where, as `limits list` says it.
    pub description: String,
    /// Its scope (`user=alice`, `global`, ...).
    pub scope: String,
    /// Its window (`1 day`, `rolling 1h`, ...).
    pub window: String,
    /// Used in the current window, in the limit's unit (micro-dollars for cost).
    pub used: u64,
    /// Its maximum, in the same unit.
    pub max: u64,
    /// Whether it exempts rather than limits.
    pub unlimited: bool,
    /// `used` as shown (`$1.25`, `1200`).
    pub used_text: String,
    /// `max` as shown.
    pub max_text: String,
    /// When the current window's usage starts to free up (fixed windows: when it resets).
    pub resets_at: DateTime<Utc>,
}

/// Everything a report shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Start (inclusive).
    pub since: DateTime<Utc>,
    /// End (exclusive).
    pub until: DateTime<Utc>,
    /// When it was gathered.
    pub generated_at: DateTime<Utc>,
    /// What the daily charts are stacked by (`model`, ..., or `nothing`).
    pub by: &'static str,
    /// Totals over the range, as `usage stats` gives them.
    #[serde(serialize_with = "json::row")]
    pub totals: StatsRow,
    /// Every day of the range, in order.
    pub days: Vec<DateTime<Utc>>,
    /// Per day and `by` group (the [`STACKS`] largest groups, the rest as `(other)`).
    #[serde(serialize_with = "json::points")]
    pub series: Vec<SeriesRow>,
    /// The users with the highest spend.
    #[serde(serialize_with = "json::rows")]
    pub top_users: Vec<StatsRow>,
    /// The projects with the highest spend.
    #[serde(serialize_with = "json::rows")]
    pub top_projects: Vec<StatsRow>,
    /// The key versions with the highest spend.
    #[serde(serialize_with = "json::rows")]
    pub top_keys: Vec<StatsRow>,
    /// Requests and denials per day.
    pub activity: Vec<DayActivity>,
    /// Whether denials could be read (they are the key store's audit trail's refused gets;
    /// `false` without one).
    pub denials_recorded: bool,
    /// Every limit.
    pub limits: Vec<LimitStatus>,
}

impl Report {
    /// Whether the range holds no usage at all.
    pub fn is_empty(&self) -> bool {
        self.totals.requests == 0
    }
}

/// Gathers a report: the daily series (one query on stores with rollups), the totals, three
/// top tables, the limits' current windows, and the denials from `keys`' audit trail when
/// given (one read of the range's `get` rows).
///
/// # Errors
///
/// [`ReportQuery::validate`]'s, and the stores'.
pub async fn gather(
    usage: &dyn UsageStore,
    keys: Option<&SecureKeyManager>,
    q: &ReportQuery,
) -> Result<Report> {
    let days = q.day_starts()?;
    let points = series::keep_top(usage.series(&q.days()).await?, STACKS);
    let stats = |by, top| StatsQuery {
        since: Some(q.since),
        until: Some(q.until),
        by,
        top,
    };
    let totals = usage
        .stats(&stats(GroupBy::Nothing, None))
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| zero(None));
    let top = |by| stats(by, Some(TOP));
    let top_users = usage.stats(&top(GroupBy::User)).await?;
    let top_projects = usage.stats(&top(GroupBy::Project)).await?;
    let top_keys = usage.stats(&top(GroupBy::Key)).await?;

    let mut requests: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    for p in &points {
        *requests.entry(p.start).or_default() += p.totals.requests;
    }
    let mut denials: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    let denials_recorded = match keys {
        Some(manager) => {
            let filter = AuditFilter {
                operation: Some("get".to_owned()),
                since: Some(q.since),
                ..AuditFilter::default()
            };
            for r in manager.audit_records(&filter).await? {
                if r.event.outcome == "quota_exceeded" && r.event.at < q.until {
                    *denials.entry(Period::Day.start_of(r.event.at)).or_default() += r.event.count;
                }
            }
            true
        }
        None => false,
    };
    let activity = days
        .iter()
        .map(|d| DayActivity {
            day: *d,
            requests: requests.get(d).copied().unwrap_or(0),
            denials: denials.get(d).copied().unwrap_or(0),
        })
        .collect();

    let mut limits = Vec::new();
    for limit in usage.limits().await? {
        limits.push(limit_status(usage, &limit, q.now).await?);
    }
    Ok(Report {
        since: q.since,
        until: q.until,
        generated_at: q.now,
        by: q.by.as_str(),
        totals,
        days,
        series: points,
        top_users,
        top_projects,
        top_keys,
        activity,
        denials_recorded,
        limits,
    })
}

/// Where `limit`'s current window stands at `now`.
async fn limit_status(
    usage: &dyn UsageStore,
    limit: &Limit,
    now: DateTime<Utc>,
) -> Result<LimitStatus> {
    let (start, end) = limit.window.bounds(now);
    let counted = usage.usage(&limit.scope, start, end, now).await?;
    let used = limit.kind.of(&counted.amounts);
    let show = |n: u64| match limit.kind {
        LimitKind::Cost => format!("${}", Money::from_micros(n)),
        _ => n.to_string(),
    };
    Ok(LimitStatus {
        id: limit.id,
        description: limit.to_string(),
        scope: limit.scope.to_string(),
        window: limit.window.to_string(),
        used,
        max: limit.max,
        unlimited: limit.is_unlimited(),
        used_text: show(used),
        max_text: if limit.is_unlimited() {
            "unlimited".to_owned()
        } else {
            show(limit.max)
        },
        resets_at: resets_at(limit.window, counted.oldest, now),
    })
}

/// Totals of nothing.
fn zero(group: Option<String>) -> StatsRow {
    StatsRow {
        group,
        requests: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        reasoning_tokens: 0,
        cost: Money::ZERO,
    }
}

/// One row of totals in JSON, as `usage stats --format json` and the report's data write
/// it: money as an exact decimal string and in micro-dollars.
#[derive(Debug, Serialize)]
pub struct RowJson<'a> {
    /// The group (`None`: no value, or the totals of everything).
    pub group: Option<&'a str>,
    /// Calls.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached tokens.
    pub cached_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Exact decimal dollars.
    pub cost: String,
    /// The same in micro-dollars.
    pub cost_micros: u64,
}

impl<'a> RowJson<'a> {
    /// The JSON of `r`.
    pub fn of(r: &'a StatsRow) -> Self {
        RowJson {
            group: r.group.as_deref(),
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: r.cached_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost: r.cost.to_string(),
            cost_micros: r.cost.micros(),
        }
    }
}

/// Serialisers of the report's rows as [`RowJson`].
mod json {
    use llm_accounting_usage::{SeriesRow, StatsRow};
    use serde::Serialize;
    use serde::ser::{SerializeSeq, Serializer};

    use super::RowJson;

    /// A point: its period's start, then the row.
    #[derive(Serialize)]
    struct Point<'a> {
        start: String,
        #[serde(flatten)]
        row: RowJson<'a>,
    }

    pub(super) fn row<S: Serializer>(r: &StatsRow, s: S) -> Result<S::Ok, S::Error> {
        RowJson::of(r).serialize(s)
    }

    pub(super) fn rows<S: Serializer>(rows: &[StatsRow], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(rows.len()))?;
        for r in rows {
            seq.serialize_element(&RowJson::of(r))?;
        }
        seq.end()
    }

    pub(super) fn points<S: Serializer>(points: &[SeriesRow], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(points.len()))?;
        for p in points {
            seq.serialize_element(&Point {
                start: p.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                row: RowJson::of(&p.totals),
            })?;
        }
        seq.end()
    }
}
