//! `usage track|stats|tail|purge`.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets};
use llm_accounting::Result;
use llm_accounting::usage::{
    GroupBy, Money, Period, SeriesQuery, SeriesRow, StatsQuery, StatsRow, UsageEvent, series,
};
use llm_accounting_report::data::RowJson;
use serde::Serialize;

use super::{Context, args};
use crate::chart::{self, Measure};
use crate::format::Format;
use crate::{escape, output};

/// `usage` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum UsageCommand {
    /// Record the usage of one call.
    Track(TrackArgs),
    /// Totals for a period, grouped; with --period, a time series (--chart: as bars).
    Stats(StatsArgs),
    /// The last events, newest first.
    Tail(TailArgs),
    /// Delete events before a time.
    Purge(PurgeArgs),
    /// Write a usage report: one self-contained HTML page with charts (`-o report.html`).
    Report(super::report::ReportArgs),
    /// Serve the usage dashboard (the report, live) behind the admin token.
    Serve(super::report::ServeArgs),
}

/// Arguments of `usage track`.
#[derive(Debug, Args)]
#[command(mut_arg("user", |a| a.help("Who made the call")))]
pub(crate) struct TrackArgs {
    /// The model called.
    #[arg(long, value_name = "M")]
    model: String,
    /// Who made the call, through what, for what.
    #[command(flatten)]
    scope: args::ScopeArgs,
    /// A session id.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Prompt (input) tokens.
    #[arg(long, value_name = "N", default_value_t = 0)]
    prompt_tokens: u64,
    /// Completion (output) tokens.
    #[arg(long, value_name = "N", default_value_t = 0)]
    completion_tokens: u64,
    /// Cached prompt tokens.
    #[arg(long, value_name = "N", default_value_t = 0)]
    cached_tokens: u64,
    /// Reasoning tokens.
    #[arg(long, value_name = "N", default_value_t = 0)]
    reasoning_tokens: u64,
    /// Cost in US dollars, exact (`0.0125` is $0.0125).
    #[arg(long, value_name = "DECIMAL", value_parser = args::money, allow_negative_numbers = true)]
    cost: Option<Money>,
    /// How long the call took, in seconds (`1.5`).
    #[arg(long, value_name = "SECS", value_parser = args::seconds)]
    execution_time: Option<std::time::Duration>,
    /// When the call was made (RFC 3339, a date, or a duration back: `5m`); default now.
    #[arg(long, value_name = "TIME", value_parser = args::time)]
    at: Option<DateTime<Utc>>,
}

/// Arguments of `usage stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// From this time (inclusive): RFC 3339, a date, or a duration back (`30d`).
    #[arg(long, value_name = "T", value_parser = args::time)]
    since: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    #[arg(long, value_name = "T", value_parser = args::time)]
    until: Option<DateTime<Utc>>,
    /// Group the totals (default: one total).
    #[arg(long, value_enum, value_name = "WHAT")]
    by: Option<GroupBy>,
    /// Only the N groups with the highest cost (with --period: over the whole range, the
    /// others summed as `(other)`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    top: Option<u64>,
    /// A time series: totals per hour, day, week (from Monday), month or year, in UTC.
    /// Without --since: the last 24 hours, 30 days, 12 weeks, 12 months or 5 years.
    #[arg(long, value_enum, value_name = "P")]
    period: Option<Period>,
    /// Draw the series as bars, one line per period (stacked by --by), within the terminal's
    /// width; plain ASCII into a pipe or a file or with NO_COLOR set.
    #[arg(long, requires = "period", conflicts_with = "format")]
    chart: bool,
    /// What the chart's bars measure.
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = Measure::Cost, requires = "chart")]
    measure: Measure,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Arguments of `usage tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// How many events.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10)]
    n: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Arguments of `usage purge`.
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Delete events before this time (RFC 3339, a date, or a duration back: `90d`).
    #[arg(long, value_name = "T", value_parser = args::time)]
    before: DateTime<Utc>,
}

/// Runs a `usage` subcommand.
pub(super) async fn run(ctx: &Context, command: UsageCommand) -> Result<()> {
    match command {
        UsageCommand::Track(a) => track(ctx, a).await,
        UsageCommand::Stats(a) => stats(ctx, &a).await,
        UsageCommand::Tail(a) => tail(ctx, &a).await,
        UsageCommand::Purge(a) => purge(ctx, &a).await,
        UsageCommand::Report(a) => super::report::report(ctx, &a).await,
        UsageCommand::Serve(a) => super::report::serve(ctx, a).await,
    }
}

async fn track(ctx: &Context, a: TrackArgs) -> Result<()> {
    let mut e = UsageEvent::new(a.model, a.at.unwrap_or_else(Utc::now));
    e.service = a.scope.service;
    e.user = a.scope.user;
    e.project = a.scope.project;
    e.caller = a.scope.caller;
    e.session = a.session;
    e.prompt_tokens = a.prompt_tokens;
    e.completion_tokens = a.completion_tokens;
    e.cached_tokens = a.cached_tokens;
    e.reasoning_tokens = a.reasoning_tokens;
    e.cost = a.cost.unwrap_or_default();
    e.execution_time = a.execution_time;
    // Checked before the database is opened: bad input records nothing.
    e.validate()?;
    let said = format!(
        "recorded {} ({} + {} tokens, ${})",
        escape::text(&e.model),
        e.prompt_tokens,
        e.completion_tokens,
        e.cost
    );
    let accounting = ctx.accounting().await?;
    let result = accounting.record(e).await;
    // The shutdown writes the event: its error is the command's.
    super::finish_accounting(&accounting, result).await?;
    ctx.say(&said);
    Ok(())
}

async fn stats(ctx: &Context, a: &StatsArgs) -> Result<()> {
    crate::print::use_csv(a.format == Format::Csv);
    let by = a.by.unwrap_or(GroupBy::Nothing);
    if let Some(period) = a.period {
        return series(ctx, a, period, by).await;
    }
    let query = StatsQuery {
        since: a.since,
        until: a.until,
        by,
        top: a.top.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let accounting = ctx.accounting().await?;
    let result = accounting.store().stats(&query).await;
    let rows = super::finish_accounting(&accounting, result).await?;
    let text = match a.format {
        Format::Json => json_rows(&rows),
        Format::Table | Format::Csv => stats_table(&rows, by),
    };
    println!("{text}");
    Ok(())
}

/// `usage stats --period P`: the series as a table, JSON, CSV or a chart.
async fn series(ctx: &Context, a: &StatsArgs, period: Period, by: GroupBy) -> Result<()> {
    let now = Utc::now();
    let until = a.until.unwrap_or(now);
    let since = a.since.unwrap_or_else(|| period.default_span(until));
    args::since_before_until(since, until)?;
    let query = SeriesQuery {
        since,
        until,
        period,
        by,
    };
    // Checked before the database is opened.
    let spans = query.spans()?;
    let accounting = ctx.accounting().await?;
    let result = accounting.store().series(&query).await;
    let mut points = super::finish_accounting(&accounting, result).await?;
    if let Some(n) = a.top {
        points = series::keep_top(points, usize::try_from(n).unwrap_or(usize::MAX));
    }
    let range = format!(
        "{} to {}",
        output::timestamp(&since),
        output::timestamp(&until)
    );
    if a.chart {
        if points.is_empty() {
            ctx.say(&format!("no usage from {range}"));
            return Ok(());
        }
        let starts: Vec<DateTime<Utc>> = spans.iter().map(|s| s.start).collect();
        let text = chart::render(period, &starts, &points, a.measure, chart::Style::detect());
        return crate::print::print(&text, "writing the chart");
    }
    if points.is_empty() && a.format == Format::Table {
        ctx.say(&format!("no usage from {range}"));
        return Ok(());
    }
    let text = match a.format {
        Format::Json => {
            let rows: Vec<PointJson<'_>> = points
                .iter()
                .map(|p| PointJson {
                    start: output::timestamp(&p.start),
                    period: period.as_str(),
                    row: RowJson::of(&p.totals),
                })
                .collect();
            escape::json(serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned()))
        }
        Format::Table => series_table(&points, by, |s| chart::label(period, s)),
        Format::Csv => series_table(&points, by, |s| output::timestamp(&s)),
    };
    println!("{text}");
    Ok(())
}

/// One point of a series in JSON: the period's start (RFC 3339, UTC) and its totals.
#[derive(Serialize)]
struct PointJson<'a> {
    start: String,
    period: &'static str,
    #[serde(flatten)]
    row: RowJson<'a>,
}

/// A series as a table: the period, the group when grouped, the totals.
fn series_table(
    points: &[SeriesRow],
    by: GroupBy,
    start: impl Fn(DateTime<Utc>) -> String,
) -> String {
    let rows: Vec<StatsRow> = points.iter().map(|p| p.totals.clone()).collect();
    let mut table = totals_table(&rows, by);
    let mut header: Vec<String> = table
        .header()
        .map(|h| h.cell_iter().map(|c| c.content()).collect())
        .unwrap_or_default();
    header.insert(0, "PERIOD".to_owned());
    let body: Vec<Vec<String>> = table
        .row_iter()
        .zip(points)
        .map(|(r, p)| {
            let mut cells: Vec<String> = r.cell_iter().map(|c| c.content()).collect();
            cells.insert(0, start(p.start));
            cells
        })
        .collect();
    table = Table::new();
    table.load_style(presets::NOTHING).set_header(header);
    for row in body {
        table.add_row(row);
    }
    crate::print::finish_table(table)
}

fn json_rows(rows: &[StatsRow]) -> String {
    let rows: Vec<RowJson<'_>> = rows.iter().map(RowJson::of).collect();
    escape::json(serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned()))
}

fn stats_table(rows: &[StatsRow], by: GroupBy) -> String {
    crate::print::finish_table(totals_table(rows, by))
}

/// The totals of `rows` as a table, with the group's column when grouped.
fn totals_table(rows: &[StatsRow], by: GroupBy) -> Table {
    let mut table = Table::new();
    let group = match by {
        GroupBy::Nothing => "",
        GroupBy::Model => "MODEL",
        GroupBy::Service => "SERVICE",
        GroupBy::User => "USER",
        GroupBy::Project => "PROJECT",
        GroupBy::Caller => "CALLER",
        GroupBy::Key => "KEY",
    };
    let mut header = vec![
        "REQUESTS",
        "PROMPT",
        "COMPLETION",
        "CACHED",
        "REASONING",
        "COST (USD)",
    ];
    if by != GroupBy::Nothing {
        header.insert(0, group);
    }
    table.load_style(presets::NOTHING).set_header(header);
    for r in rows {
        let mut cells = vec![
            r.requests.to_string(),
            r.prompt_tokens.to_string(),
            r.completion_tokens.to_string(),
            r.cached_tokens.to_string(),
            r.reasoning_tokens.to_string(),
            r.cost.to_string(),
        ];
        if by != GroupBy::Nothing {
            cells.insert(
                0,
                escape::text(r.group.as_deref().unwrap_or("-")).into_owned(),
            );
        }
        table.add_row(cells);
    }
    table
}

/// One event in JSON: money as an exact decimal string and in micro-dollars.
#[derive(Serialize)]
struct EventJson<'a> {
    at: String,
    model: &'a str,
    service: Option<&'a str>,
    user: Option<&'a str>,
    project: Option<&'a str>,
    caller: Option<&'a str>,
    session: Option<&'a str>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    reasoning_tokens: u64,
    cost: String,
    cost_micros: u64,
    execution_time_us: Option<u128>,
    key: Option<&'a str>,
    key_version: Option<u32>,
}

impl<'a> EventJson<'a> {
    fn of(e: &'a UsageEvent) -> Self {
        EventJson {
            at: e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            model: &e.model,
            service: e.service.as_deref(),
            user: e.user.as_deref(),
            project: e.project.as_deref(),
            caller: e.caller.as_deref(),
            session: e.session.as_deref(),
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            cached_tokens: e.cached_tokens,
            reasoning_tokens: e.reasoning_tokens,
            cost: e.cost.to_string(),
            cost_micros: e.cost.micros(),
            execution_time_us: e.execution_time.map(|d| d.as_micros()),
            key: e.key.as_ref().map(|k| k.identity.as_str()),
            key_version: e.key.as_ref().map(|k| k.version),
        }
    }
}

async fn tail(ctx: &Context, a: &TailArgs) -> Result<()> {
    crate::print::use_csv(a.format == Format::Csv);
    let accounting = ctx.accounting().await?;
    let result = accounting.store().tail(a.n).await;
    let events = super::finish_accounting(&accounting, result).await?;
    if events.is_empty() && matches!(a.format, Format::Table) {
        ctx.say(
            "no usage events recorded yet (record one with `usage track`, or through the gateway)",
        );
        return Ok(());
    }
    let text = match a.format {
        Format::Json => {
            let rows: Vec<EventJson<'_>> = events.iter().map(EventJson::of).collect();
            escape::json(serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned()))
        }
        Format::Table | Format::Csv => {
            let mut table = Table::new();
            table.load_style(presets::NOTHING).set_header([
                "AT",
                "MODEL",
                "SERVICE",
                "USER",
                "PROJECT",
                "CALLER",
                "PROMPT",
                "COMPLETION",
                "COST (USD)",
                "KEY",
            ]);
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            for e in &events {
                table.add_row(escape::row([
                    output::timestamp(&e.at),
                    e.model.clone(),
                    dash(&e.service),
                    dash(&e.user),
                    dash(&e.project),
                    dash(&e.caller),
                    e.prompt_tokens.to_string(),
                    e.completion_tokens.to_string(),
                    e.cost.to_string(),
                    e.key.as_ref().map_or_else(
                        || "-".to_owned(),
                        |k| format!("{} v{}", k.identity, k.version),
                    ),
                ]));
            }
            crate::print::finish_table(table)
        }
    };
    println!("{text}");
    Ok(())
}

async fn purge(ctx: &Context, a: &PurgeArgs) -> Result<()> {
    let accounting = ctx.accounting().await?;
    let result = accounting.store().purge_before(a.before).await;
    let n = super::finish_accounting(&accounting, result).await?;
    ctx.say(&format!(
        "purged {n} usage event(s) before {}",
        output::timestamp(&a.before)
    ));
    Ok(())
}
