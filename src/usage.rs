//! Usage accounting, quotas, and quota-gated key hand-out (feature `accounting`, on by
//! default): the types of [`llm_accounting_usage`], re-exported.
//!
//! [`Accounting`] ties a [`UsageStore`] (the key database, or `accounting.database_url`) to a
//! background [`UsageRecorder`] and the enforcement mode of `accounting.enforcement`:
//! `strict` reserves in the database (atomic, no overshoot across processes), `local` against
//! per-process counters ([`LocalQuota`]). [`Accounting::get_key`] checks the quota first and
//! only then decrypts the key; the [`Reservation`] it returns is committed with the call's
//! actual usage, attributed to the key version that served it. [`Accounting::get_keys`] does
//! the same for several keys at once, all or nothing. Build one from settings with
//! a [`crate::Stack`] ([`crate::Stack::accounting`]).

pub use llm_accounting_usage::{
    Accounting, AccountingOptions, Amounts, CallUsage, Denial, Enforcement, GatedKey, GroupBy,
    KeyRef, Limit, LimitKind, LocalQuota, MemoryUsageStore, Money, NewLimit, Period, QuotaDecision,
    QuotaRequest, RecorderOptions, Reservation, ReserveOutcome, Scope, SeriesQuery, SeriesRow,
    StatsQuery, StatsRow, Usage, UsageEvent, UsageRecorder, UsageStore, Window, WindowUnit, series,
};
