//! The statements on this project's own tables only (`usage_events` writes, `quota_limits`,
//! `quota_reservations`), built with sea-query for the connection's backend.

use chrono::{DateTime, Utc};
use llm_accounting_core::Result;
use llm_accounting_usage::{Amounts, Limit, Money, NewLimit, ReservationRecord, Scope, UsageEvent};
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DbBackend, Value};
use uuid::Uuid;

use super::columns::{Counts, OWN, OWN_LIMITS, RESERVATIONS, RESERVATIONS_TABLE, i64_of, sum_int};
use super::query::{self, all, exec, filter_scope, insert_returning_id, mismatch, one};
use super::rows;
use crate::error::from_db;
use crate::limits::rows_per_insert;

/// The columns of `quota_limits` a limit is made of, in the order of [`rows::limit`] (the
/// first, `id`, is not written).
const LIMIT_COLUMNS: [&str; 13] = [
    "id",
    "kind",
    "max_value",
    "window_kind",
    "window_unit",
    "window_count",
    "service",
    "model",
    "user_id",
    "project",
    "caller",
    "key_identity",
    "created_at_us",
];

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Inserts `events` in statements under the database's parameter limit.
pub(super) async fn insert_events(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &[UsageEvent],
) -> Result<()> {
    let s = &OWN.scope;
    let columns = [
        OWN.at,
        s.model,
        s.service,
        s.user,
        s.project,
        s.caller,
        OWN.session,
        s.key,
        OWN.key_version,
        OWN.prompt_tokens,
        OWN.completion_tokens,
        OWN.cached_tokens,
        OWN.reasoning_tokens,
        OWN.cost,
        OWN.execution,
    ];
    for chunk in events.chunks(rows_per_insert(backend, columns.len())) {
        let mut insert = Query::insert();
        insert
            .into_table(OWN.table)
            .columns(columns.iter().map(|c| c.name));
        for e in chunk {
            let values: Vec<Value> = vec![
                OWN.time.value(backend, e.at),
                e.model.clone().into(),
                e.service.clone().into(),
                e.user.clone().into(),
                e.project.clone().into(),
                e.caller.clone().into(),
                e.session.clone().into(),
                e.key.as_ref().map(|k| k.identity.clone()).into(),
                e.key
                    .as_ref()
                    .map(|k| i32::try_from(k.version).unwrap_or(i32::MAX))
                    .into(),
                i64_of(e.prompt_tokens, "prompt tokens")?.into(),
                i64_of(e.completion_tokens, "completion tokens")?.into(),
                i64_of(e.cached_tokens, "cached tokens")?.into(),
                i64_of(e.reasoning_tokens, "reasoning tokens")?.into(),
                OWN.money.value(e.cost)?,
                OWN.elapsed.value(e.execution_time),
            ];
            insert
                .values(values.into_iter().map(Expr::val))
                .map_err(|_| mismatch("write usage events"))?;
        }
        exec(db, backend, &insert, "write usage events").await?;
    }
    Ok(())
}

/// Every limit, by id.
pub(super) async fn limits(db: &impl ConnectionTrait, backend: DbBackend) -> Result<Vec<Limit>> {
    let select = Query::select()
        .columns(LIMIT_COLUMNS)
        .from(OWN_LIMITS.table)
        .order_by("id", Order::Asc)
        .to_owned();
    all(db, backend, &select, "read limits")
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
    query::lock_limits(db, backend, &OWN_LIMITS, ids).await
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
    let mut insert = Query::insert();
    insert
        .into_table(OWN_LIMITS.table)
        .columns(LIMIT_COLUMNS[1..].iter().copied())
        .values(values.into_iter().map(Expr::val))
        .map_err(|_| mismatch("add a limit"))?;
    let id = insert_returning_id(
        db,
        backend,
        insert,
        false,
        "add a limit (no id returned)",
        |e| from_db("add a limit", e),
    )
    .await?;
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
    query::delete_limit(db, backend, &OWN_LIMITS, id).await
}

/// What live reservations inside `scope` hold at `now`.
pub(super) async fn held(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<Amounts> {
    let r = RESERVATIONS;
    let mut select = Query::select();
    select
        .expr(sum_int(
            backend,
            Expr::col((RESERVATIONS_TABLE, "requests")),
        ))
        .expr(sum_int(
            backend,
            Expr::col((RESERVATIONS_TABLE, "input_tokens")),
        ))
        .expr(sum_int(
            backend,
            Expr::col((RESERVATIONS_TABLE, "output_tokens")),
        ))
        .expr(sum_int(
            backend,
            Expr::col((RESERVATIONS_TABLE, "cost_micros")),
        ))
        .from(RESERVATIONS_TABLE)
        .and_where(Expr::col((RESERVATIONS_TABLE, "expires_at_us")).gt(us(now)));
    filter_scope(&mut select, scope, &r);
    let Some(row) = one(db, backend, &select, "sum reservations").await? else {
        return Ok(Amounts::default());
    };
    let c = Counts::Checked;
    Ok(Amounts {
        requests: c.read(&row, 0)?,
        input_tokens: c.read(&row, 1)?,
        output_tokens: c.read(&row, 2)?,
        cost: Money::from_micros(c.read(&row, 3)?),
    })
}

/// Deletes reservations that lapsed before `now`.
pub(super) async fn delete_lapsed(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    now: DateTime<Utc>,
) -> Result<u64> {
    let delete = Query::delete()
        .from_table(RESERVATIONS_TABLE)
        .and_where(Expr::col("expires_at_us").lte(us(now)))
        .to_owned();
    exec(db, backend, &delete, "delete lapsed reservations").await
}

/// Holds a reservation.
pub(super) async fn insert_reservation(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    r: &ReservationRecord,
) -> Result<()> {
    let scope = RESERVATIONS;
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
    let mut insert = Query::insert();
    insert
        .into_table(RESERVATIONS_TABLE)
        .columns([
            "id",
            "created_at_us",
            "expires_at_us",
            scope.service.name,
            scope.model.name,
            scope.user.name,
            scope.project.name,
            scope.caller.name,
            scope.key.name,
            "requests",
            "input_tokens",
            "output_tokens",
            "cost_micros",
        ])
        .values(values.into_iter().map(Expr::val))
        .map_err(|_| mismatch("reserve quota"))?;
    exec(db, backend, &insert, "reserve quota").await.map(drop)
}

/// Drops a reservation; whether it was held.
pub(super) async fn delete_reservation(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    id: Uuid,
) -> Result<bool> {
    let delete = Query::delete()
        .from_table(RESERVATIONS_TABLE)
        .and_where(Expr::col("id").eq(id.to_string()))
        .to_owned();
    Ok(exec(db, backend, &delete, "release a reservation").await? > 0)
}

/// Deletes the reservations `ids` (committed together), in statements of at most 500 ids.
pub(super) async fn delete_reservations(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    ids: &[Uuid],
) -> Result<()> {
    for chunk in ids.chunks(500) {
        let delete = Query::delete()
            .from_table(RESERVATIONS_TABLE)
            .and_where(Expr::col("id").is_in(chunk.iter().map(ToString::to_string)))
            .to_owned();
        exec(db, backend, &delete, "commit reservations").await?;
    }
    Ok(())
}

/// Deletes events before `before`; how many.
pub(super) async fn purge_before(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    before: DateTime<Utc>,
) -> Result<u64> {
    let delete = Query::delete()
        .from_table(OWN.table)
        .and_where(Expr::col(OWN.at.name).lt(OWN.time.value(backend, before)))
        .to_owned();
    exec(db, backend, &delete, "purge usage events").await
}
