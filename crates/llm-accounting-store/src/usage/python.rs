//! The Python `llm-accounting` package's tables (`accounting_entries`, `usage_limits`, at
//! alembic head [`PYTHON_SCHEMA_HEAD`]), read and appended to as that package does, never
//! created, migrated or altered. What they cannot hold lives in this project's tables in the
//! same database: reservations (`quota_reservations`) and the service, key and version of the
//! entries written here (`usage_entry_sources`).
//!
//! - Times: naive UTC; on SQLite the text `YYYY-MM-DD HH:MM:SS.ffffff` (the package compares
//!   those strings), on PostgreSQL `timestamp without time zone`.
//! - Money: the package's float dollars are rounded half to even to micro-dollars when read;
//!   written as micro-dollars / 10^6.
//! - Limits: scope `GLOBAL`, `MODEL`, `USER`, `CALLER`, `PROJECT` with the fields `model`,
//!   `username`, `caller_name`, `project_name` (NULL or `*`: any) — every non-empty field must
//!   match, as in the package. `max_value = -1` (unlimited) restricts nothing here (the
//!   package also lets it override less specific limits). Windows `second` ... `week`,
//!   `monthly` (fixed) and `*_rolling`; `monthly_rolling` is read as N × 31 days (the package
//!   starts it on the 1st of the month N months back: ours counts at least as much).
//! - Total tokens are prompt plus completion tokens (the package's own `track_usage` leaves
//!   `total_tokens` at 0, so its own total-tokens limits never count its own entries).

use llm_accounting_core::{Error, Result};
use llm_accounting_usage::UsageEvent;
use sea_orm::sea_query::{Asterisk, Expr, ExprTrait, Func, Query};
use sea_orm::{ConnectionTrait, DbBackend};

use super::columns::{PYTHON, Schema, i64_of};
use super::query::{all, exec, insert_returning_id, mismatch, one};
use crate::error::from_db;

/// The alembic revision of the Python package's schema that this release reads and writes
/// (llm-accounting 0.1.34 on PyPI).
pub const PYTHON_SCHEMA_HEAD: &str = "e5f6c7a8d9b0";

/// Whether the database (PostgreSQL: its current schema) has table `table`.
async fn has_table(db: &impl ConnectionTrait, backend: DbBackend, table: &str) -> Result<bool> {
    let mut select = Query::select();
    select.expr(Func::count(Expr::col(Asterisk)));
    match backend {
        DbBackend::Sqlite => select
            .from("sqlite_master")
            .and_where(Expr::col("type").eq("table"))
            .and_where(Expr::col("name").eq(table)),
        DbBackend::Postgres => select
            .from(("information_schema", "tables"))
            .and_where(Expr::col("table_schema").eq(Func::cust("current_schema")))
            .and_where(Expr::col("table_name").eq(table)),
        _ => select
            .from(("information_schema", "tables"))
            .and_where(Expr::col("table_schema").eq(Func::cust("DATABASE")))
            .and_where(Expr::col("table_name").eq(table)),
    };
    let row = one(db, backend, &select, "inspect the accounting database").await?;
    Ok(match row {
        Some(r) => r.try_get_by_index::<i64>(0).unwrap_or(0) > 0,
        None => false,
    })
}

/// Which schema the database holds: the Python package's when it has `accounting_entries`
/// and `alembic_version`.
///
/// # Errors
///
/// [`Error::Config`] when the package's tables are at another alembic revision than
/// [`PYTHON_SCHEMA_HEAD`].
pub(crate) async fn detect(db: &impl ConnectionTrait, backend: DbBackend) -> Result<Schema> {
    if !has_table(db, backend, "accounting_entries").await?
        || !has_table(db, backend, "alembic_version").await?
    {
        return Ok(Schema::Own);
    }
    let select = Query::select()
        .column("version_num")
        .from("alembic_version")
        .to_owned();
    let rows = all(
        db,
        backend,
        &select,
        "read the Python package's schema version",
    )
    .await?;
    let versions: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get_by_index::<String>(0).ok())
        .collect();
    if versions.iter().map(String::as_str).eq([PYTHON_SCHEMA_HEAD]) {
        return Ok(Schema::Python);
    }
    Err(Error::config(format!(
        "the accounting database holds the Python llm-accounting package's tables at schema \
         version {}, but this release reads and writes only version {PYTHON_SCHEMA_HEAD} \
         (llm-accounting 0.1.34); nothing was changed",
        if versions.is_empty() {
            "(none)".to_owned()
        } else {
            versions.join(", ")
        }
    )))
}

/// Appends events to `accounting_entries` (one row each, as the package's `track_usage`),
/// and their service, key and version to `usage_entry_sources`.
pub(super) async fn insert_events(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &[UsageEvent],
) -> Result<()> {
    let p = &PYTHON;
    let s = &p.scope;
    let entry_columns = [
        p.at.name,
        s.model.name,
        p.prompt_tokens.name,
        p.completion_tokens.name,
        "total_tokens",
        "local_prompt_tokens",
        "local_completion_tokens",
        "local_total_tokens",
        s.project.name,
        p.cost.name,
        p.execution.name,
        s.caller.name,
        s.user.name,
        p.cached_tokens.name,
        p.reasoning_tokens.name,
        p.session.name,
    ];
    // The package's own local-token counts: none for calls tracked here.
    let zero = || Expr::Constant(0i64.into());
    for e in events {
        let mut insert = Query::insert();
        insert
            .into_table(p.table)
            .columns(entry_columns)
            .values([
                Expr::val(p.time.value(backend, e.at)),
                Expr::val(e.model.clone()),
                Expr::val(i64_of(e.prompt_tokens, "prompt tokens")?),
                Expr::val(i64_of(e.completion_tokens, "completion tokens")?),
                Expr::val(i64_of(e.total_tokens(), "total tokens")?),
                zero(),
                zero(),
                zero(),
                Expr::val(e.project.clone()),
                Expr::val(p.money.value(e.cost)?),
                Expr::val(p.elapsed.value(e.execution_time)),
                Expr::val(e.caller.clone()),
                Expr::val(e.user.clone()),
                Expr::val(i64_of(e.cached_tokens, "cached tokens")?),
                Expr::val(i64_of(e.reasoning_tokens, "reasoning tokens")?),
                Expr::val(e.session.clone()),
            ])
            .map_err(|_| mismatch("append to accounting_entries"))?;
        let id = insert_returning_id(
            db,
            backend,
            insert,
            true,
            "append to accounting_entries (no id returned)",
            |e| from_db("append to accounting_entries", e),
        )
        .await?;
        let Some(sources) = p.sources else {
            continue;
        };
        if e.service.is_some() || e.key.is_some() {
            let mut insert = Query::insert();
            insert
                .into_table(sources.table)
                .columns([
                    sources.event.name,
                    s.service.name,
                    s.key.name,
                    p.key_version.name,
                ])
                .values([
                    Expr::val(id),
                    Expr::val(e.service.clone()),
                    Expr::val(e.key.as_ref().map(|k| k.identity.clone())),
                    Expr::val(
                        e.key
                            .as_ref()
                            .map(|k| i32::try_from(k.version).unwrap_or(i32::MAX)),
                    ),
                ])
                .map_err(|_| mismatch("append to usage_entry_sources"))?;
            exec(db, backend, &insert, "append to usage_entry_sources").await?;
        }
    }
    Ok(())
}
