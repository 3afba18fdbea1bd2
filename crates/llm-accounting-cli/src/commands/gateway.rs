//! `gateway serve` and `gateway keys create|list|revoke`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets};
use llm_accounting::{Error, Result, Stack};
use llm_accounting_gateway::{Gateway, GatewayConfig, NewVirtualKey, VirtualKey, VirtualKeys};
use serde::Serialize;

use super::Context;
use crate::escape;
use crate::format::Format;

/// `gateway` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum GatewayCommand {
    /// Serve the OpenAI- and Anthropic-style routes until SIGTERM or Ctrl-C (then calls in
    /// flight get `gateway.drain_secs` to finish, and their usage is written).
    Serve(ServeArgs),
    /// Make, list and revoke virtual keys (the tokens applications send to the gateway).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Arguments of `gateway serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (default: `gateway.listen`, 127.0.0.1:4000).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
}

/// `gateway keys` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Make a virtual key and print its token, once, alone on standard output.
    Create(CreateArgs),
    /// List the virtual keys (never a token).
    List(ListArgs),
    /// Revoke a virtual key: refused at once by gateways on PostgreSQL, within
    /// `gateway.key_refresh_ms` elsewhere.
    Revoke(RevokeArgs),
}

/// Arguments of `gateway keys create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The user its calls are made and accounted as.
    #[arg(long, value_name = "U")]
    user: String,
    /// The project its calls are accounted to (and whose provider key serves them, if one is
    /// stored).
    #[arg(long, value_name = "P")]
    project: Option<String>,
    /// The caller (application) its calls are accounted to.
    #[arg(long, value_name = "C")]
    caller: Option<String>,
    /// Only these services (comma-separated). Default: every one.
    #[arg(long, value_name = "S1,S2", value_delimiter = ',')]
    services: Option<Vec<String>>,
    /// Only these models, bare or as SERVICE/MODEL (comma-separated). Default: every one.
    #[arg(long, value_name = "M1,M2", value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Stops working after this long (`30d`, `12h`). Default: never.
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::duration)]
    expires_in: Option<Duration>,
}

/// Arguments of `gateway keys list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Arguments of `gateway keys revoke`.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The virtual key's id (`gateway keys list`).
    #[arg(long, value_name = "N")]
    id: i64,
}

/// Runs a `gateway` subcommand.
pub(super) async fn run(ctx: &Context, command: GatewayCommand) -> Result<()> {
    match command {
        GatewayCommand::Serve(a) => serve(ctx, a).await,
        GatewayCommand::Keys(k) => {
            let stack = ctx
                .stack(Stack::builder(&ctx.settings).accounting(false))
                .await?;
            let result = keys(ctx, &stack, k).await;
            super::finish(stack.manager(), result).await
        }
    }
}

fn gateway_error(e: llm_accounting_gateway::Error) -> Error {
    match e {
        llm_accounting_gateway::Error::Core(e) => e,
        llm_accounting_gateway::Error::Config(m) => Error::config(m),
        other => Error::config(other.to_string()),
    }
}

async fn serve(ctx: &Context, a: ServeArgs) -> Result<()> {
    let mut settings = ctx.settings.gateway.clone();
    if let Some(listen) = a.listen {
        settings.listen = listen;
    }
    let config = GatewayConfig::from_settings(&settings).map_err(gateway_error)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {}: {e}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::config(format!("cannot listen on {}: {e}", config.listen)))?;
    let stack = Arc::new(ctx.stack(Stack::builder(&ctx.settings)).await?);
    let gateway = Gateway::new(config, Arc::clone(&stack))
        .await
        .map_err(gateway_error)?;
    // The address on stderr: tests and scripts that ask for port 0 read it here.
    ctx.say(&format!("gateway listening on http://{address}"));
    llm_accounting_gateway::serve(gateway, listener, llm_accounting_gateway::shutdown_signal())
        .await
        .map_err(gateway_error)?;
    ctx.say("gateway stopped; every call's usage is written");
    Ok(())
}

async fn keys(ctx: &Context, stack: &Stack, command: KeysCommand) -> Result<()> {
    let keys = VirtualKeys::open(Arc::clone(stack.repository()), stack.manager()).await?;
    match command {
        KeysCommand::Create(a) => {
            let mut new = NewVirtualKey::for_user(a.user);
            new.project = a.project;
            new.caller = a.caller;
            new.services = a.services;
            new.models = a.models;
            new.expires_at = a
                .expires_in
                .map(|d| {
                    chrono::Duration::from_std(d)
                        .ok()
                        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                        .ok_or_else(|| Error::invalid("expires-in", "too far in the future"))
                })
                .transpose()?;
            let (key, token) = keys.create(&new).await?;
            println!("{}", token.expose_secret());
            ctx.say(&format!(
                "made virtual key #{} for {}: the token above is shown only this once",
                key.id,
                describe(&key)
            ));
            Ok(())
        }
        KeysCommand::List(a) => {
            let all = keys.list().await?;
            println!("{}", list_text(&all, a.format));
            Ok(())
        }
        KeysCommand::Revoke(a) => match keys.revoke(a.id).await? {
            Some(_) => {
                ctx.say(&format!("revoked virtual key #{}", a.id));
                Ok(())
            }
            None => Err(Error::NotFound {
                identity: format!("virtual key #{}", a.id),
            }),
        },
    }
}

/// `user alice, project p, services openai, models m, expires T`.
fn describe(k: &VirtualKey) -> String {
    let mut parts = vec![format!("user {}", k.user)];
    if let Some(p) = &k.project {
        parts.push(format!("project {p}"));
    }
    if let Some(c) = &k.caller {
        parts.push(format!("caller {c}"));
    }
    if let Some(s) = &k.services {
        parts.push(format!("services {}", s.join(",")));
    }
    if let Some(m) = &k.models {
        parts.push(format!("models {}", m.join(",")));
    }
    if let Some(e) = &k.expires_at {
        parts.push(format!("expires {}", crate::output::timestamp(e)));
    }
    parts.join(", ")
}

fn status(k: &VirtualKey) -> &'static str {
    match k.usable_at(chrono::Utc::now()) {
        Ok(()) => "active",
        Err(_) if !k.intact => "TAMPERED",
        Err(_) if k.revoked_at.is_some() => "revoked",
        Err(_) => "expired",
    }
}

#[derive(Serialize)]
struct KeyJson<'a> {
    id: i64,
    user: &'a str,
    project: Option<&'a str>,
    caller: Option<&'a str>,
    services: Option<&'a [String]>,
    models: Option<&'a [String]>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    status: &'static str,
}

fn list_text(all: &[VirtualKey], format: Format) -> String {
    crate::print::use_csv(format == Format::Csv);
    match format {
        Format::Json => {
            let rows: Vec<KeyJson<'_>> = all
                .iter()
                .map(|k| KeyJson {
                    id: k.id,
                    user: &k.user,
                    project: k.project.as_deref(),
                    caller: k.caller.as_deref(),
                    services: k.services.as_deref(),
                    models: k.models.as_deref(),
                    created_at: crate::output::timestamp(&k.created_at),
                    expires_at: k.expires_at.as_ref().map(crate::output::timestamp),
                    revoked_at: k.revoked_at.as_ref().map(crate::output::timestamp),
                    status: status(k),
                })
                .collect();
            escape::json(serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned()))
        }
        Format::Table if all.is_empty() => {
            "no virtual keys (make one: llm-accounting gateway keys create --user NAME)".to_owned()
        }
        Format::Table | Format::Csv => {
            let mut table = Table::new();
            table.load_style(presets::NOTHING).set_header([
                "ID", "USER", "PROJECT", "CALLER", "SERVICES", "MODELS", "CREATED", "EXPIRES",
                "STATUS",
            ]);
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            for k in all {
                table.add_row(escape::row([
                    k.id.to_string(),
                    k.user.clone(),
                    dash(k.project.clone()),
                    dash(k.caller.clone()),
                    dash(k.services.as_ref().map(|s| s.join(","))),
                    dash(k.models.as_ref().map(|s| s.join(","))),
                    crate::output::timestamp(&k.created_at),
                    dash(k.expires_at.as_ref().map(crate::output::timestamp)),
                    status(k).to_owned(),
                ]));
            }
            crate::print::finish_table(table)
        }
    }
}
