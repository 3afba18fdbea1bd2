//! The statements of the usage store, written once with `?` placeholders (numbered for
//! PostgreSQL) and run on any connection or transaction.

use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{
    Limit, NewLimit, ReservationRecord, Scope, StatsQuery, StatsRow, Usage, UsageEvent, rank,
};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};
use uuid::Uuid;

use super::rows;
use crate::error::from_db;
use crate::limits::rows_per_insert;

/// The columns of `usage_events` that an insert writes, in order.
const EVENT_COLUMNS: [&str; 15] = [
    "at_us",
    "model",
    "service",
    "user_id",
    "project",
    "caller",
    "session",
    "key_identity",
    "key_version",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
    "execution_us",
];

const LIMIT_COLUMNS: &str = "id, kind, max_value, window_kind, window_unit, window_count, \
                             service, model, user_id, project, caller, key_identity, \
                             created_at_us";

const EVENT_SELECT: &str = "at_us, model, service, user_id, project, caller, session, \
                            key_identity, key_version, prompt_tokens, completion_tokens, \
                            cached_tokens, reasoning_tokens, cost_micros, execution_us";

/// A statement for `backend`: `?` placeholders become `$1`, `$2`, ... on PostgreSQL.
pub(super) fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    if backend != DbBackend::Postgres {
        return Statement::from_sql_and_values(backend, sql, values);
    }
    let mut out = String::with_capacity(sql.len() + values.len() * 3);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    Statement::from_sql_and_values(backend, out, values)
}

/// The 64-bit integer type of a `CAST` (MySQL has no `BIGINT` there).
fn int(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "SIGNED",
        _ => "BIGINT",
    }
}

/// `SUM(column)` as a 64-bit integer, 0 when there are no rows.
pub(super) fn sum(backend: DbBackend, column: &str) -> String {
    format!("CAST(COALESCE(SUM({column}), 0) AS {})", int(backend))
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn i64_of(n: u64, field: &'static str) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid(field, "too large"))
}

/// The columns of this project's tables for the parts of a scope, in the order of
/// [`Scope::parts`].
const SCOPE_COLUMNS: [&str; 6] = [
    "service",
    "model",
    "user_id",
    "project",
    "caller",
    "key_identity",
];

/// ` AND column = ?` for every set part of `scope` (`columns` in the order of
/// [`Scope::parts`]), with its values; ` AND project IS NULL` for a scope without project.
pub(super) fn filter_scope(
    scope: &Scope,
    columns: [&str; 6],
    sql: &mut String,
    values: &mut Vec<Value>,
) {
    for ((_, value), column) in scope.parts().into_iter().zip(columns) {
        if let Some(v) = value {
            sql.push_str(" AND ");
            sql.push_str(column);
            sql.push_str(" = ?");
            values.push(v.to_owned().into());
        }
    }
    if scope.no_project {
        sql.push_str(" AND ");
        sql.push_str(columns[3]);
        sql.push_str(" IS NULL");
    }
}

async fn all(
    db: &impl ConnectionTrait,
    s: Statement,
    op: &'static str,
) -> Result<Vec<QueryResult>> {
    db.query_all_raw(s).await.map_err(|e| from_db(op, e))
}

async fn exec(db: &impl ConnectionTrait, s: Statement, op: &'static str) -> Result<u64> {
    db.execute_raw(s)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| from_db(op, e))
}

/// Inserts `events` in statements under the database's parameter limit.
pub(super) async fn insert_events(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &[UsageEvent],
) -> Result<()> {
    let columns = &EVENT_COLUMNS[..];
    let head = format!("INSERT INTO usage_events ({}) VALUES ", columns.join(", "));
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    for chunk in events.chunks(rows_per_insert(backend, columns.len())) {
        let mut sql = String::with_capacity(head.len() + chunk.len() * (row.len() + 2));
        sql.push_str(&head);
        let mut values = Vec::with_capacity(chunk.len() * columns.len());
        for (i, e) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&row);
            rows::event_values(e, &mut values)?;
        }
        exec(db, stmt(backend, &sql, values), "write usage events").await?;
    }
    Ok(())
}

/// Every limit, by id.
pub(super) async fn limits(db: &impl ConnectionTrait, backend: DbBackend) -> Result<Vec<Limit>> {
    let sql = format!("SELECT {LIMIT_COLUMNS} FROM quota_limits ORDER BY id");
    all(db, stmt(backend, &sql, vec![]), "read limits")
        .await?
        .iter()
        .map(rows::limit)
        .collect()
}

/// Locks the rows of limits `ids` (in id order); the ids that still exist.
pub(super) async fn lock_limits(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    ids: &[i64],
) -> Result<Vec<i64>> {
    let marks = vec!["?"; ids.len()].join(", ");
    let sql = format!("SELECT id FROM quota_limits WHERE id IN ({marks}) ORDER BY id FOR UPDATE");
    let values = ids.iter().map(|i| Value::from(*i)).collect();
    all(db, stmt(backend, &sql, values), "lock limits")
        .await?
        .iter()
        .map(|r| {
            r.try_get_by_index::<i64>(0)
                .map_err(|e| from_db("lock limits", e))
        })
        .collect()
}

/// Creates a limit.
pub(super) async fn insert_limit(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    limit: &NewLimit,
) -> Result<Limit> {
    let created_at = Utc::now();
    let mut values = rows::limit_values(limit)?;
    values.push(us(created_at).into());
    let mut sql = "INSERT INTO quota_limits (kind, max_value, window_kind, window_unit, \
                   window_count, service, model, user_id, project, caller, key_identity, \
                   created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        .to_owned();
    let id = if backend == DbBackend::Postgres {
        sql.push_str(" RETURNING id");
        let row = db
            .query_one_raw(stmt(backend, &sql, values))
            .await
            .map_err(|e| from_db("add a limit", e))?
            .ok_or_else(|| Error::Database {
                operation: "add a limit (no id returned)",
                source: None,
            })?;
        row.try_get_by_index::<i64>(0)
            .map_err(|e| from_db("add a limit", e))?
    } else {
        let r = db
            .execute_raw(stmt(backend, &sql, values))
            .await
            .map_err(|e| from_db("add a limit", e))?;
        i64::try_from(r.last_insert_id()).map_err(|_| Error::Database {
            operation: "add a limit (id out of range)",
            source: None,
        })?
    };
    Ok(Limit {
        id,
        scope: limit.scope.clone(),
        kind: limit.kind,
        max: limit.max,
        window: limit.window,
        created_at: DateTime::from_timestamp_micros(us(created_at)).unwrap_or(created_at),
    })
}

/// Deletes a limit; whether it existed.
pub(super) async fn delete_limit(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    id: i64,
) -> Result<bool> {
    let s = stmt(
        backend,
        "DELETE FROM quota_limits WHERE id = ?",
        vec![id.into()],
    );
    Ok(exec(db, s, "delete a limit").await? > 0)
}

/// Usage of `scope`: events in `[since, until)` and reservations alive at `now`.
pub(super) async fn usage(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    scope: &Scope,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Usage> {
    let mut sql = format!(
        "SELECT COUNT(*), {}, {}, {}, MIN(at_us) FROM usage_events WHERE at_us >= ? AND at_us < ?",
        sum(backend, "prompt_tokens"),
        sum(backend, "completion_tokens"),
        sum(backend, "cost_micros"),
    );
    let mut values: Vec<Value> = vec![us(since).into(), us(until).into()];
    filter_scope(scope, SCOPE_COLUMNS, &mut sql, &mut values);
    let events = all(db, stmt(backend, &sql, values), "sum usage").await?;
    let held = held(db, backend, scope, now).await?;
    rows::usage(events.first(), None).map(|u| Usage {
        amounts: u.amounts.plus(held),
        oldest: u.oldest,
    })
}

/// What live reservations inside `scope` hold at `now`.
pub(super) async fn held(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<llm_accounting_usage::Amounts> {
    let mut sql = format!(
        "SELECT {}, {}, {}, {} FROM quota_reservations WHERE expires_at_us > ?",
        sum(backend, "requests"),
        sum(backend, "input_tokens"),
        sum(backend, "output_tokens"),
        sum(backend, "cost_micros"),
    );
    let mut values: Vec<Value> = vec![us(now).into()];
    filter_scope(scope, SCOPE_COLUMNS, &mut sql, &mut values);
    let held = all(db, stmt(backend, &sql, values), "sum reservations").await?;
    rows::usage(None, held.first()).map(|u| u.amounts)
}

/// Deletes reservations that lapsed before `now`.
pub(super) async fn delete_lapsed(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    now: DateTime<Utc>,
) -> Result<u64> {
    let s = stmt(
        backend,
        "DELETE FROM quota_reservations WHERE expires_at_us <= ?",
        vec![us(now).into()],
    );
    exec(db, s, "delete lapsed reservations").await
}

/// Holds a reservation.
pub(super) async fn insert_reservation(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    r: &ReservationRecord,
) -> Result<()> {
    let sql = "INSERT INTO quota_reservations (id, created_at_us, expires_at_us, service, model, \
               user_id, project, caller, key_identity, requests, input_tokens, output_tokens, \
               cost_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let s = &r.scope;
    let values: Vec<Value> = vec![
        r.id.to_string().into(),
        us(r.created_at).into(),
        us(r.expires_at).into(),
        s.service.clone().into(),
        s.model.clone().into(),
        s.user.clone().into(),
        s.project.clone().into(),
        s.caller.clone().into(),
        s.key.clone().into(),
        i64_of(r.amounts.requests, "requests")?.into(),
        i64_of(r.amounts.input_tokens, "input tokens")?.into(),
        i64_of(r.amounts.output_tokens, "output tokens")?.into(),
        i64_of(r.amounts.cost.micros(), "cost")?.into(),
    ];
    exec(db, stmt(backend, sql, values), "reserve quota")
        .await
        .map(drop)
}

/// Drops a reservation; whether it was held.
pub(super) async fn delete_reservation(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    id: Uuid,
) -> Result<bool> {
    let s = stmt(
        backend,
        "DELETE FROM quota_reservations WHERE id = ?",
        vec![id.to_string().into()],
    );
    Ok(exec(db, s, "release a reservation").await? > 0)
}

/// Totals per group.
pub(super) async fn stats(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    q: &StatsQuery,
) -> Result<Vec<StatsRow>> {
    use llm_accounting_usage::GroupBy;
    let group = match q.by {
        GroupBy::Nothing => None,
        GroupBy::Model => Some("model"),
        GroupBy::Service => Some("service"),
        GroupBy::User => Some("user_id"),
        GroupBy::Project => Some("project"),
        GroupBy::Caller => Some("caller"),
        GroupBy::Key => Some("key_identity, key_version"),
    };
    let mut sql = format!(
        "SELECT {}COUNT(*), {}, {}, {}, {}, {} FROM usage_events WHERE 1 = 1",
        group.map(|g| format!("{g}, ")).unwrap_or_default(),
        sum(backend, "prompt_tokens"),
        sum(backend, "completion_tokens"),
        sum(backend, "cached_tokens"),
        sum(backend, "reasoning_tokens"),
        sum(backend, "cost_micros"),
    );
    let mut values: Vec<Value> = Vec::new();
    if let Some(t) = q.since {
        sql.push_str(" AND at_us >= ?");
        values.push(us(t).into());
    }
    if let Some(t) = q.until {
        sql.push_str(" AND at_us < ?");
        values.push(us(t).into());
    }
    if let Some(g) = group {
        sql.push_str(" GROUP BY ");
        sql.push_str(g);
    }
    let found = all(db, stmt(backend, &sql, values), "summarise usage").await?;
    let mut out = found
        .iter()
        .map(|r| rows::stats_row(r, q.by))
        .collect::<Result<Vec<_>>>()?;
    rank(&mut out, q.top);
    Ok(out)
}

/// The last `n` events, newest first.
pub(super) async fn tail(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    n: usize,
) -> Result<Vec<UsageEvent>> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let sql =
        format!("SELECT {EVENT_SELECT} FROM usage_events ORDER BY at_us DESC, id DESC LIMIT ?");
    all(db, stmt(backend, &sql, vec![n.into()]), "read usage events")
        .await?
        .iter()
        .map(rows::event)
        .collect()
}

/// Deletes events before `before`; how many.
pub(super) async fn purge_before(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    before: DateTime<Utc>,
) -> Result<u64> {
    let s = stmt(
        backend,
        "DELETE FROM usage_events WHERE at_us < ?",
        vec![us(before).into()],
    );
    exec(db, s, "purge usage events").await
}
