//! The usage tables as column maps: which table holds events, limits and reservations in each
//! schema, which column holds each part of them, and how times, money and durations are
//! stored there. The statements of `query.rs` are written once over these maps.
//!
//! - [`OWN`]: this project's `usage_events` (times and money as integer micro-units).
//! - [`PYTHON`]: the Python llm-accounting package's `accounting_entries` `e`, joined with this
//!   project's `usage_entry_sources` `s` for the service and key it has no column for (times
//!   naive UTC, money float dollars, 32-bit integers on PostgreSQL).
//! - [`RESERVATIONS`]: the scope columns of `quota_reservations` (both schemas).
//! - [`OWN_LIMITS`], [`PYTHON_LIMITS`]: the limit tables, for what both schemas do alike.

use chrono::{DateTime, NaiveDateTime, Utc};
use llm_accounting_core::{Error, Result};
use llm_accounting_usage::{MAX_COST, MAX_TOKENS, Money};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{DbBackend, QueryResult, TryGetable, Value};

/// Whose tables hold usage and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// `usage_events` and `quota_limits`.
    Own,
    /// The Python package's `accounting_entries` and `usage_limits`.
    Python,
}

impl Schema {
    /// The events table of this schema.
    pub(super) fn events(self) -> &'static Events {
        match self {
            Schema::Own => &OWN,
            Schema::Python => &PYTHON,
        }
    }
}

/// A column, qualified by its table (or the alias the table is read under).
#[derive(Debug, Clone, Copy)]
pub(super) struct Col {
    /// The table or its alias.
    pub(super) table: &'static str,
    /// The column's name.
    pub(super) name: &'static str,
}

impl Col {
    const fn of(table: &'static str, name: &'static str) -> Self {
        Col { table, name }
    }

    /// The column as an expression, `table.name`.
    pub(super) fn expr(self) -> Expr {
        Expr::col((self.table, self.name))
    }
}

/// The columns of a scope's parts.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScopeColumns {
    /// The service (provider) name.
    pub(super) service: Col,
    /// The model.
    pub(super) model: Col,
    /// The user.
    pub(super) user: Col,
    /// The project.
    pub(super) project: Col,
    /// The caller.
    pub(super) caller: Col,
    /// The key identity.
    pub(super) key: Col,
}

impl ScopeColumns {
    /// The columns in the order of [`llm_accounting_usage::Scope::parts`].
    pub(super) fn in_order(&self) -> [Col; 6] {
        [
            self.service,
            self.model,
            self.user,
            self.project,
            self.caller,
            self.key,
        ]
    }
}

/// How a table stores a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Time {
    /// Microseconds since the epoch, a 64-bit integer.
    Micros,
    /// Naive UTC: on SQLite the text `YYYY-MM-DD HH:MM:SS.ffffff` (compared as strings), on
    /// the servers `timestamp without time zone`.
    NaiveUtc,
}

impl Time {
    /// `t` as stored.
    pub(super) fn value(self, backend: DbBackend, t: DateTime<Utc>) -> Value {
        match self {
            Time::Micros => t.timestamp_micros().into(),
            Time::NaiveUtc => {
                let naive = t.naive_utc();
                match backend {
                    DbBackend::Sqlite => naive.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into(),
                    _ => naive.into(),
                }
            }
        }
    }

    /// Column `i` of `row` read back (NULL: `None`).
    pub(super) fn read(
        self,
        row: &QueryResult,
        i: usize,
        backend: DbBackend,
    ) -> Result<Option<DateTime<Utc>>> {
        match (self, backend) {
            (Time::Micros, _) => match decode::<Option<i64>>(row, i, "decode a time")? {
                None => Ok(None),
                Some(us) => DateTime::from_timestamp_micros(us)
                    .map(Some)
                    .ok_or(Error::Integrity { identity: None }),
            },
            (Time::NaiveUtc, DbBackend::Sqlite) => {
                let text: Option<String> = decode(row, i, "decode a time")?;
                text.map(|text| naive_text(&text)).transpose()
            }
            (Time::NaiveUtc, _) => {
                let t: Option<NaiveDateTime> = decode(row, i, "decode a time")?;
                Ok(t.map(|t| t.and_utc()))
            }
        }
    }
}

/// A time stored as text, in either of the Python package's formats.
fn naive_text(text: &str) -> Result<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)))
        .or_else(|_| {
            DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%:z").map(|t| t.with_timezone(&Utc))
        })
        .map_err(|_| Error::invalid("stored time", format!("`{text}` is not a time")))
}

/// How a table stores money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cost {
    /// Micro-dollars, a 64-bit integer.
    Micros,
    /// Float dollars: rounded half to even to micro-dollars when read (negative: 0), written
    /// as micro-dollars / 10^6 (the nearest double, read back exactly).
    Dollars,
}

impl Cost {
    /// `SUM(column)`, 0 when there are no rows: a 64-bit integer, or a float for dollars.
    pub(super) fn sum(self, backend: DbBackend, column: Expr) -> Expr {
        match self {
            Cost::Micros => sum_int(backend, column),
            Cost::Dollars => Func::coalesce([Func::sum(column).into(), Expr::cust("0.0")]).into(),
        }
    }

    /// Column `i` of `row` (a cost or a sum of costs) read back.
    pub(super) fn read(self, row: &QueryResult, i: usize, counts: Counts) -> Result<Money> {
        match self {
            Cost::Micros => counts.read(row, i).map(Money::from_micros),
            Cost::Dollars => decode::<f64>(row, i, counts.op()).map(dollars),
        }
    }

    /// `money` as stored.
    pub(super) fn value(self, money: Money) -> Result<Value> {
        Ok(match self {
            Cost::Micros => i64_of(money.micros(), "cost")?.into(),
            Cost::Dollars => (money.micros() as f64 / 1_000_000.0).into(),
        })
    }
}

/// A float of dollars as money (negative: 0).
pub(super) fn dollars(f: f64) -> Money {
    Money::from_f64(f.max(0.0)).unwrap_or(Money::ZERO)
}

/// How a table stores how long a call took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Elapsed {
    /// Microseconds, NULL when unknown.
    Micros,
    /// Float seconds, 0 when unknown.
    Seconds,
}

impl Elapsed {
    /// Column `i` of `row` read back.
    pub(super) fn read(
        self,
        row: &QueryResult,
        i: usize,
        op: &'static str,
    ) -> Result<Option<std::time::Duration>> {
        Ok(match self {
            Elapsed::Micros => decode::<Option<i64>>(row, i, op)?
                .and_then(|n| u64::try_from(n).ok())
                .map(std::time::Duration::from_micros),
            Elapsed::Seconds => {
                let secs: f64 = decode(row, i, op)?;
                (secs > 0.0)
                    .then(|| std::time::Duration::try_from_secs_f64(secs).ok())
                    .flatten()
            }
        })
    }

    /// `d` as stored.
    pub(super) fn value(self, d: Option<std::time::Duration>) -> Value {
        match self {
            Elapsed::Micros => d
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .into(),
            Elapsed::Seconds => d.map_or(0.0, |d| d.as_secs_f64()).into(),
        }
    }
}

/// How counts and sums read back are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counts {
    /// Written by this store: never NULL or negative, else the row is an integrity error.
    Checked,
    /// Written by another program: NULL or negative counts as 0.
    Lenient,
}

impl Counts {
    /// The operation named when a row does not decode.
    pub(super) fn op(self) -> &'static str {
        match self {
            Counts::Checked => "decode a usage row",
            Counts::Lenient => "decode a row of the Python package",
        }
    }

    /// Column `i` of `row`, a count or sum.
    pub(super) fn read(self, row: &QueryResult, i: usize) -> Result<u64> {
        match self {
            Counts::Checked => {
                let n: i64 = decode(row, i, self.op())?;
                u64::try_from(n).map_err(|_| Error::Integrity { identity: None })
            }
            Counts::Lenient => Ok(decode::<Option<i64>>(row, i, self.op())?
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)),
        }
    }

    /// Column `i` of `row`, any other value.
    pub(super) fn get<T: TryGetable>(self, row: &QueryResult, i: usize) -> Result<T> {
        decode(row, i, self.op())
    }
}

/// Column `i` of `row`; a failure is a database error named `op`.
pub(super) fn decode<T: TryGetable>(row: &QueryResult, i: usize, op: &'static str) -> Result<T> {
    row.try_get_by_index::<T>(i)
        .map_err(|e| crate::error::from_db(op, e))
}

/// `n` as a signed 64-bit column value.
pub(super) fn i64_of(n: u64, field: &'static str) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid(field, "too large"))
}

/// The 64-bit integer type of a `CAST` (MySQL has no `BIGINT` there).
pub(super) fn int_type(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "SIGNED",
        _ => "BIGINT",
    }
}

/// `CAST(e AS BIGINT)`: a 64-bit integer.
pub(super) fn as_int(backend: DbBackend, e: Expr) -> Expr {
    Func::cast_as(e, int_type(backend)).into()
}

/// `SUM(e)` as a 64-bit integer, 0 when there are no rows.
pub(super) fn sum_int(backend: DbBackend, e: Expr) -> Expr {
    as_int(
        backend,
        Func::coalesce([Func::sum(e).into(), Expr::Constant(0i64.into())]).into(),
    )
}

/// A table joined to the events table for parts of an event it has no column for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Join {
    /// The joined table.
    pub(super) table: &'static str,
    /// The alias it is read under.
    pub(super) alias: &'static str,
    /// Its column that names the event.
    pub(super) event: Col,
}

/// A table of usage events, and where each part of an event lives.
#[derive(Debug, Clone, Copy)]
pub(super) struct Events {
    /// The table.
    pub(super) table: &'static str,
    /// The alias it is read under (the table's name: no alias).
    pub(super) alias: &'static str,
    /// The table joined (LEFT JOIN, on [`Join::event`] = [`Events::id`]) for the parts the
    /// events table lacks.
    pub(super) sources: Option<Join>,
    /// The events' id (their order of insertion).
    pub(super) id: Col,
    /// When the call was made.
    pub(super) at: Col,
    /// How [`Events::at`] is stored.
    pub(super) time: Time,
    /// The scope's parts.
    pub(super) scope: ScopeColumns,
    /// The session.
    pub(super) session: Col,
    /// The key's version.
    pub(super) key_version: Col,
    /// Prompt (input) tokens.
    pub(super) prompt_tokens: Col,
    /// Completion (output) tokens.
    pub(super) completion_tokens: Col,
    /// Cached tokens.
    pub(super) cached_tokens: Col,
    /// Reasoning tokens.
    pub(super) reasoning_tokens: Col,
    /// The cost.
    pub(super) cost: Col,
    /// How [`Events::cost`] is stored.
    pub(super) money: Cost,
    /// How long the call took.
    pub(super) execution: Col,
    /// How [`Events::execution`] is stored.
    pub(super) elapsed: Elapsed,
    /// Whether its integer columns may be 32-bit (read through `CAST(... AS BIGINT)`).
    pub(super) narrow_ints: bool,
    /// How counts read back are trusted.
    pub(super) counts: Counts,
    /// The operations named in errors: summing usage, statistics, reading events.
    pub(super) ops: [&'static str; 3],
}

impl Events {
    /// `SUM(column)` of a count of tokens, a 64-bit integer; the rows of another program
    /// each bounded to `0..=`[`MAX_TOKENS`] first, so that no sum overflows.
    pub(super) fn sum_tokens(&self, backend: DbBackend, column: Col) -> Expr {
        match self.counts {
            Counts::Checked => sum_int(backend, column.expr()),
            Counts::Lenient => sum_int(backend, bounded(column.expr(), &MAX_TOKENS.to_string())),
        }
    }

    /// `SUM(cost)`, each row of another program bounded to `0..=`[`MAX_COST`] first.
    pub(super) fn sum_cost(&self, backend: DbBackend) -> Expr {
        match (self.counts, self.money) {
            (Counts::Lenient, Cost::Dollars) => {
                let max = format!("{}.0", MAX_COST.micros() / 1_000_000);
                self.money.sum(backend, bounded(self.cost.expr(), &max))
            }
            _ => self.money.sum(backend, self.cost.expr()),
        }
    }
}

/// `CASE WHEN e > max THEN max WHEN e < 0 THEN 0 ELSE e END` (NULL stays NULL), `max` a
/// literal of the column's type written into the statement.
fn bounded(e: Expr, max: &str) -> Expr {
    Expr::case(
        e.clone().gt(Expr::cust(max.to_owned())),
        Expr::cust(max.to_owned()),
    )
    .case(e.clone().lt(Expr::cust("0")), Expr::cust("0"))
    .finally(e)
    .into()
}

const fn own(name: &'static str) -> Col {
    Col::of("usage_events", name)
}

/// This project's `usage_events`.
pub(super) const OWN: Events = Events {
    table: "usage_events",
    alias: "usage_events",
    sources: None,
    id: own("id"),
    at: own("at_us"),
    time: Time::Micros,
    scope: ScopeColumns {
        service: own("service"),
        model: own("model"),
        user: own("user_id"),
        project: own("project"),
        caller: own("caller"),
        key: own("key_identity"),
    },
    session: own("session"),
    key_version: own("key_version"),
    prompt_tokens: own("prompt_tokens"),
    completion_tokens: own("completion_tokens"),
    cached_tokens: own("cached_tokens"),
    reasoning_tokens: own("reasoning_tokens"),
    cost: own("cost_micros"),
    money: Cost::Micros,
    execution: own("execution_us"),
    elapsed: Elapsed::Micros,
    narrow_ints: false,
    counts: Counts::Checked,
    ops: ["sum usage", "summarise usage", "read usage events"],
};

const fn entry(name: &'static str) -> Col {
    Col::of("e", name)
}

const fn source(name: &'static str) -> Col {
    Col::of("s", name)
}

/// The Python package's `accounting_entries` `e`, with this project's `usage_entry_sources`
/// `s` for the service and key.
pub(super) const PYTHON: Events = Events {
    table: "accounting_entries",
    alias: "e",
    sources: Some(Join {
        table: "usage_entry_sources",
        alias: "s",
        event: source("entry_id"),
    }),
    id: entry("id"),
    at: entry("timestamp"),
    time: Time::NaiveUtc,
    scope: ScopeColumns {
        service: source("service"),
        model: entry("model"),
        user: entry("username"),
        project: entry("project"),
        caller: entry("caller_name"),
        key: source("key_identity"),
    },
    session: entry("session"),
    key_version: source("key_version"),
    prompt_tokens: entry("prompt_tokens"),
    completion_tokens: entry("completion_tokens"),
    cached_tokens: entry("cached_tokens"),
    reasoning_tokens: entry("reasoning_tokens"),
    cost: entry("cost"),
    money: Cost::Dollars,
    execution: entry("execution_time"),
    elapsed: Elapsed::Seconds,
    narrow_ints: true,
    counts: Counts::Lenient,
    ops: [
        "sum accounting_entries",
        "summarise accounting_entries",
        "read accounting_entries",
    ],
};

/// This project's table of reservations (both schemas).
pub(super) const RESERVATIONS_TABLE: &str = "quota_reservations";

const fn held(name: &'static str) -> Col {
    Col::of(RESERVATIONS_TABLE, name)
}

/// The scope columns of `quota_reservations`.
pub(super) const RESERVATIONS: ScopeColumns = ScopeColumns {
    service: held("service"),
    model: held("model"),
    user: held("user_id"),
    project: held("project"),
    caller: held("caller"),
    key: held("key_identity"),
};

/// A table of limits, for the statements both schemas share.
#[derive(Debug, Clone, Copy)]
pub(super) struct LimitTable {
    /// The table.
    pub(super) table: &'static str,
    /// Whether its ids may be 32-bit (read through `CAST(id AS BIGINT)`).
    pub(super) narrow_ids: bool,
    /// The operations named in errors: locking, deleting.
    pub(super) ops: [&'static str; 2],
}

/// This project's `quota_limits`.
pub(super) const OWN_LIMITS: LimitTable = LimitTable {
    table: "quota_limits",
    narrow_ids: false,
    ops: ["lock limits", "delete a limit"],
};

/// The Python package's `usage_limits`.
pub(super) const PYTHON_LIMITS: LimitTable = LimitTable {
    table: "usage_limits",
    narrow_ids: true,
    ops: ["lock limits", "delete from usage_limits"],
};
