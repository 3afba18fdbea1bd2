//! Usage reports: what the accounting holds, as one self-contained HTML page and as JSON.
//!
//! - [`gather`] reads a [`Report`] from a [`UsageStore`](llm_accounting_usage::UsageStore)
//!   (and, for quota denials, a key manager's audit trail): the daily series from the usage
//!   rollups, the totals, the top users, projects and keys, and every limit's current window.
//!   A handful of queries, whatever the number of events.
//! - [`html::page`] draws it: styles and script inline, charts as inline SVG drawn here, so
//!   the page needs no network, renders from `file://` and without JavaScript (the script
//!   only adds tooltips and sorting), follows the reader's light or dark preference, and
//!   prints. Money is exact (from micro-dollars), times are UTC and labelled so.
//! - [`json`] gives the same data for programs (the dashboard's API).
//!
//! `llm-accounting usage report -o report.html` writes a page; `usage serve` and the
//! gateway's `/dashboard` serve it live.

pub mod data;
pub mod html;
pub mod svg;

pub use data::{DayActivity, LimitStatus, Report, ReportQuery, gather};
pub use html::{PageOptions, page};

/// The report as pretty JSON (times RFC 3339, money as exact decimal strings and
/// micro-dollars, as `usage stats --format json` gives them).
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".to_owned())
}
