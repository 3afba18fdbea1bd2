//! The commands: parse-time arguments in, library calls, output out.
//!
//! Inputs (names, the key) are validated before the database or master key is touched, and the
//! manager is always shut down (pending last-used times flushed, cache wiped) before returning.

use std::io::Write;
use std::sync::Arc;

use llm_accounting::{
    Error, Overrides, Result, SecureKeyManager, Settings, build_manager_with_info,
};

use crate::cli::{Cli, Command, Format, IdentityArgs, KeysCommand, ListArgs, StoreArgs};
use crate::{output, read_key};

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let overrides = Overrides {
        database_url: cli.db,
        provider: cli.provider,
    };
    let settings = Settings::load(cli.config.as_deref(), &overrides)?;
    let ctx = Context {
        settings,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Keys(keys) => match keys {
            KeysCommand::Store(args) => store(&ctx, args, false).await,
            KeysCommand::Rotate(args) => store(&ctx, args, true).await,
            KeysCommand::Get(args) => get(&ctx, &args).await,
            KeysCommand::List(args) => list(&ctx, &args).await,
            KeysCommand::Disable(args) => set_enabled(&ctx, &args, false).await,
            KeysCommand::Enable(args) => set_enabled(&ctx, &args, true).await,
            KeysCommand::Delete(args) => delete(&ctx, &args).await,
        },
    }
}

/// What every command needs.
struct Context {
    settings: Settings,
    quiet: bool,
}

impl Context {
    /// Prints an informational line on stderr unless `--quiet`.
    fn say(&self, message: &str) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }

    /// Opens the manager (creating the default database and master key if needed) and says
    /// which defaults were used.
    async fn manager(&self) -> Result<SecureKeyManager> {
        let (manager, used) = build_manager_with_info(&self.settings).await?;
        if let Some(notice) = output::defaults_notice(&used) {
            self.say(&format!("note: {notice}"));
        }
        Ok(manager)
    }
}

/// Shuts the manager down after `result`. A shutdown failure after a successful command is a
/// warning (the command's effect stands); after a failed one it is only logged.
async fn finish<T>(manager: &SecureKeyManager, result: Result<T>) -> Result<T> {
    if let Err(e) = manager.shutdown().await {
        if result.is_ok() {
            eprintln!(
                "warning: {}",
                output::error_line(&e).trim_start_matches("error: ")
            );
        } else {
            tracing::debug!(error = %e, "shutdown after a failed command also failed");
        }
    }
    result
}

/// `keys store` and `keys rotate`.
async fn store(ctx: &Context, args: StoreArgs, rotate: bool) -> Result<()> {
    let identity = args.identity.identity()?;
    let key = read_key::read_key(args.key, &identity)?;
    key.validate()?;
    let manager = ctx.manager().await?;
    let result = if rotate {
        manager.rotate(&identity, &key).await
    } else {
        manager.store(&identity, &key).await
    };
    drop(key);
    let outcome = finish(&manager, result).await?;
    let verb = if rotate { "rotated" } else { "stored" };
    ctx.say(&format!(
        "{verb} API key for {identity} (version {})",
        outcome.version
    ));
    Ok(())
}

/// `keys get`: the key and a newline on stdout.
async fn get(ctx: &Context, args: &IdentityArgs) -> Result<()> {
    let identity = args.identity()?;
    let manager = ctx.manager().await?;
    let result = async {
        let key = manager.get(&identity).await?;
        let mut out = std::io::stdout().lock();
        out.write_all(key.expose_secret().as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map_err(|e| Error::Io {
                operation: "writing the API key",
                path: "stdout".to_owned(),
                source: Arc::new(e),
            })
    }
    .await;
    finish(&manager, result).await
}

/// `keys list`.
async fn list(ctx: &Context, args: &ListArgs) -> Result<()> {
    let filter = args.filter();
    let manager = ctx.manager().await?;
    let result = manager.list(&filter).await;
    let keys = finish(&manager, result).await?;
    let text = match args.format {
        Format::Json => output::json(&keys),
        Format::Table if keys.is_empty() => {
            let filtered =
                filter.service.is_some() || filter.user.is_some() || filter.project.is_some();
            ctx.say(if filtered {
                "no keys stored that match the filter"
            } else {
                "no keys stored"
            });
            return Ok(());
        }
        Format::Table => output::table(&keys),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::Io {
            operation: "writing the key list",
            path: "stdout".to_owned(),
            source: Arc::new(e),
        })
}

/// `keys enable` and `keys disable`.
async fn set_enabled(ctx: &Context, args: &IdentityArgs, enabled: bool) -> Result<()> {
    let identity = args.identity()?;
    let manager = ctx.manager().await?;
    let result = if enabled {
        manager.enable(&identity).await
    } else {
        manager.disable(&identity).await
    };
    finish(&manager, result).await?;
    if enabled {
        ctx.say(&format!("enabled API key for {identity}"));
    } else {
        ctx.say(&format!(
            "disabled API key for {identity}; reads are refused until `keys enable`"
        ));
    }
    Ok(())
}

/// `keys delete`.
async fn delete(ctx: &Context, args: &IdentityArgs) -> Result<()> {
    let identity = args.identity()?;
    let manager = ctx.manager().await?;
    let result = manager.delete(&identity).await;
    finish(&manager, result).await?;
    ctx.say(&format!(
        "deleted API key for {identity} and all of its versions; this cannot be undone"
    ));
    Ok(())
}
