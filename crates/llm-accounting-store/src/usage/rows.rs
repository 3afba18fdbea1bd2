//! Limits of this project's `quota_limits` to and from values.

use chrono::DateTime;
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{Limit, LimitKind, NewLimit, Scope, Window, WindowUnit};
use sea_orm::{QueryResult, TryGetable, Value};

use super::columns::{Counts, i64_of};

fn get<T: TryGetable>(row: &QueryResult, i: usize) -> Result<T> {
    Counts::Checked.get(row, i)
}

/// A count read back: never negative in a row this store wrote.
fn count(row: &QueryResult, i: usize) -> Result<u64> {
    Counts::Checked.read(row, i)
}

/// The values of a new limit: kind, max, window kind, unit, count, then the scope.
pub(super) fn limit_values(l: &NewLimit) -> Result<Vec<Value>> {
    let (kind, unit, n) = match l.window {
        Window::Fixed { unit, every } => {
            ("fixed", Some(unit.as_str().to_owned()), i64::from(every))
        }
        Window::Rolling { seconds } => ("rolling", None, i64_of(seconds, "window")?),
        Window::RollingMonths { months } => ("rolling-months", None, i64::from(months)),
    };
    let s = &l.scope;
    if s.no_project {
        return Err(Error::invalid(
            "limit",
            "a limit only for calls without a project is held only in the Python \
             llm-accounting package's usage_limits table",
        ));
    }
    // An unlimited limit (an exemption) is stored as -1, as the Python package does.
    let max = if l.max == Limit::UNLIMITED {
        -1
    } else {
        i64_of(l.max, "max")?
    };
    Ok(vec![
        l.kind.as_str().into(),
        max.into(),
        kind.into(),
        unit.into(),
        n.into(),
        s.service.clone().into(),
        s.model.clone().into(),
        s.user.clone().into(),
        s.project.clone().into(),
        s.caller.clone().into(),
        s.key.clone().into(),
    ])
}

/// A limit from `SELECT id, kind, max_value, window_kind, ...` (see `own::LIMIT_COLUMNS`). A row
/// that does not decode (edited by hand) is an integrity error, never a missing limit.
pub(super) fn limit(row: &QueryResult) -> Result<Limit> {
    let id: i64 = get(row, 0)?;
    let broken = |why: &str| Error::invalid("stored limit", format!("limit #{id}: {why}"));
    let kind: LimitKind = get::<String>(row, 1)?
        .parse()
        .map_err(|_| broken("unknown type"))?;
    let max = match get::<i64>(row, 2)? {
        -1 => Limit::UNLIMITED,
        _ => count(row, 2)?,
    };
    let window_kind: String = get(row, 3)?;
    let unit: Option<String> = get(row, 4)?;
    let n: i64 = get(row, 5)?;
    let window = match (window_kind.as_str(), unit) {
        ("fixed", Some(unit)) => Window::fixed(
            unit.parse::<WindowUnit>()
                .map_err(|_| broken("unknown unit"))?,
            u32::try_from(n).map_err(|_| broken("bad window"))?,
        ),
        ("rolling", None) => Window::rolling(u64::try_from(n).map_err(|_| broken("bad window"))?),
        ("rolling-months", None) => {
            Window::rolling_months(u32::try_from(n).map_err(|_| broken("bad window"))?)
        }
        _ => return Err(broken("unknown window")),
    }
    .map_err(|_| broken("bad window"))?;
    let created: i64 = get(row, 12)?;
    Ok(Limit {
        id,
        scope: Scope {
            service: get(row, 6)?,
            model: get(row, 7)?,
            user: get(row, 8)?,
            project: get(row, 9)?,
            caller: get(row, 10)?,
            key: get(row, 11)?,
            no_project: false,
        },
        kind,
        max,
        window,
        created_at: DateTime::from_timestamp_micros(created).unwrap_or_default(),
    })
}
