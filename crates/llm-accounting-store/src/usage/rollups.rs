//! Rollups (`usage_rollups`) of this project's `usage_events`: per hour and per day (UTC),
//! and per everything statistics group by, kept in the transaction that writes the events,
//! so that a month's statistics read a few rows per day and group instead of every event.
//!
//! - [`add`]: upserts the sums of written events (one row per span, start and group, named
//!   by a 128-bit hash of the group's values, so that the key fits every database's index
//!   limit).
//! - [`stats`]: whole days from the daily rows, whole hours around them from the hourly
//!   rows, the parts of hours at either end of the period exactly from the events.
//! - [`series`]: the same per hour or day (weeks, months and years are whole days).
//! - [`start`]: a database that had events before the rollups existed gets them built once
//!   (under a lock that keeps writers out while it runs), marked done in
//!   `usage_counter_marks`.
//! - [`purged`]: after a purge, the hour and the day it cut through are summed again.
//!
//! The Python package's `accounting_entries` have no rollups: their statistics are summed.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use llm_accounting_core::Result;
use llm_accounting_usage::series::{accumulate, finish};
use llm_accounting_usage::{
    GroupBy, Period, SeriesQuery, SeriesRow, StatsQuery, StatsRow, UsageEvent, rank,
};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbBackend, Value};

use super::columns::{Cost, Counts, OWN, i64_of, sum_int};
use super::query::{self, all, exec, mismatch, one};

/// The rollups table.
const TABLE: &str = "usage_rollups";

/// The mark saying the rollups cover every event.
const MARK: &str = "usage_rollups";

/// An hour, in microseconds.
const HOUR: i64 = 3_600_000_000;

/// A day, in microseconds.
const DAY: i64 = 24 * HOUR;

/// The spans rollups are kept for.
const SPANS: [i64; 2] = [HOUR, DAY];

/// The group columns, in the order of an event's values in [`Group`].
const GROUP_COLUMNS: [&str; 7] = [
    "model",
    "service",
    "user_id",
    "project",
    "caller",
    "key_identity",
    "key_version",
];

/// The values an event is grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Group {
    model: String,
    service: Option<String>,
    user: Option<String>,
    project: Option<String>,
    caller: Option<String>,
    key: Option<String>,
    version: Option<i32>,
}

impl Group {
    fn of(e: &UsageEvent) -> Group {
        Group {
            model: e.model.clone(),
            service: e.service.clone(),
            user: e.user.clone(),
            project: e.project.clone(),
            caller: e.caller.clone(),
            key: e.key.as_ref().map(|k| k.identity.clone()),
            version: e
                .key
                .as_ref()
                .map(|k| i32::try_from(k.version).unwrap_or(i32::MAX)),
        }
    }

    /// 128 bits of two FNV-1a hashes over the values (each with its length, so that no two
    /// groups write the same bytes), in hex.
    fn hash(&self) -> String {
        let mut bytes = Vec::new();
        let mut put = |v: Option<&str>| match v {
            None => bytes.push(0u8),
            Some(s) => {
                bytes.push(1);
                bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
        };
        put(Some(&self.model));
        put(self.service.as_deref());
        put(self.user.as_deref());
        put(self.project.as_deref());
        put(self.caller.as_deref());
        put(self.key.as_deref());
        let version = self.version.map(|v| v.to_string());
        put(version.as_deref());
        let fnv = |seed: u64| {
            bytes.iter().fold(seed, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            })
        };
        format!(
            "{:016x}{:016x}",
            fnv(0xcbf2_9ce4_8422_2325),
            fnv(0x6c62_272e_07bb_0142)
        )
    }

    fn values(&self) -> [Value; 7] {
        [
            self.model.clone().into(),
            self.service.clone().into(),
            self.user.clone().into(),
            self.project.clone().into(),
            self.caller.clone().into(),
            self.key.clone().into(),
            self.version.into(),
        ]
    }
}

/// Sums of one hour and group.
#[derive(Debug, Clone, Copy, Default)]
struct Sums([u64; 6]);

impl Sums {
    fn of(e: &UsageEvent) -> Sums {
        Sums([
            1,
            e.prompt_tokens,
            e.completion_tokens,
            e.cached_tokens,
            e.reasoning_tokens,
            e.cost.micros(),
        ])
    }

    fn plus(self, o: Sums) -> Sums {
        let mut out = self;
        for (a, b) in out.0.iter_mut().zip(o.0) {
            *a = a.saturating_add(b);
        }
        out
    }
}

/// The sum columns, in the order of [`Sums`].
const SUM_COLUMNS: [&str; 6] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
];

/// The start of the span of `span` microseconds holding `us`.
fn start_of(us: i64, span: i64) -> i64 {
    us.div_euclid(span) * span
}

/// The first span start at or after `us`.
fn ceil_of(us: i64, span: i64) -> i64 {
    let start = start_of(us, span);
    if start < us { start + span } else { start }
}

/// Adds `events` to the rollups.
pub(super) async fn add(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &[UsageEvent],
) -> Result<()> {
    let mut sums: BTreeMap<(i64, i64, Group), Sums> = BTreeMap::new();
    for e in events {
        for span in SPANS {
            let start = start_of(e.at.timestamp_micros(), span);
            let slot = sums.entry((span, start, Group::of(e))).or_default();
            *slot = slot.plus(Sums::of(e));
        }
    }
    write(db, backend, sums).await
}

/// Upserts sums by span, start and group.
async fn write(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    sums: BTreeMap<(i64, i64, Group), Sums>,
) -> Result<()> {
    let mut keyed: Vec<(i64, i64, String, Group, Sums)> = sums
        .into_iter()
        .map(|((span, start, g), s)| (span, start, g.hash(), g, s))
        .collect();
    // One order for every writer: fewer lock waits between them.
    keyed.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    for (span, start, hash, group, s) in keyed {
        upsert(db, backend, span, start, &hash, &group, s).await?;
    }
    Ok(())
}

async fn upsert(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    span: i64,
    start: i64,
    hash: &str,
    group: &Group,
    s: Sums,
) -> Result<()> {
    let mut values: Vec<Value> = vec![span.into(), start.into(), hash.to_owned().into()];
    values.extend(group.values());
    for (n, name) in s.0.iter().zip(SUM_COLUMNS) {
        values.push(i64_of(*n, name)?.into());
    }
    let mut conflict = OnConflict::columns(["span_us", "start_us", "group_hash"]);
    for (n, name) in s.0.iter().zip(SUM_COLUMNS) {
        conflict.value(name, Expr::col((TABLE, name)).add(i64_of(*n, name)?));
    }
    let mut insert = Query::insert();
    insert
        .into_table(TABLE)
        .columns(
            ["span_us", "start_us", "group_hash"]
                .into_iter()
                .chain(GROUP_COLUMNS)
                .chain(SUM_COLUMNS),
        )
        .values(values.into_iter().map(Expr::val))
        .map_err(|_| mismatch("update usage rollups"))?
        .on_conflict(conflict);
    exec(db, backend, &insert, "update usage rollups").await?;
    Ok(())
}

/// The rollup columns a statistics query groups by.
fn group_columns(by: GroupBy) -> &'static [&'static str] {
    match by {
        GroupBy::Nothing => &[],
        GroupBy::Model => &["model"],
        GroupBy::Service => &["service"],
        GroupBy::User => &["user_id"],
        GroupBy::Project => &["project"],
        GroupBy::Caller => &["caller"],
        GroupBy::Key => &["key_identity", "key_version"],
    }
}

/// Totals per group for `q`: whole days and hours from the rollups, the rest from the
/// events.
pub(super) async fn stats(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    q: &StatsQuery,
) -> Result<Vec<StatsRow>> {
    let first_whole = q.since.map(|t| ceil_of(t.timestamp_micros(), HOUR));
    let end_whole = q.until.map(|t| start_of(t.timestamp_micros(), HOUR));
    if let (Some(a), Some(b)) = (first_whole, end_whole)
        && a >= b
    {
        return query::stats(db, backend, &OWN, q).await;
    }
    // Hours [a, b), of which the whole days [da, db) come from the daily rows.
    let a = first_whole.unwrap_or(i64::MIN);
    let b = end_whole.unwrap_or(i64::MAX);
    let da = if a == i64::MIN { a } else { ceil_of(a, DAY) };
    let db_ = if b == i64::MAX { b } else { start_of(b, DAY) };
    let span = |span: i64, from: i64, to: i64| {
        Expr::col("span_us")
            .eq(span)
            .and(Expr::col("start_us").gte(from))
            .and(Expr::col("start_us").lt(to))
    };
    let within = if da < db_ {
        Condition::any()
            .add(span(DAY, da, db_))
            .add(span(HOUR, a, da))
            .add(span(HOUR, db_, b))
    } else {
        Condition::any().add(span(HOUR, a, b))
    };
    let group = group_columns(q.by);
    let mut select = Query::select();
    select.columns(group.iter().copied());
    for name in SUM_COLUMNS {
        select.expr(sum_int(backend, Expr::col(name)));
    }
    select.from(TABLE).cond_where(within);
    select.group_by_columns(group.iter().copied());
    let rows = all(db, backend, &select, "summarise usage rollups").await?;
    let mut out = query::stats_rows(&rows, q.by, Counts::Checked, Cost::Micros)?;
    let micros = |us: i64| DateTime::from_timestamp_micros(us);
    if let (Some(since), Some(a)) = (q.since, first_whole.and_then(micros))
        && since < a
    {
        let edge = StatsQuery {
            since: Some(since),
            until: Some(a),
            top: None,
            ..q.clone()
        };
        out.extend(query::stats_unranked(db, backend, &OWN, &edge).await?);
    }
    if let (Some(until), Some(b)) = (q.until, end_whole.and_then(micros))
        && b < until
    {
        let edge = StatsQuery {
            since: Some(b),
            until: Some(until),
            top: None,
            ..q.clone()
        };
        out.extend(query::stats_unranked(db, backend, &OWN, &edge).await?);
    }
    let mut merged: HashMap<Option<String>, StatsRow> = HashMap::new();
    for row in out {
        match merged.get_mut(&row.group) {
            None => {
                merged.insert(row.group.clone(), row);
            }
            Some(m) => {
                m.add(&row);
            }
        }
    }
    let mut out: Vec<StatsRow> = merged.into_values().filter(|r| r.requests > 0).collect();
    if q.by == GroupBy::Nothing && out.is_empty() {
        // One row of totals, zero, as a sum over no events gives.
        out.push(StatsRow {
            group: None,
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            reasoning_tokens: 0,
            cost: llm_accounting_usage::Money::ZERO,
        });
    }
    rank(&mut out, q.top);
    Ok(out)
}

/// Totals per period and group for `q`: the whole hours (`--period hour`) or days (longer
/// periods, which are whole days in UTC) from the rollups in one query, the parts at either
/// end of the range as [`stats`] counts them.
pub(super) async fn series(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    q: &SeriesQuery,
) -> Result<Vec<SeriesRow>> {
    // Checks the range and the number of periods.
    q.spans()?;
    let base = if q.period == Period::Hour { HOUR } else { DAY };
    let since = q.since.timestamp_micros();
    let until = q.until.timestamp_micros();
    // Whole base spans [a, b).
    let a = ceil_of(since, base);
    let b = start_of(until, base);
    let mut points = BTreeMap::new();
    let micros =
        |us: i64| DateTime::from_timestamp_micros(us).ok_or_else(|| mismatch("read usage rollups"));
    let edge = |from: DateTime<Utc>, to: DateTime<Utc>| StatsQuery {
        since: Some(from),
        until: Some(to),
        by: q.by,
        top: None,
    };
    let left_end = Ord::min(a, until);
    if since < left_end {
        let at = q.period.start_of(q.since);
        for row in stats(db, backend, &edge(q.since, micros(left_end)?)).await? {
            accumulate(&mut points, at, row);
        }
    }
    if a < b {
        let group = group_columns(q.by);
        let mut select = Query::select();
        select.columns(group.iter().copied());
        for name in SUM_COLUMNS {
            select.expr(sum_int(backend, Expr::col(name)));
        }
        select.column("start_us");
        select.from(TABLE).cond_where(
            Expr::col("span_us")
                .eq(base)
                .and(Expr::col("start_us").gte(a))
                .and(Expr::col("start_us").lt(b)),
        );
        select.group_by_columns(group.iter().copied().chain(["start_us"]));
        let rows = all(db, backend, &select, "summarise usage rollups").await?;
        let totals = query::stats_rows(&rows, q.by, Counts::Checked, Cost::Micros)?;
        let at = group.len() + SUM_COLUMNS.len();
        for (r, row) in rows.iter().zip(totals) {
            let start: i64 = Counts::Checked.get(r, at)?;
            accumulate(&mut points, q.period.start_of(micros(start)?), row);
        }
    }
    if a <= b && b < until {
        let from = micros(b)?;
        for row in stats(db, backend, &edge(from, q.until)).await? {
            accumulate(&mut points, q.period.start_of(from), row);
        }
    }
    Ok(finish(points))
}

/// Sums the events of `[start, start + span)` again (after a purge cut through it).
async fn rebuild(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    span: i64,
    start: i64,
) -> Result<()> {
    let delete = Query::delete()
        .from_table(TABLE)
        .and_where(Expr::col("span_us").eq(span))
        .and_where(Expr::col("start_us").eq(start))
        .to_owned();
    exec(db, backend, &delete, "rebuild usage rollups").await?;
    let (Some(since), Some(until)) = (
        DateTime::from_timestamp_micros(start),
        DateTime::from_timestamp_micros(start + span),
    ) else {
        return Ok(());
    };
    let mut sums: BTreeMap<(i64, i64, Group), Sums> = BTreeMap::new();
    for e in query::after_in(db, backend, &OWN, since, until).await? {
        let slot = sums.entry((span, start, Group::of(&e))).or_default();
        *slot = slot.plus(Sums::of(&e));
    }
    write(db, backend, sums).await
}

/// After a purge of the events before `before`: the rollups of the hours and days purged
/// go, and the hour and the day it cut through are summed again.
pub(super) async fn purged(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    before: DateTime<Utc>,
) -> Result<()> {
    let us = before.timestamp_micros();
    for span in SPANS {
        let start = start_of(us, span);
        let delete = Query::delete()
            .from_table(TABLE)
            .and_where(Expr::col("span_us").eq(span))
            .and_where(Expr::col("start_us").lt(start))
            .to_owned();
        exec(db, backend, &delete, "drop purged usage rollups").await?;
        if start < us {
            rebuild(db, backend, span, start).await?;
        }
    }
    Ok(())
}

/// Builds the rollups of events written before they existed, once: `true` when this call
/// built them. Writers are held back meanwhile (SQLite's write lock, PostgreSQL's `SHARE` on
/// the events table, MySQL's table locks).
pub(super) async fn start(db: &sea_orm::DatabaseConnection, backend: DbBackend) -> Result<bool> {
    let marked = || {
        Query::select()
            .column("last_id")
            .from("usage_counter_marks")
            .and_where(Expr::col("name").eq(MARK))
            .to_owned()
    };
    if one(db, backend, &marked(), "read the usage rollups' mark")
        .await?
        .is_some()
    {
        return Ok(false);
    }
    use sea_orm::TransactionTrait;
    let txn = match backend {
        DbBackend::Sqlite => {
            db.begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
        }
        _ => db.begin().await,
    }
    .map_err(|e| crate::error::from_db("build usage rollups", e))?;
    let lock = match backend {
        DbBackend::Postgres => Some("LOCK TABLE usage_events IN SHARE MODE"),
        DbBackend::MySql => {
            Some("SELECT id FROM usage_events ORDER BY id DESC LIMIT 1 LOCK IN SHARE MODE")
        }
        _ => None,
    };
    if let Some(lock) = lock {
        txn.execute_unprepared(lock)
            .await
            .map_err(|e| crate::error::from_db("build usage rollups", e))?;
    }
    if one(&txn, backend, &marked(), "read the usage rollups' mark")
        .await?
        .is_some()
    {
        return Ok(false);
    }
    // Every event, summed per hour and group by the database.
    let div = if backend == DbBackend::MySql {
        "DIV"
    } else {
        "/"
    };
    let mut select = Query::select();
    select
        .expr_as(Expr::cust(format!("at_us {div} {HOUR}")), "hour")
        .columns(GROUP_COLUMNS);
    select.expr(Expr::cust("COUNT(*)"));
    for name in &SUM_COLUMNS[1..] {
        select.expr(sum_int(backend, Expr::col(*name)));
    }
    select
        .from(OWN.table)
        .group_by_col("hour")
        .group_by_columns(GROUP_COLUMNS);
    let c = Counts::Checked;
    let mut days: BTreeMap<(i64, i64, Group), Sums> = BTreeMap::new();
    for r in all(&txn, backend, &select, "build usage rollups").await? {
        let group = Group {
            model: c.get(&r, 1)?,
            service: c.get(&r, 2)?,
            user: c.get(&r, 3)?,
            project: c.get(&r, 4)?,
            caller: c.get(&r, 5)?,
            key: c.get(&r, 6)?,
            version: c.get(&r, 7)?,
        };
        let mut sums = Sums::default();
        for (i, slot) in sums.0.iter_mut().enumerate() {
            *slot = c.read(&r, 8 + i)?;
        }
        let hour = c.get::<i64>(&r, 0)? * HOUR;
        upsert(&txn, backend, HOUR, hour, &group.hash(), &group, sums).await?;
        let day = days.entry((DAY, start_of(hour, DAY), group)).or_default();
        *day = day.plus(sums);
    }
    write(&txn, backend, days).await?;
    let newest = Query::select()
        .expr(Expr::cust("MAX(id)"))
        .from(OWN.table)
        .to_owned();
    let last: i64 = match one(&txn, backend, &newest, "build usage rollups").await? {
        Some(r) => c.get::<Option<i64>>(&r, 0)?.unwrap_or(0),
        None => 0,
    };
    let mut insert = Query::insert();
    insert
        .into_table("usage_counter_marks")
        .columns(["name", "last_id"])
        .values([Expr::val(MARK), Expr::val(last)])
        .map_err(|_| mismatch("mark usage rollups built"))?;
    exec(&txn, backend, &insert, "mark usage rollups built").await?;
    txn.commit()
        .await
        .map_err(|e| crate::error::from_db("build usage rollups", e))?;
    Ok(true)
}
