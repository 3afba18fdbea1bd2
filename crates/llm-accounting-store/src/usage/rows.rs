//! Rows of the usage tables to and from values.

use chrono::DateTime;
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{
    Amounts, GroupBy, KeyRef, Limit, LimitKind, Money, NewLimit, Scope, StatsRow, Usage,
    UsageEvent, Window, WindowUnit,
};
use sea_orm::{DbErr, QueryResult, TryGetable, Value};

use super::sql::i64_of;

fn get<T: TryGetable>(row: &QueryResult, i: usize) -> Result<T> {
    row.try_get_by_index::<T>(i)
        .map_err(|e: DbErr| crate::error::from_db("decode a usage row", e))
}

/// A count or sum read back: never negative in a row this store wrote.
fn count(row: &QueryResult, i: usize) -> Result<u64> {
    let n: i64 = get(row, i)?;
    u64::try_from(n).map_err(|_| Error::Integrity { identity: None })
}

/// The values of one event, in the order of the insert's columns.
pub(super) fn event_values(e: &UsageEvent, out: &mut Vec<Value>) -> Result<()> {
    let execution_us = e
        .execution_time
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    out.extend([
        e.at.timestamp_micros().into(),
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
        i64_of(e.cost.micros(), "cost")?.into(),
        execution_us.into(),
    ]);
    Ok(())
}

/// An event from `SELECT at_us, model, service, ...` (see `EVENT_SELECT`).
pub(super) fn event(row: &QueryResult) -> Result<UsageEvent> {
    let at: i64 = get(row, 0)?;
    let mut e = UsageEvent::new(
        get::<String>(row, 1)?,
        DateTime::from_timestamp_micros(at).ok_or(Error::Integrity { identity: None })?,
    );
    e.service = get(row, 2)?;
    e.user = get(row, 3)?;
    e.project = get(row, 4)?;
    e.caller = get(row, 5)?;
    e.session = get(row, 6)?;
    let identity: Option<String> = get(row, 7)?;
    let version: Option<i32> = get(row, 8)?;
    e.key = identity.map(|identity| KeyRef {
        identity,
        version: version.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
    });
    e.prompt_tokens = count(row, 9)?;
    e.completion_tokens = count(row, 10)?;
    e.cached_tokens = count(row, 11)?;
    e.reasoning_tokens = count(row, 12)?;
    e.cost = Money::from_micros(count(row, 13)?);
    let execution_us: Option<i64> = get(row, 14)?;
    e.execution_time = execution_us
        .and_then(|n| u64::try_from(n).ok())
        .map(std::time::Duration::from_micros);
    Ok(e)
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

/// A limit from `SELECT id, kind, max_value, window_kind, ...` (see `LIMIT_COLUMNS`). A row
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

/// Usage from the events row (count, prompt, completion, cost, oldest) and the reservations
/// row (requests, input, output, cost).
pub(super) fn usage(events: Option<&QueryResult>, held: Option<&QueryResult>) -> Result<Usage> {
    let mut u = Usage::default();
    if let Some(r) = events {
        u.amounts = Amounts {
            requests: count(r, 0)?,
            input_tokens: count(r, 1)?,
            output_tokens: count(r, 2)?,
            cost: Money::from_micros(count(r, 3)?),
        };
        let oldest: Option<i64> = get(r, 4)?;
        u.oldest = oldest.and_then(DateTime::from_timestamp_micros);
    }
    if let Some(r) = held {
        u.amounts = u.amounts.plus(Amounts {
            requests: count(r, 0)?,
            input_tokens: count(r, 1)?,
            output_tokens: count(r, 2)?,
            cost: Money::from_micros(count(r, 3)?),
        });
    }
    Ok(u)
}

/// A stats row: the group column(s) for `by`, then count and sums.
pub(super) fn stats_row(row: &QueryResult, by: GroupBy) -> Result<StatsRow> {
    let (group, first) = match by {
        GroupBy::Nothing => (None, 0),
        GroupBy::Key => {
            let identity: Option<String> = get(row, 0)?;
            let version: Option<i32> = get(row, 1)?;
            let group = identity.map(|i| format!("{i} v{}", version.unwrap_or(0)));
            (group, 2)
        }
        _ => (get::<Option<String>>(row, 0)?, 1),
    };
    Ok(StatsRow {
        group,
        requests: count(row, first)?,
        prompt_tokens: count(row, first + 1)?,
        completion_tokens: count(row, first + 2)?,
        cached_tokens: count(row, first + 3)?,
        reasoning_tokens: count(row, first + 4)?,
        cost: Money::from_micros(count(row, first + 5)?),
    })
}
