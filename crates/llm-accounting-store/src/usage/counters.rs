//! Usage counters (`usage_counters`): each limit's usage per window bucket (see
//! [`llm_accounting_usage::buckets`]), so that deciding a call reads a handful of rows
//! whatever the number of events in its window.
//!
//! - A counter row is the whole usage of one limit in one bucket. It is built once from the
//!   events (the first time a decision needs it) and then kept up to date by every write of
//!   usage, in the same transaction ([`add`]); a write only updates rows that exist, so a
//!   missing row always means "not built yet", never "zero".
//! - Rows carry the [`signature`] of the limit's scope and window: a limit changed in place
//!   (the Python package's `usage_limits` rows can be edited) gets fresh counters.
//! - Rolling windows: whole buckets from counters, the part of the bucket at the window's
//!   oldest edge exactly from the events (at most one bucket's worth of them).
//! - Builds are written only in the serialised section of a reservation, and not while a
//!   limit is younger than [`SETTLE`] (a write that began before the limit existed could not
//!   count against it; until then the counters are computed from the events each time).
//! - The Python package's `accounting_entries` are written by programs that know nothing of
//!   counters: [`fold`] counts the entries past the highest id already counted
//!   (`usage_counter_marks`) before each decision, inside the same serialised section. On
//!   PostgreSQL that section takes `SHARE` on `accounting_entries`, which waits for the
//!   entries being written and holds new ones back until it ends, so that no entry with a
//!   lower id can appear after a higher one was counted.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use llm_accounting_core::Result;
use llm_accounting_usage::buckets::{Bucket, CounterPlan, EXACT_MAX_BUCKETS, bucket_of};
use llm_accounting_usage::{Amounts, Limit, MAX_COST, MAX_TOKENS, Money, Usage, UsageEvent};
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbBackend, Value};

use super::columns::{Counts, Events, Time, as_int, decode, i64_of};
use super::query::{self, all, exec, mismatch, one};
use crate::limits::rows_per_insert;

/// The counters table.
const TABLE: &str = "usage_counters";

/// The marks table.
const MARKS: &str = "usage_counter_marks";

/// How long after its creation a limit's counters are computed from the events on each read
/// instead of being stored.
pub(super) const SETTLE: Duration = Duration::seconds(10);

/// More entries than this to fold at once: the counters are dropped and rebuilt from the
/// events instead (one sum per bucket rather than one update per entry and limit).
const FOLD_MAX: u64 = 20_000;

/// A short, stable name of `limit`'s scope and window (FNV-1a, 64 bits, in hex).
pub(super) fn signature(limit: &Limit) -> String {
    let text = format!("{:?}|{:?}", limit.scope, limit.window);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One bucket's usage.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    amounts: Amounts,
    oldest: Option<DateTime<Utc>>,
}

impl Count {
    fn plus(self, o: Count) -> Count {
        Count {
            amounts: self.amounts.plus(o.amounts),
            oldest: match (self.oldest, o.oldest) {
                (Some(a), Some(b)) => Some(Ord::min(a, b)),
                (a, b) => a.or(b),
            },
        }
    }
}

impl From<Usage> for Count {
    fn from(u: Usage) -> Self {
        Count {
            amounts: u.amounts,
            oldest: u.oldest,
        }
    }
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The stored counters of `limit` for buckets `first..=last`, by bucket start; `stale`: a row
/// of another signature was found.
async fn stored(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    limit: &Limit,
    sig: &str,
    first: i64,
    last: i64,
) -> Result<(HashMap<i64, Count>, bool)> {
    let select = Query::select()
        .columns([
            "bucket_us",
            "signature",
            "requests",
            "input_tokens",
            "output_tokens",
            "cost_micros",
            "oldest_us",
        ])
        .from(TABLE)
        .and_where(Expr::col("limit_id").eq(limit.id))
        .and_where(Expr::col("bucket_us").gte(first))
        .and_where(Expr::col("bucket_us").lte(last))
        .to_owned();
    let c = Counts::Checked;
    let mut out = HashMap::new();
    let mut stale = false;
    for r in all(db, backend, &select, "read usage counters").await? {
        let s: String = c.get(&r, 1)?;
        if s != sig {
            stale = true;
            continue;
        }
        let oldest: Option<i64> = c.get(&r, 6)?;
        out.insert(
            c.get::<i64>(&r, 0)?,
            Count {
                amounts: Amounts {
                    requests: c.read(&r, 2)?,
                    input_tokens: c.read(&r, 3)?,
                    output_tokens: c.read(&r, 4)?,
                    cost: Money::from_micros(c.read(&r, 5)?),
                },
                oldest: oldest.and_then(DateTime::from_timestamp_micros),
            },
        );
    }
    Ok((out, stale))
}

/// The usage of `limit` at `now` (events only; reservations are added by the caller): from
/// its counters, building those missing from `events`. With `persist`, built counters are
/// stored (the caller holds the limit's serialised section).
pub(super) async fn usage(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    limit: &Limit,
    now: DateTime<Utc>,
    persist: bool,
) -> Result<Usage> {
    let plan = CounterPlan::new(limit.window, now, EXACT_MAX_BUCKETS);
    let (Some(first), Some(last)) = (plan.buckets.first(), plan.buckets.last()) else {
        return Ok(Usage::default());
    };
    let sig = signature(limit);
    let (mut have, stale) = stored(db, backend, limit, &sig, first.key(), last.key()).await?;
    let persist = persist && now - limit.created_at >= SETTLE;
    if stale && persist {
        let delete = Query::delete()
            .from_table(TABLE)
            .and_where(Expr::col("limit_id").eq(limit.id))
            .to_owned();
        exec(db, backend, &delete, "drop stale usage counters").await?;
    }
    let missing: Vec<Bucket> = plan
        .buckets
        .iter()
        .filter(|b| !have.contains_key(&b.key()))
        .copied()
        .collect();
    let built = build(db, backend, events, limit, &missing).await?;
    let mut total = Count::default();
    for b in &plan.buckets {
        total = total.plus(have.remove(&b.key()).unwrap_or_default());
    }
    for (_, c) in &built {
        total = total.plus(*c);
    }
    if let Some((since, until)) = plan.edge {
        let edge = query::usage(db, backend, events, &limit.scope, since, until).await?;
        total = total.plus(Count::from(edge));
    }
    if persist && !built.is_empty() {
        insert(db, backend, limit.id, &sig, &built).await?;
    }
    Ok(Usage {
        amounts: total.amounts,
        oldest: total.oldest,
    })
}

/// The usage of `limit` in each of `buckets`, from the events: buckets of equal length in a
/// table that stores microseconds in one grouped query, others one query each.
async fn build(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    limit: &Limit,
    buckets: &[Bucket],
) -> Result<Vec<(Bucket, Count)>> {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return Ok(Vec::new());
    };
    let step = us(first.end) - us(first.start);
    let uniform = buckets.iter().all(|b| us(b.end) - us(b.start) == step);
    if buckets.len() > 2 && uniform && step > 0 && events.time == Time::Micros {
        let counted: HashMap<i64, Count> = query::usage_by_step(
            db,
            backend,
            events,
            &limit.scope,
            first.start,
            last.end,
            step,
        )
        .await?
        .into_iter()
        .map(|(i, u)| (us(first.start) + i * step, Count::from(u)))
        .collect();
        return Ok(buckets
            .iter()
            .map(|b| (*b, counted.get(&b.key()).copied().unwrap_or_default()))
            .collect());
    }
    let mut out = Vec::with_capacity(buckets.len());
    for b in buckets {
        let u = query::usage(db, backend, events, &limit.scope, b.start, b.end).await?;
        out.push((*b, Count::from(u)));
    }
    Ok(out)
}

/// Stores built counters.
async fn insert(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    limit_id: i64,
    sig: &str,
    built: &[(Bucket, Count)],
) -> Result<()> {
    let columns = [
        "limit_id",
        "bucket_us",
        "signature",
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_micros",
        "oldest_us",
    ];
    for chunk in built.chunks(rows_per_insert(backend, columns.len())) {
        let mut insert = Query::insert();
        insert.into_table(TABLE).columns(columns);
        for (b, c) in chunk {
            let values: Vec<Value> = vec![
                limit_id.into(),
                b.key().into(),
                sig.to_owned().into(),
                i64_of(c.amounts.requests, "requests")?.into(),
                i64_of(c.amounts.input_tokens, "input tokens")?.into(),
                i64_of(c.amounts.output_tokens, "output tokens")?.into(),
                i64_of(c.amounts.cost.micros(), "cost")?.into(),
                c.oldest.map(us).into(),
            ];
            insert
                .values(values.into_iter().map(Expr::val))
                .map_err(|_| mismatch("store usage counters"))?;
        }
        exec(db, backend, &insert, "store usage counters").await?;
    }
    Ok(())
}

/// Adds `events` to the counters of every limit among `limits` they count against (only to
/// counters already built: a missing one is built from the events, these included). The
/// caller holds the serialised section of those limits.
pub(super) async fn add(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    limits: &[Limit],
    events: &[UsageEvent],
) -> Result<()> {
    // Each event's attributes and each limit's signature, once (not per pair).
    let scopes: Vec<llm_accounting_usage::Scope> = events
        .iter()
        .map(llm_accounting_usage::Scope::of_event)
        .collect();
    let signatures: Vec<String> = limits.iter().map(signature).collect();
    let mut deltas: BTreeMap<(i64, i64), (usize, Count)> = BTreeMap::new();
    for (i, limit) in limits.iter().enumerate() {
        for (e, scope) in events.iter().zip(&scopes) {
            if !limit.scope.matches(scope) {
                continue;
            }
            let b = bucket_of(limit.window, e.at, EXACT_MAX_BUCKETS);
            let c = Count {
                amounts: Amounts::of_event(e),
                oldest: Some(e.at),
            };
            let slot = deltas
                .entry((limit.id, b.key()))
                .or_insert((i, Count::default()));
            slot.1 = slot.1.plus(c);
        }
    }
    for ((limit_id, bucket), (i, c)) in deltas {
        let oldest = c.oldest.map_or(i64::MAX, us);
        let column = |name: &'static str, n: u64| -> Result<(&'static str, Expr)> {
            Ok((name, Expr::col(name).add(i64_of(n, name)?)))
        };
        let update = Query::update()
            .table(TABLE)
            .values([
                column("requests", c.amounts.requests)?,
                column("input_tokens", c.amounts.input_tokens)?,
                column("output_tokens", c.amounts.output_tokens)?,
                column("cost_micros", c.amounts.cost.micros())?,
                (
                    "oldest_us",
                    Func::coalesce([
                        Expr::case(Expr::col("oldest_us").lt(oldest), Expr::col("oldest_us"))
                            .finally(Expr::val(oldest))
                            .into(),
                        Expr::val(oldest),
                    ])
                    .into(),
                ),
            ])
            .and_where(Expr::col("limit_id").eq(limit_id))
            .and_where(Expr::col("bucket_us").eq(bucket))
            .and_where(Expr::col("signature").eq(signatures[i].as_str()))
            .to_owned();
        exec(db, backend, &update, "update usage counters").await?;
    }
    Ok(())
}

/// Deletes counters no decision reads any more: those of limits not among `limits` and
/// buckets older than each limit's window at `now`.
pub(super) async fn prune(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    limits: &[Limit],
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut deleted = 0;
    let mut delete = Query::delete();
    delete.from_table(TABLE);
    if !limits.is_empty() {
        delete.and_where(Expr::col("limit_id").is_not_in(limits.iter().map(|l| l.id)));
    }
    deleted += exec(db, backend, &delete, "prune usage counters").await?;
    for l in limits {
        let plan = CounterPlan::new(l.window, now, EXACT_MAX_BUCKETS);
        let Some(first) = plan.buckets.first() else {
            continue;
        };
        let delete = Query::delete()
            .from_table(TABLE)
            .and_where(Expr::col("limit_id").eq(l.id))
            .and_where(Expr::col("bucket_us").lt(first.key()))
            .to_owned();
        deleted += exec(db, backend, &delete, "prune usage counters").await?;
    }
    Ok(deleted)
}

/// Deletes the counters of buckets that start before `before` (after a purge of the events
/// before it: they are rebuilt from what is left when needed).
pub(super) async fn forget_before(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    before: DateTime<Utc>,
) -> Result<u64> {
    let delete = Query::delete()
        .from_table(TABLE)
        .and_where(Expr::col("bucket_us").lt(us(before)))
        .to_owned();
    exec(db, backend, &delete, "drop purged usage counters").await
}

/// Deletes the counters of limit `id`.
pub(super) async fn forget_limit(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    id: i64,
) -> Result<u64> {
    let delete = Query::delete()
        .from_table(TABLE)
        .and_where(Expr::col("limit_id").eq(id))
        .to_owned();
    exec(db, backend, &delete, "drop usage counters").await
}

/// Counts the entries of `events` written since the last fold (by any program) into the
/// counters of `limits`. The caller holds the serialised section of reservations; this takes
/// the one of folding (the mark's row) and, on PostgreSQL, `SHARE` on the events table.
pub(super) async fn fold(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    limits: &[Limit],
) -> Result<()> {
    let name = events.table;
    let mark = Query::select()
        .column("last_id")
        .from(MARKS)
        .and_where(Expr::col("name").eq(name))
        .lock(sea_orm::sea_query::LockType::Update)
        .to_owned();
    let held = one(db, backend, &mark, "read the usage counters' mark").await?;
    if backend == DbBackend::Postgres {
        let lock = format!("LOCK TABLE {name} IN SHARE MODE");
        db.execute_unprepared(&lock)
            .await
            .map_err(|e| crate::error::from_db("wait for usage entries being written", e))?;
    }
    let Some(row) = held else {
        // No mark: counters (if any) cannot be trusted; start counting from here.
        return restart(db, backend, events, false).await;
    };
    let last: i64 = decode(&row, 0, "read the usage counters' mark")?;
    let fresh = query::after(db, backend, events, last, FOLD_MAX + 1).await?;
    if u64::try_from(fresh.len()).unwrap_or(u64::MAX) > FOLD_MAX {
        return restart(db, backend, events, true).await;
    }
    let Some(&(newest, _)) = fresh.last() else {
        return Ok(());
    };
    let clamped: Vec<UsageEvent> = fresh.into_iter().map(|(_, e)| clamp(e)).collect();
    add(db, backend, limits, &clamped).await?;
    let update = Query::update()
        .table(MARKS)
        .value("last_id", newest)
        .and_where(Expr::col("name").eq(name))
        .to_owned();
    exec(db, backend, &update, "advance the usage counters' mark").await?;
    Ok(())
}

/// Drops every counter and marks the events table's newest id as counted: the counters are
/// built again from the events.
async fn restart(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    has_mark: bool,
) -> Result<()> {
    let delete = Query::delete().from_table(TABLE).to_owned();
    exec(db, backend, &delete, "drop usage counters").await?;
    let newest = Query::select()
        .expr(as_int(
            backend,
            Func::coalesce([Func::max(Expr::col(events.id.name)).into(), Expr::val(0i64)]).into(),
        ))
        .from(events.table)
        .to_owned();
    let newest: i64 = match one(db, backend, &newest, "read the newest usage entry").await? {
        Some(r) => decode::<Option<i64>>(&r, 0, "read the newest usage entry")?.unwrap_or(0),
        None => 0,
    };
    if has_mark {
        let update = Query::update()
            .table(MARKS)
            .value("last_id", newest)
            .and_where(Expr::col("name").eq(events.table))
            .to_owned();
        exec(db, backend, &update, "reset the usage counters' mark").await?;
    } else {
        set_mark(db, backend, events.table, newest).await?;
    }
    Ok(())
}

/// Creates the mark of `table` at `newest` unless it exists.
async fn set_mark(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    table: &'static str,
    newest: i64,
) -> Result<()> {
    let mut insert = Query::insert();
    insert
        .into_table(MARKS)
        .columns(["name", "last_id"])
        .values([Expr::val(table), Expr::val(newest)])
        .map_err(|_| mismatch("set the usage counters' mark"))?
        .on_conflict(OnConflict::column("name").do_nothing().to_owned());
    exec(db, backend, &insert, "set the usage counters' mark").await?;
    Ok(())
}

/// Prepares counting `events` (opening a store): without a mark, drops any counters and
/// starts counting from the newest entry.
pub(super) async fn start(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
) -> Result<()> {
    let mark = Query::select()
        .column("last_id")
        .from(MARKS)
        .and_where(Expr::col("name").eq(events.table))
        .to_owned();
    if one(db, backend, &mark, "read the usage counters' mark")
        .await?
        .is_none()
    {
        restart(db, backend, events, false).await?;
    }
    Ok(())
}

/// An entry written by another program, bounded as this project bounds its own.
fn clamp(mut e: UsageEvent) -> UsageEvent {
    e.prompt_tokens = Ord::min(e.prompt_tokens, MAX_TOKENS);
    e.completion_tokens = Ord::min(e.completion_tokens, MAX_TOKENS);
    e.cached_tokens = Ord::min(e.cached_tokens, MAX_TOKENS);
    e.reasoning_tokens = Ord::min(e.reasoning_tokens, MAX_TOKENS);
    e.cost = Ord::min(e.cost, MAX_COST);
    e
}

#[cfg(test)]
mod tests;
