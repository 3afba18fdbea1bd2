//! Limits in the Python llm-accounting package's `usage_limits` table, as ours (see
//! [`super::python`] for the mapping of scopes, types and windows).

use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{Limit, LimitKind, NewLimit, Scope, Window, WindowUnit};
use sea_orm::sea_query::{Expr, Order, Query};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, TryGetable};

use super::columns::{Counts, PYTHON_LIMITS, Time, as_int, dollars};
use super::query::{self, all, insert_returning_id, mismatch};
use crate::error::{from_db, is_unique_violation};

fn get<T: TryGetable>(row: &QueryResult, i: usize) -> Result<T> {
    Counts::Lenient.get(row, i)
}

/// The package's limits as ours: `max_value = -1` is unlimited (an exemption), a `PROJECT`
/// limit without a project name counts only calls without a project, `monthly_rolling`
/// starts on the first of an earlier month, as the package reads them.
pub(super) async fn limits(db: &impl ConnectionTrait, backend: DbBackend) -> Result<Vec<Limit>> {
    // The package's integers are 32-bit on PostgreSQL, read as 64-bit.
    let select = Query::select()
        .expr(as_int(backend, Expr::col("id")))
        .columns(["scope", "limit_type", "max_value", "interval_unit"])
        .expr(as_int(backend, Expr::col("interval_value")))
        .columns(["model", "username", "caller_name", "project_name"])
        .from(PYTHON_LIMITS.table)
        .order_by("id", Order::Asc)
        .to_owned();
    all(db, backend, &select, "read usage_limits")
        .await?
        .iter()
        .map(limit)
        .collect()
}

fn limit(r: &QueryResult) -> Result<Limit> {
    let id: i64 = get(r, 0)?;
    let broken = |why: String| Error::invalid("usage_limits row", format!("limit #{id}: {why}"));
    let scope_name: String = get(r, 1)?;
    let kind = match get::<String>(r, 2)?.as_str() {
        "requests" => LimitKind::Requests,
        "input_tokens" => LimitKind::InputTokens,
        "output_tokens" => LimitKind::OutputTokens,
        "total_tokens" => LimitKind::TotalTokens,
        "cost" => LimitKind::Cost,
        other => return Err(broken(format!("unknown limit_type `{other}`"))),
    };
    let max_value: f64 = get(r, 3)?;
    #[allow(clippy::float_cmp)] // the package compares with `== -1`
    let max = if max_value == -1.0 {
        Limit::UNLIMITED
    } else {
        match kind {
            // Another negative maximum refuses every call in the package (usage + request >
            // max); a maximum of 0 does here (a spent budget refuses even a zero estimate).
            _ if max_value < 0.0 => 0,
            LimitKind::Cost => dollars(max_value).micros(),
            // Whole units: usage + request must not pass the maximum.
            _ => max_value.floor() as u64,
        }
    };
    let unit: String = get(r, 4)?;
    let n: i64 = get(r, 5)?;
    let n = u32::try_from(n).map_err(|_| broken(format!("interval_value {n}")))?;
    let (base, rolling) = match unit.strip_suffix("_rolling") {
        Some(base) => (base, true),
        None => (unit.as_str(), false),
    };
    let unit_of = |s: &str| -> Result<(WindowUnit, u64)> {
        Ok(match s {
            "second" => (WindowUnit::Second, 1),
            "minute" => (WindowUnit::Minute, 60),
            "hour" => (WindowUnit::Hour, 3_600),
            "day" => (WindowUnit::Day, 86_400),
            "week" => (WindowUnit::Week, 7 * 86_400),
            "monthly" | "month" => (WindowUnit::Month, 0),
            other => return Err(broken(format!("unknown interval_unit `{other}`"))),
        })
    };
    let (unit, seconds) = unit_of(base)?;
    let window = if rolling && unit == WindowUnit::Month {
        Window::rolling_months(n)
    } else if rolling {
        Window::rolling(seconds * u64::from(n))
    } else {
        Window::fixed(unit, n)
    }
    .map_err(|e| broken(e.to_string()))?;
    let named = |v: Option<String>| v.filter(|s| s != "*" && !s.is_empty());
    let mut scope = Scope::global();
    if scope_name != "GLOBAL" {
        scope.model = named(get(r, 6)?);
        scope.user = named(get(r, 7)?);
        scope.caller = named(get(r, 8)?);
        let project: Option<String> = get(r, 9)?;
        // The package: a PROJECT limit with no project name (NULL, not `*`) is for calls
        // without a project, and counts only their usage.
        scope.no_project = scope_name == "PROJECT" && project.is_none();
        scope.project = named(project);
    }
    Ok(Limit {
        id,
        scope,
        kind,
        max,
        window,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
    })
}

/// Locks limit rows (PostgreSQL; SQLite serialises writers already).
pub(super) async fn lock_limits(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    ids: &[i64],
) -> Result<Vec<i64>> {
    query::lock_limits(db, backend, &PYTHON_LIMITS, ids).await
}

/// What the package's `usage_limits` cannot hold of `l`, if anything: such a limit is kept in
/// this project's `quota_limits` instead (the package does not see it).
pub(super) fn cannot_hold(l: &NewLimit) -> Option<&'static str> {
    if l.scope.service.is_some() {
        return Some("a service scope (it has no service column)");
    }
    if l.scope.key.is_some() {
        return Some("a key scope (it has no key column)");
    }
    if interval(l.window).1 > i32::MAX as u32 {
        return Some("a rolling window this long (its interval_value is 32 bits)");
    }
    None
}

/// The package's `interval_unit` and `interval_value` for a window.
fn interval(window: Window) -> (String, u32) {
    match window {
        Window::Fixed { unit, every } => (
            match unit {
                WindowUnit::Month => "monthly".to_owned(),
                other => other.as_str().to_owned(),
            },
            every,
        ),
        Window::RollingMonths { months } => ("monthly_rolling".to_owned(), months),
        Window::Rolling { seconds } => {
            let (name, size) = [
                ("week", 604_800),
                ("day", 86_400),
                ("hour", 3_600),
                ("minute", 60),
            ]
            .into_iter()
            .find(|(_, size)| seconds % size == 0)
            .unwrap_or(("second", 1));
            (
                format!("{name}_rolling"),
                u32::try_from(seconds / size).unwrap_or(u32::MAX),
            )
        }
    }
}

/// Writes a limit the package can express ([`cannot_hold`] is `None`) into `usage_limits`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a limit of the same type and scope that exists already.
pub(super) async fn insert_limit(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    l: &NewLimit,
) -> Result<Limit> {
    let s = &l.scope;
    // The package checks every column of a scope other than GLOBAL; the name matters only
    // for a limit without a project name, which PROJECT makes one for calls without one.
    let scope = if s.no_project {
        "PROJECT"
    } else if s.user.is_some() {
        "USER"
    } else if s.project.is_some() {
        "PROJECT"
    } else if s.caller.is_some() {
        "CALLER"
    } else if s.model.is_some() {
        "MODEL"
    } else {
        "GLOBAL"
    };
    let kind = match l.kind {
        LimitKind::Requests => "requests",
        LimitKind::InputTokens => "input_tokens",
        LimitKind::OutputTokens => "output_tokens",
        LimitKind::TotalTokens => "total_tokens",
        LimitKind::Cost => "cost",
    };
    let (unit, n) = interval(l.window);
    let max = match l.kind {
        _ if l.max == Limit::UNLIMITED => -1.0,
        LimitKind::Cost => l.max as f64 / 1_000_000.0,
        _ => l.max as f64,
    };
    let now = Utc::now();
    let mut insert = Query::insert();
    insert
        .into_table(PYTHON_LIMITS.table)
        .columns([
            "scope",
            "limit_type",
            "max_value",
            "interval_unit",
            "interval_value",
            "model",
            "username",
            "caller_name",
            "project_name",
            "created_at",
            "updated_at",
        ])
        .values([
            Expr::val(scope),
            Expr::val(kind),
            Expr::val(max),
            Expr::val(unit),
            Expr::val(i32::try_from(n).unwrap_or(i32::MAX)),
            Expr::val(s.model.clone()),
            Expr::val(s.user.clone()),
            Expr::val(s.caller.clone()),
            Expr::val(s.project.clone()),
            Expr::val(Time::NaiveUtc.value(backend, now)),
            Expr::val(Time::NaiveUtc.value(backend, now)),
        ])
        .map_err(|_| mismatch("write usage_limits"))?;
    let id = insert_returning_id(
        db,
        backend,
        insert,
        true,
        "write usage_limits (no id returned)",
        |e| {
            if is_unique_violation(&e) {
                Error::invalid(
                    "limit",
                    "the Python package's usage_limits already holds a limit of this type and \
                     scope (delete it first)",
                )
            } else {
                from_db("write usage_limits", e)
            }
        },
    )
    .await?;
    Ok(Limit {
        id,
        scope: l.scope.clone(),
        kind: l.kind,
        max: l.max,
        window: l.window,
        created_at: now,
    })
}

/// Deletes a limit of `usage_limits`.
pub(super) async fn delete_limit(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    id: i64,
) -> Result<bool> {
    query::delete_limit(db, backend, &PYTHON_LIMITS, id).await
}
