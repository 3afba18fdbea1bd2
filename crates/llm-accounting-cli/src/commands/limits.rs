//! `limits set|list|delete`.

use clap::{Args, Subcommand};
use comfy_table::{Table, presets};
use llm_accounting::usage::{Limit, LimitKind, NewLimit, Scope, Window, WindowUnit};
use llm_accounting::{Error, Result};
use serde::Serialize;

use super::{Context, args};
use crate::escape;
use crate::format::Format;

/// `limits` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum LimitsCommand {
    /// Add a limit. No scope flag: a global limit.
    Set(SetArgs),
    /// List the limits.
    List(ListArgs),
    /// Delete a limit by id.
    Delete(DeleteArgs),
}

/// Arguments of `limits set`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("window").required(true).args(["per", "rolling"])))]
#[command(
    mut_arg("service", |a| a.help("Only calls to this service")),
    mut_arg("user", |a| a.help("Only calls by this user")),
    mut_arg("project", |a| a.help("Only calls for this project")),
    mut_arg("caller", |a| a.help("Only calls by this caller"))
)]
pub(crate) struct SetArgs {
    /// What to count.
    #[arg(long = "type", value_name = "TYPE", value_parser = args::limit_kind)]
    kind: LimitKind,
    /// The most per window: a whole number, or decimal US dollars for `cost`; `unlimited`
    /// exempts the calls in its scope from every less specific limit (limits are checked
    /// from the most specific scope to the least, ties by id; an unlimited one ends the
    /// check).
    #[arg(long, value_name = "V", allow_hyphen_values = true)]
    max: String,
    /// Fixed UTC calendar windows of this unit (`--per day`: midnight to midnight UTC).
    #[arg(long, value_enum, value_name = "UNIT")]
    per: Option<WindowUnit>,
    /// With --per: windows of N units: seconds from each minute, minutes from each hour,
    /// hours from midnight UTC (the last one cut there), days and weeks from 1970, months
    /// from January.
    #[arg(long, value_name = "N", requires = "per")]
    every: Option<u32>,
    /// A rolling window: the last DURATION (`24h`, `30m`).
    #[arg(long, value_name = "DURATION", value_parser = args::window_length)]
    rolling: Option<u64>,
    /// Only calls to this model (exactly this name; `*`, as in the Python package's table,
    /// means any model, as leaving the flag out does).
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// Only calls to this service, by this user, for this project, by this caller (`*`: any).
    #[command(flatten)]
    scope: args::ScopeArgs,
}

/// Arguments of `limits list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Arguments of `limits delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The limit's id (see `limits list`; negative for limits kept beside the Python
    /// package's table).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    id: i64,
}

/// Runs a `limits` subcommand.
pub(super) async fn run(ctx: &Context, command: LimitsCommand) -> Result<()> {
    match command {
        LimitsCommand::Set(a) => set(ctx, a).await,
        LimitsCommand::List(a) => list(ctx, &a).await,
        LimitsCommand::Delete(a) => delete(ctx, &a).await,
    }
}

impl SetArgs {
    /// The limit these flags describe, validated.
    fn limit(self) -> Result<NewLimit> {
        let window = match (self.per, self.rolling) {
            (Some(_), None) if self.every == Some(0) => {
                return Err(Error::invalid("window", "--every must be at least 1"));
            }
            (Some(unit), None) => Window::fixed(unit, self.every.unwrap_or(1))?,
            (None, Some(_)) if self.every.is_some() => {
                return Err(Error::invalid(
                    "window",
                    "--every goes with --per, not --rolling",
                ));
            }
            (None, Some(seconds)) => Window::rolling(seconds)?,
            _ => {
                return Err(Error::invalid(
                    "window",
                    "give --per UNIT or --rolling DURATION",
                ));
            }
        };
        let limit = NewLimit {
            max: self.kind.parse_amount(&self.max)?,
            kind: self.kind,
            window,
            scope: self.scope.scope(self.model),
        };
        limit.validate()?;
        Ok(limit)
    }
}

async fn set(ctx: &Context, a: SetArgs) -> Result<()> {
    let limit = a.limit()?;
    let accounting = ctx.accounting().await?;
    let result = accounting.store().add_limit(&limit).await;
    let created = super::finish_accounting(&accounting, result).await?;
    ctx.say(&format!(
        "added limit {}",
        escape::text(&created.to_string())
    ));
    if created.id < 0 {
        // Only with the Python package's tables: see `SeaOrmUsageStore`.
        ctx.say(
            "note: the Python llm-accounting package's usage_limits cannot hold this limit: it \
             is kept in this project's own table (negative id), enforced here and not seen by \
             the package's own quota checks",
        );
    }
    Ok(())
}

/// One limit in JSON.
#[derive(Serialize)]
struct LimitJson<'a> {
    id: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Whole units; for cost, exact decimal dollars.
    max: String,
    window: String,
    scope: &'a Scope,
    created_at: String,
}

async fn list(ctx: &Context, a: &ListArgs) -> Result<()> {
    crate::print::use_csv(a.format == Format::Csv);
    let accounting = ctx.accounting().await?;
    let result = accounting.store().limits().await;
    let limits = super::finish_accounting(&accounting, result).await?;
    if limits.is_empty() && matches!(a.format, Format::Table) {
        ctx.say("no limits set (add one with `limits set`)");
        return Ok(());
    }
    let text = match a.format {
        Format::Json => {
            let rows: Vec<LimitJson<'_>> = limits.iter().map(limit_json).collect();
            escape::json(serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned()))
        }
        Format::Table | Format::Csv => {
            let mut table = Table::new();
            table
                .load_style(presets::NOTHING)
                .set_header(["ID", "TYPE", "MAX", "WINDOW", "SCOPE"]);
            for l in &limits {
                table.add_row(escape::row([
                    l.id.to_string(),
                    l.kind.to_string(),
                    max_text(l),
                    l.window.to_string(),
                    l.scope.to_string(),
                ]));
            }
            crate::print::finish_table(table)
        }
    };
    println!("{text}");
    Ok(())
}

fn max_text(l: &Limit) -> String {
    match l.kind {
        _ if l.is_unlimited() => "unlimited".to_owned(),
        LimitKind::Cost => llm_accounting::usage::Money::from_micros(l.max).to_string(),
        _ => l.max.to_string(),
    }
}

fn limit_json(l: &Limit) -> LimitJson<'_> {
    LimitJson {
        id: l.id,
        kind: l.kind.as_str(),
        max: max_text(l),
        window: l.window.to_string(),
        scope: &l.scope,
        created_at: crate::output::timestamp(&l.created_at),
    }
}

async fn delete(ctx: &Context, a: &DeleteArgs) -> Result<()> {
    let accounting = ctx.accounting().await?;
    let result = accounting.store().delete_limit(a.id).await;
    if !super::finish_accounting(&accounting, result).await? {
        return Err(Error::invalid("id", format!("there is no limit #{}", a.id)));
    }
    ctx.say(&format!("deleted limit #{}", a.id));
    Ok(())
}
