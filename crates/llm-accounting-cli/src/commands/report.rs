//! `usage report` (the usage report as one HTML file) and `usage serve` (the same page live,
//! the gateway's dashboard alone).

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use clap::Args;
use llm_accounting::usage::{GroupBy, Period};
use llm_accounting::{Error, Result, SecureKeyManager, Stack};
use llm_accounting_report::{PageOptions, ReportQuery};

use super::{Context, args};
use crate::output;

/// Arguments of `usage report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// From this time (inclusive): RFC 3339, a date, or a duration back (`30d`). Default: the
    /// start of the day 29 days ago (30 days with today).
    #[arg(long, value_name = "T", value_parser = args::time)]
    since: Option<DateTime<Utc>>,
    /// Until this time (exclusive); default now.
    #[arg(long, value_name = "T", value_parser = args::time)]
    until: Option<DateTime<Utc>>,
    /// What the daily charts are stacked by.
    #[arg(long, value_enum, value_name = "WHAT", default_value = "model")]
    by: GroupBy,
    /// Write the page here (replaced atomically if it exists); without it, stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The report's data as JSON instead of the page.
    #[arg(long)]
    json: bool,
}

/// Arguments of `usage serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4001")]
    listen: String,
}

/// The accounting store and, when the key store opens, its manager (for the quota denials
/// of its audit trail). With `--accounting-db`, or no local master key yet (then no key was
/// ever handed out, so none was refused), only the accounting is opened and nothing is
/// created; a key store that does not open gives a report without denials, and a note.
async fn sources(ctx: &Context) -> Result<(llm_accounting::usage::Accounting, Option<Stack>)> {
    let s = &ctx.settings;
    let no_master_key = s.kms.provider == llm_accounting::KmsProviderKind::Local
        && s.master_key_file().is_ok_and(|(path, _)| !path.exists());
    if s.accounting.database_url.is_none() && !no_master_key {
        match ctx.stack(Stack::builder(&ctx.settings)).await {
            Ok(stack) => {
                if let Some(accounting) = stack.accounting().cloned() {
                    return Ok((accounting, Some(stack)));
                }
                let _ = stack.shutdown().await;
            }
            Err(e) => ctx.say(&format!(
                "note: quota denials are not shown: the key store's audit trail could not be \
                 opened ({})",
                crate::output::error_line(&e)
            )),
        }
    }
    Ok((ctx.accounting().await?, None))
}

/// `usage report`.
pub(crate) async fn report(ctx: &Context, a: &ReportArgs) -> Result<()> {
    let now = Utc::now();
    let until = a.until.unwrap_or(now);
    let since = a
        .since
        .unwrap_or_else(|| Period::Day.start_of(until - Duration::days(29)));
    let query = ReportQuery {
        since,
        until,
        by: a.by,
        now,
    };
    args::since_before_until(since, until)?;
    // Checked before anything is opened.
    query.validate()?;
    let (accounting, stack) = sources(ctx).await?;
    let manager: Option<&SecureKeyManager> = stack.as_ref().map(Stack::manager);
    let result = llm_accounting_report::gather(accounting.store().as_ref(), manager, &query).await;
    let report = match &stack {
        Some(stack) => {
            let shut = stack.shutdown().await;
            let report = result?;
            shut?;
            report
        }
        None => super::finish_accounting(&accounting, result).await?,
    };
    let text = if a.json {
        llm_accounting_report::json(&report)
    } else {
        llm_accounting_report::page(&report, &PageOptions::default())
    };
    match &a.output {
        Some(path) => {
            crate::write_file::write(path, text.as_bytes(), 0o644, true, "writing the report")?;
            ctx.say(&format!(
                "wrote {} ({} KiB): {} request(s), ${} from {} to {}{}",
                crate::escape::text(&path.display().to_string()),
                text.len().div_ceil(1024),
                report.totals.requests,
                report.totals.cost,
                output::timestamp(&since),
                output::timestamp(&until),
                if report.is_empty() {
                    " (no usage in this range)"
                } else {
                    ""
                }
            ));
            Ok(())
        }
        None => crate::print::print(text.trim_end(), "writing the report"),
    }
}

/// `usage serve`: the dashboard alone, until Ctrl-C or SIGTERM.
pub(crate) async fn serve(ctx: &Context, a: ServeArgs) -> Result<()> {
    let Some(file) = ctx.settings.gateway.admin_token_file.as_deref() else {
        return Err(Error::config(
            "usage serve needs an admin token: put one in a file of mode 0600 and name it in \
             gateway.admin_token_file (or LLM_ACCOUNTING_GATEWAY_ADMIN_TOKEN_FILE)",
        ));
    };
    let token = llm_accounting_gateway::dashboard::AdminToken::from_file(file)
        .map_err(|e| Error::config(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {}: {e}", a.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::config(format!("cannot listen on {}: {e}", a.listen)))?;
    let (accounting, stack) = sources(ctx).await?;
    let dashboard = llm_accounting_gateway::dashboard::Dashboard::new(
        Arc::clone(accounting.store()),
        stack.as_ref().map(|s| s.manager().clone()),
        token,
    );
    ctx.say(&format!(
        "dashboard on http://{address}/dashboard (the admin token as the password)"
    ));
    let served = dashboard
        .serve(listener, llm_accounting_gateway::shutdown_signal())
        .await
        .map_err(|e| Error::config(e.to_string()));
    match &stack {
        Some(stack) => stack.shutdown().await?,
        None => accounting.shutdown().await?,
    }
    served
}
