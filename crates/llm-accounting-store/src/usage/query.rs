//! The statements both schemas share, written once over the column maps of
//! [`super::columns`] with sea-query and rendered for the connection's backend (its own
//! placeholders and quoting): usage of a scope in a window, statistics, the last events,
//! locking and deleting limits. Also the helpers that run any statement.

use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{
    Amounts, GroupBy, KeyRef, Scope, StatsQuery, StatsRow, Usage, UsageEvent, rank,
};
use sea_orm::sea_query::{
    Asterisk, Expr, ExprTrait, Func, InsertStatement, JoinType, LockType, Order, Query,
    SelectStatement,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, StatementBuilder};

use super::columns::{Col, Cost, Counts, Events, LimitTable, ScopeColumns, as_int, decode};
use crate::error::from_db;

/// All rows of `statement`.
pub(super) async fn all(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    statement: &impl StatementBuilder,
    op: &'static str,
) -> Result<Vec<QueryResult>> {
    db.query_all_raw(backend.build(statement))
        .await
        .map_err(|e| from_db(op, e))
}

/// The first row of `statement`, if any.
pub(super) async fn one(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    statement: &impl StatementBuilder,
    op: &'static str,
) -> Result<Option<QueryResult>> {
    db.query_one_raw(backend.build(statement))
        .await
        .map_err(|e| from_db(op, e))
}

/// Runs `statement`; how many rows it changed.
pub(super) async fn exec(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    statement: &impl StatementBuilder,
    op: &'static str,
) -> Result<u64> {
    db.execute_raw(backend.build(statement))
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| from_db(op, e))
}

/// Runs `insert` (one row) and returns the new row's id, column `id` (through
/// `CAST(id AS BIGINT)` when `narrow`): by `RETURNING`, or on MySQL/MariaDB, which have no
/// `RETURNING` in every version, by the connection's last insert id. A failure goes through
/// `fail`.
pub(super) async fn insert_returning_id(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    mut insert: InsertStatement,
    narrow: bool,
    op: &'static str,
    fail: impl Fn(DbErr) -> Error,
) -> Result<i64> {
    if backend == DbBackend::MySql {
        let r = db.execute_raw(backend.build(&insert)).await.map_err(fail)?;
        return i64::try_from(r.last_insert_id()).map_err(|_| Error::Database {
            operation: op,
            source: None,
        });
    }
    let id = if narrow {
        as_int(backend, Expr::col("id"))
    } else {
        Expr::col("id")
    };
    insert.returning(Query::returning().expr(id));
    let row = db
        .query_one_raw(backend.build(&insert))
        .await
        .map_err(fail)?
        .ok_or(Error::Database {
            operation: op,
            source: None,
        })?;
    decode(&row, 0, op)
}

/// A statement whose columns and values differ in number (a bug here, not in the data).
pub(super) fn mismatch(operation: &'static str) -> Error {
    Error::Database {
        operation,
        source: None,
    }
}

/// ` AND column = ?` for every set part of `scope`, and ` AND project IS NULL` for a scope
/// of calls without a project.
pub(super) fn filter_scope(select: &mut SelectStatement, scope: &Scope, columns: &ScopeColumns) {
    for ((_, value), column) in scope.parts().into_iter().zip(columns.in_order()) {
        if let Some(v) = value {
            select.and_where(column.expr().eq(v.to_owned()));
        }
    }
    if scope.no_project {
        select.and_where(columns.project.expr().is_null());
    }
}

impl Events {
    /// `SELECT ... FROM` the events table, joined with its sources table.
    fn select(&self) -> SelectStatement {
        let mut select = Query::select();
        if self.alias == self.table {
            select.from(self.table);
        } else {
            select.from_as(self.table, self.alias);
        }
        if let Some(join) = self.sources {
            select.join_as(
                JoinType::LeftJoin,
                join.table,
                join.alias,
                join.event.expr().equals((self.id.table, self.id.name)),
            );
        }
        select
    }

    /// An integer column, 64-bit.
    fn int(&self, backend: DbBackend, column: Col) -> Expr {
        if self.narrow_ints {
            as_int(backend, column.expr())
        } else {
            column.expr()
        }
    }

    /// ` AND at >= since AND at < until` for the bounds given.
    fn filter_time(
        &self,
        select: &mut SelectStatement,
        backend: DbBackend,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) {
        if let Some(t) = since {
            select.and_where(self.at.expr().gte(self.time.value(backend, t)));
        }
        if let Some(t) = until {
            select.and_where(self.at.expr().lt(self.time.value(backend, t)));
        }
    }
}

/// `SELECT COUNT(*), SUM(prompt), SUM(completion), SUM(cost), MIN(at)` of the events of
/// `scope` in `[since, until)`.
pub(super) fn usage_select(
    backend: DbBackend,
    events: &Events,
    scope: &Scope,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> SelectStatement {
    let mut select = events.select();
    select
        .expr(Func::count(Expr::col(Asterisk)))
        .expr(events.sum_tokens(backend, events.prompt_tokens))
        .expr(events.sum_tokens(backend, events.completion_tokens))
        .expr(events.sum_cost(backend))
        .expr(Func::min(events.at.expr()));
    events.filter_time(&mut select, backend, Some(since), Some(until));
    filter_scope(&mut select, scope, &events.scope);
    select
}

/// Usage of `scope` in `[since, until)`: the events only (see `own::held` for reservations).
pub(super) async fn usage(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    scope: &Scope,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Usage> {
    let select = usage_select(backend, events, scope, since, until);
    let Some(r) = one(db, backend, &select, events.ops[0]).await? else {
        return Ok(Usage::default());
    };
    let counts = events.counts;
    Ok(Usage {
        amounts: Amounts {
            requests: counts.read(&r, 0)?,
            input_tokens: counts.read(&r, 1)?,
            output_tokens: counts.read(&r, 2)?,
            cost: events.money.read(&r, 3, counts)?,
        },
        oldest: events.time.read(&r, 4, backend)?,
    })
}

/// Usage of `scope` in `[since, until)` per bucket of `step_us` microseconds counted from
/// `since` (the events of a table that stores times as microseconds only), by bucket index.
pub(super) async fn usage_by_step(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    scope: &Scope,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    step_us: i64,
) -> Result<Vec<(i64, Usage)>> {
    let div = if backend == DbBackend::MySql {
        "DIV"
    } else {
        "/"
    };
    let at = format!("{}.{}", events.at.table, events.at.name);
    let since_us = since.timestamp_micros();
    let bucket = Expr::cust(format!("({at} - {since_us}) {div} {step_us}"));
    let mut select = events.select();
    select
        .expr_as(bucket, "bucket")
        .expr(Func::count(Expr::col(Asterisk)))
        .expr(events.sum_tokens(backend, events.prompt_tokens))
        .expr(events.sum_tokens(backend, events.completion_tokens))
        .expr(events.sum_cost(backend))
        .expr(Func::min(events.at.expr()));
    events.filter_time(&mut select, backend, Some(since), Some(until));
    filter_scope(&mut select, scope, &events.scope);
    select.group_by_col("bucket");
    let counts = events.counts;
    all(db, backend, &select, events.ops[0])
        .await?
        .iter()
        .map(|r| {
            Ok((
                decode::<i64>(r, 0, events.ops[0])?,
                Usage {
                    amounts: Amounts {
                        requests: counts.read(r, 1)?,
                        input_tokens: counts.read(r, 2)?,
                        output_tokens: counts.read(r, 3)?,
                        cost: events.money.read(r, 4, counts)?,
                    },
                    oldest: events.time.read(r, 5, backend)?,
                },
            ))
        })
        .collect()
}

/// The columns a statistics query groups by.
pub(super) fn group_columns(events: &Events, by: GroupBy) -> Vec<Col> {
    let s = &events.scope;
    match by {
        GroupBy::Nothing => vec![],
        GroupBy::Model => vec![s.model],
        GroupBy::Service => vec![s.service],
        GroupBy::User => vec![s.user],
        GroupBy::Project => vec![s.project],
        GroupBy::Caller => vec![s.caller],
        GroupBy::Key => vec![s.key, events.key_version],
    }
}

/// `SELECT group, COUNT(*), SUM(...)` of the events in the query's bounds, by its group.
pub(super) fn stats_select(backend: DbBackend, events: &Events, q: &StatsQuery) -> SelectStatement {
    let group = group_columns(events, q.by);
    let mut select = events.select();
    select
        .exprs(group.iter().map(|c| c.expr()))
        .expr(Func::count(Expr::col(Asterisk)))
        .expr(events.sum_tokens(backend, events.prompt_tokens))
        .expr(events.sum_tokens(backend, events.completion_tokens))
        .expr(events.sum_tokens(backend, events.cached_tokens))
        .expr(events.sum_tokens(backend, events.reasoning_tokens))
        .expr(events.sum_cost(backend));
    events.filter_time(&mut select, backend, q.since, q.until);
    select.group_by_columns(group.iter().map(|c| (c.table, c.name)));
    select
}

/// Totals per group, ranked.
pub(super) async fn stats(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    q: &StatsQuery,
) -> Result<Vec<StatsRow>> {
    let mut out = stats_unranked(db, backend, events, q).await?;
    rank(&mut out, q.top);
    Ok(out)
}

/// Totals per group, in no order.
pub(super) async fn stats_unranked(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    q: &StatsQuery,
) -> Result<Vec<StatsRow>> {
    let select = stats_select(backend, events, q);
    let rows = all(db, backend, &select, events.ops[1]).await?;
    stats_rows(&rows, q.by, events.counts, events.money)
}

/// Rows of `group..., requests, prompt, completion, cached, reasoning, cost` as totals.
pub(super) fn stats_rows(
    rows: &[QueryResult],
    by: GroupBy,
    counts: Counts,
    money: Cost,
) -> Result<Vec<StatsRow>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (group, first) = match by {
            GroupBy::Nothing => (None, 0),
            GroupBy::Key => {
                let identity: Option<String> = counts.get(r, 0)?;
                let version: Option<i32> = counts.get(r, 1)?;
                (
                    identity.map(|i| format!("{i} v{}", version.unwrap_or(0))),
                    2,
                )
            }
            _ => (counts.get::<Option<String>>(r, 0)?, 1),
        };
        out.push(StatsRow {
            group,
            requests: counts.read(r, first)?,
            prompt_tokens: counts.read(r, first + 1)?,
            completion_tokens: counts.read(r, first + 2)?,
            cached_tokens: counts.read(r, first + 3)?,
            reasoning_tokens: counts.read(r, first + 4)?,
            cost: money.read(r, first + 5, counts)?,
        });
    }
    Ok(out)
}

/// The events with `since <= at < until`.
pub(super) async fn after_in(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<UsageEvent>> {
    let mut select = events.select();
    select.exprs(event_columns(backend, events));
    events.filter_time(&mut select, backend, Some(since), Some(until));
    let rows = all(db, backend, &select, events.ops[2]).await?;
    rows.iter()
        .map(|r| read_event(r, 0, backend, events))
        .collect()
}

/// Every part of an event, in the order [`read_event`] reads them.
fn event_columns(backend: DbBackend, events: &Events) -> [Expr; 15] {
    let s = &events.scope;
    [
        events.at.expr(),
        s.model.expr(),
        s.service.expr(),
        s.user.expr(),
        s.project.expr(),
        s.caller.expr(),
        events.session.expr(),
        s.key.expr(),
        events.key_version.expr(),
        events.int(backend, events.prompt_tokens),
        events.int(backend, events.completion_tokens),
        events.int(backend, events.cached_tokens),
        events.int(backend, events.reasoning_tokens),
        events.cost.expr(),
        events.execution.expr(),
    ]
}

/// The event in columns `first..` of `r` (as [`event_columns`]).
fn read_event(
    r: &QueryResult,
    first: usize,
    backend: DbBackend,
    events: &Events,
) -> Result<UsageEvent> {
    let c = events.counts;
    let i = |n: usize| first + n;
    let at = events.time.read(r, i(0), backend)?.unwrap_or_default();
    let mut e = UsageEvent::new(c.get::<Option<String>>(r, i(1))?.unwrap_or_default(), at);
    e.service = c.get(r, i(2))?;
    e.user = c.get(r, i(3))?;
    e.project = c.get(r, i(4))?;
    e.caller = c.get(r, i(5))?;
    e.session = c.get(r, i(6))?;
    let identity: Option<String> = c.get(r, i(7))?;
    let version: Option<i32> = c.get(r, i(8))?;
    e.key = identity.map(|identity| KeyRef {
        identity,
        version: version.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
    });
    e.prompt_tokens = c.read(r, i(9))?;
    e.completion_tokens = c.read(r, i(10))?;
    e.cached_tokens = c.read(r, i(11))?;
    e.reasoning_tokens = c.read(r, i(12))?;
    e.cost = events.money.read(r, i(13), c)?;
    e.execution_time = events.elapsed.read(r, i(14), c.op())?;
    Ok(e)
}

/// `SELECT` every part of the last `n` events, newest first.
pub(super) fn tail_select(backend: DbBackend, events: &Events, n: usize) -> SelectStatement {
    let n = u64::try_from(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(0);
    let mut select = events.select();
    select
        .exprs(event_columns(backend, events))
        .order_by((events.at.table, events.at.name), Order::Desc)
        .order_by((events.id.table, events.id.name), Order::Desc)
        .limit(n);
    select
}

/// The last `n` events, newest first.
pub(super) async fn tail(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    n: usize,
) -> Result<Vec<UsageEvent>> {
    let select = tail_select(backend, events, n);
    let rows = all(db, backend, &select, events.ops[2]).await?;
    rows.iter()
        .map(|r| read_event(r, 0, backend, events))
        .collect()
}

/// At most `n` events with an id above `last`, by id, with their ids.
pub(super) async fn after(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &Events,
    last: i64,
    n: u64,
) -> Result<Vec<(i64, UsageEvent)>> {
    let mut select = events.select();
    select
        .expr(events.int(backend, events.id))
        .exprs(event_columns(backend, events))
        .and_where(events.id.expr().gt(last))
        .order_by((events.id.table, events.id.name), Order::Asc)
        .limit(n);
    let rows = all(db, backend, &select, events.ops[2]).await?;
    rows.iter()
        .map(|r| {
            Ok((
                decode::<i64>(r, 0, events.ops[2])?,
                read_event(r, 1, backend, events)?,
            ))
        })
        .collect()
}

/// `SELECT id ... WHERE id IN (ids) ORDER BY id FOR UPDATE` (SQLite has no row locks: its
/// writers are serialised by the transaction already).
pub(super) fn lock_select(backend: DbBackend, table: &LimitTable, ids: &[i64]) -> SelectStatement {
    let id = Expr::col("id");
    let mut select = Query::select();
    select
        .expr(if table.narrow_ids {
            as_int(backend, id.clone())
        } else {
            id.clone()
        })
        .from(table.table)
        .and_where(id.is_in(ids.iter().copied()))
        .order_by("id", Order::Asc)
        .lock(LockType::Update);
    select
}

/// Locks the rows of limits `ids` (in id order); the ids that still exist.
pub(super) async fn lock_limits(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    table: &LimitTable,
    ids: &[i64],
) -> Result<Vec<i64>> {
    let select = lock_select(backend, table, ids);
    let op = table.ops[0];
    all(db, backend, &select, op)
        .await?
        .iter()
        .map(|r| decode::<i64>(r, 0, op))
        .collect()
}

/// Deletes limit `id`; whether it existed.
pub(super) async fn delete_limit(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    table: &LimitTable,
    id: i64,
) -> Result<bool> {
    let delete = Query::delete()
        .from_table(table.table)
        .and_where(Expr::col("id").eq(id))
        .to_owned();
    Ok(exec(db, backend, &delete, table.ops[1]).await? > 0)
}

#[cfg(test)]
mod tests;
