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

use chrono::{DateTime, NaiveDateTime, Utc};
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{
    Amounts, GroupBy, KeyRef, Money, Scope, StatsQuery, StatsRow, Usage, UsageEvent, rank,
};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Value};

use super::sql::{self, i64_of};
use crate::error::from_db;

/// The alembic revision of the Python package's schema that this release reads and writes
/// (llm-accounting 0.1.34 on PyPI).
pub const PYTHON_SCHEMA_HEAD: &str = "e5f6c7a8d9b0";

/// Whose tables hold usage and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// `usage_events` and `quota_limits`.
    Own,
    /// The Python package's `accounting_entries` and `usage_limits`.
    Python,
}

async fn has_table(db: &impl ConnectionTrait, backend: DbBackend, table: &str) -> Result<bool> {
    let sql = match backend {
        DbBackend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        DbBackend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = ?"
        }
        _ => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
    };
    let row = db
        .query_one_raw(sql::stmt(backend, sql, vec![table.into()]))
        .await
        .map_err(|e| from_db("inspect the accounting database", e))?;
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
    let rows = db
        .query_all_raw(sql::stmt(
            backend,
            "SELECT version_num FROM alembic_version",
            vec![],
        ))
        .await
        .map_err(|e| from_db("read the Python package's schema version", e))?;
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

/// A time as the package stores it.
pub(super) fn ts(backend: DbBackend, t: DateTime<Utc>) -> Value {
    let naive = t.naive_utc();
    match backend {
        DbBackend::Sqlite => naive.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into(),
        _ => naive.into(),
    }
}

/// A time read back (text on SQLite, in either of the package's formats).
fn read_ts(row: &QueryResult, i: usize, backend: DbBackend) -> Result<Option<DateTime<Utc>>> {
    if backend != DbBackend::Sqlite {
        let t: Option<NaiveDateTime> = row
            .try_get_by_index(i)
            .map_err(|e| from_db("decode a time", e))?;
        return Ok(t.map(|t| t.and_utc()));
    }
    let text: Option<String> = row
        .try_get_by_index(i)
        .map_err(|e| from_db("decode a time", e))?;
    let Some(text) = text else { return Ok(None) };
    let t = NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)))
        .or_else(|_| {
            DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%:z")
                .map(|t| t.with_timezone(&Utc))
        })
        .map_err(|_| Error::invalid("stored time", format!("`{text}` is not a time")))?;
    Ok(Some(t))
}

pub(super) fn get<T: sea_orm::TryGetable>(row: &QueryResult, i: usize) -> Result<T> {
    row.try_get_by_index::<T>(i)
        .map_err(|e| from_db("decode a row of the Python package", e))
}

/// A float of dollars as money (negative: 0).
pub(super) fn dollars(f: f64) -> Money {
    Money::from_f64(f.max(0.0)).unwrap_or(Money::ZERO)
}

fn nonneg(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// Appends events to `accounting_entries` (one row each, as the package's `track_usage`),
/// and their service, key and version to `usage_entry_sources`.
pub(super) async fn insert_events(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    events: &[UsageEvent],
) -> Result<()> {
    let insert = "INSERT INTO accounting_entries (timestamp, model, prompt_tokens, \
                  completion_tokens, total_tokens, local_prompt_tokens, local_completion_tokens, \
                  local_total_tokens, project, cost, execution_time, caller_name, username, \
                  cached_tokens, reasoning_tokens, session) VALUES \
                  (?, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING CAST(id AS BIGINT)";
    for e in events {
        let values: Vec<Value> = vec![
            ts(backend, e.at),
            e.model.clone().into(),
            i64_of(e.prompt_tokens, "prompt tokens")?.into(),
            i64_of(e.completion_tokens, "completion tokens")?.into(),
            i64_of(e.total_tokens(), "total tokens")?.into(),
            e.project.clone().into(),
            // Micro-dollars to float dollars: the nearest double, read back exactly.
            (e.cost.micros() as f64 / 1_000_000.0).into(),
            e.execution_time.map_or(0.0, |d| d.as_secs_f64()).into(),
            e.caller.clone().into(),
            e.user.clone().into(),
            i64_of(e.cached_tokens, "cached tokens")?.into(),
            i64_of(e.reasoning_tokens, "reasoning tokens")?.into(),
            e.session.clone().into(),
        ];
        let row = db
            .query_one_raw(sql::stmt(backend, insert, values))
            .await
            .map_err(|e| from_db("append to accounting_entries", e))?
            .ok_or(Error::Database {
                operation: "append to accounting_entries (no id returned)",
                source: None,
            })?;
        let id: i64 = get(&row, 0)?;
        if e.service.is_some() || e.key.is_some() {
            let values: Vec<Value> = vec![
                id.into(),
                e.service.clone().into(),
                e.key.as_ref().map(|k| k.identity.clone()).into(),
                e.key
                    .as_ref()
                    .map(|k| i32::try_from(k.version).unwrap_or(i32::MAX))
                    .into(),
            ];
            db.execute_raw(sql::stmt(
                backend,
                "INSERT INTO usage_entry_sources (entry_id, service, key_identity, key_version) \
                 VALUES (?, ?, ?, ?)",
                values,
            ))
            .await
            .map_err(|e| from_db("append to usage_entry_sources", e))?;
        }
    }
    Ok(())
}

/// The columns of entries `e` joined with sources `s` for the parts of a scope, in the order
/// of [`Scope::parts`].
const SCOPE_COLUMNS: [&str; 6] = [
    "s.service",
    "e.model",
    "e.username",
    "e.project",
    "e.caller_name",
    "s.key_identity",
];

const FROM: &str = "FROM accounting_entries e LEFT JOIN usage_entry_sources s ON s.entry_id = e.id";

/// Usage of `scope` in `[since, until)` from `accounting_entries`.
pub(super) async fn usage(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    scope: &Scope,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Usage> {
    let mut q = format!(
        "SELECT COUNT(*), {}, {}, COALESCE(SUM(e.cost), 0.0), MIN(e.timestamp) {FROM} \
         WHERE e.timestamp >= ? AND e.timestamp < ?",
        sql::sum(backend, "e.prompt_tokens"),
        sql::sum(backend, "e.completion_tokens"),
    );
    let mut values = vec![ts(backend, since), ts(backend, until)];
    sql::filter_scope(scope, SCOPE_COLUMNS, &mut q, &mut values);
    let row = db
        .query_one_raw(sql::stmt(backend, &q, values))
        .await
        .map_err(|e| from_db("sum accounting_entries", e))?;
    let Some(r) = row else {
        return Ok(Usage::default());
    };
    Ok(Usage {
        amounts: Amounts {
            requests: nonneg(get(&r, 0)?),
            input_tokens: nonneg(get(&r, 1)?),
            output_tokens: nonneg(get(&r, 2)?),
            cost: dollars(get::<f64>(&r, 3)?),
        },
        oldest: read_ts(&r, 4, backend)?,
    })
}

/// Totals per group from `accounting_entries`.
pub(super) async fn stats(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    q: &StatsQuery,
) -> Result<Vec<StatsRow>> {
    let group = match q.by {
        GroupBy::Nothing => None,
        GroupBy::Model => Some("e.model"),
        GroupBy::Service => Some("s.service"),
        GroupBy::User => Some("e.username"),
        GroupBy::Project => Some("e.project"),
        GroupBy::Caller => Some("e.caller_name"),
        GroupBy::Key => Some("s.key_identity, s.key_version"),
    };
    let mut text = format!(
        "SELECT {}COUNT(*), {}, {}, {}, {}, COALESCE(SUM(e.cost), 0.0) {FROM} WHERE 1 = 1",
        group.map(|g| format!("{g}, ")).unwrap_or_default(),
        sql::sum(backend, "e.prompt_tokens"),
        sql::sum(backend, "e.completion_tokens"),
        sql::sum(backend, "e.cached_tokens"),
        sql::sum(backend, "e.reasoning_tokens"),
    );
    let mut values = Vec::new();
    if let Some(t) = q.since {
        text.push_str(" AND e.timestamp >= ?");
        values.push(ts(backend, t));
    }
    if let Some(t) = q.until {
        text.push_str(" AND e.timestamp < ?");
        values.push(ts(backend, t));
    }
    if let Some(g) = group {
        text.push_str(" GROUP BY ");
        text.push_str(g);
    }
    let rows = db
        .query_all_raw(sql::stmt(backend, &text, values))
        .await
        .map_err(|e| from_db("summarise accounting_entries", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let (group, first) = match q.by {
            GroupBy::Nothing => (None, 0),
            GroupBy::Key => {
                let identity: Option<String> = get(r, 0)?;
                let version: Option<i32> = get(r, 1)?;
                (
                    identity.map(|i| format!("{i} v{}", version.unwrap_or(0))),
                    2,
                )
            }
            _ => (get::<Option<String>>(r, 0)?, 1),
        };
        out.push(StatsRow {
            group,
            requests: nonneg(get(r, first)?),
            prompt_tokens: nonneg(get(r, first + 1)?),
            completion_tokens: nonneg(get(r, first + 2)?),
            cached_tokens: nonneg(get(r, first + 3)?),
            reasoning_tokens: nonneg(get(r, first + 4)?),
            cost: dollars(get::<f64>(r, first + 5)?),
        });
    }
    rank(&mut out, q.top);
    Ok(out)
}

/// The last `n` entries, newest first.
pub(super) async fn tail(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    n: usize,
) -> Result<Vec<UsageEvent>> {
    let q = format!(
        "SELECT e.timestamp, e.model, s.service, e.username, e.project, e.caller_name, e.session, \
         s.key_identity, s.key_version, CAST(e.prompt_tokens AS BIGINT), \
         CAST(e.completion_tokens AS BIGINT), CAST(e.cached_tokens AS BIGINT), \
         CAST(e.reasoning_tokens AS BIGINT), e.cost, e.execution_time {FROM} \
         ORDER BY e.timestamp DESC, e.id DESC LIMIT ?"
    );
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let rows = db
        .query_all_raw(sql::stmt(backend, &q, vec![n.into()]))
        .await
        .map_err(|e| from_db("read accounting_entries", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let at = read_ts(r, 0, backend)?.unwrap_or_default();
        let mut e = UsageEvent::new(get::<String>(r, 1)?, at);
        e.service = get(r, 2)?;
        e.user = get(r, 3)?;
        e.project = get(r, 4)?;
        e.caller = get(r, 5)?;
        e.session = get(r, 6)?;
        let identity: Option<String> = get(r, 7)?;
        let version: Option<i32> = get(r, 8)?;
        e.key = identity.map(|identity| KeyRef {
            identity,
            version: version.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        });
        e.prompt_tokens = nonneg(get(r, 9)?);
        e.completion_tokens = nonneg(get(r, 10)?);
        e.cached_tokens = nonneg(get(r, 11)?);
        e.reasoning_tokens = nonneg(get(r, 12)?);
        e.cost = dollars(get::<f64>(r, 13)?);
        let secs: f64 = get(r, 14)?;
        e.execution_time = (secs > 0.0)
            .then(|| std::time::Duration::try_from_secs_f64(secs).ok())
            .flatten();
        out.push(e);
    }
    Ok(out)
}
