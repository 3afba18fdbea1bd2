//! The commands: parse-time arguments in, library calls, output out.
//!
//! Inputs (names, the key) are validated before the database or master key is touched, and the
//! manager is always shut down (pending last-used times flushed, cache wiped) before returning.

use std::io::Write;

use llm_accounting::{
    Error, ErrorKind, ListOptions, Overrides, Result, RewrapOptions, RewrapTarget,
    SecureKeyManager, Settings, Stack, WriteOptions,
};

use crate::cli::{
    Cli, Command, DeleteArgs, Format, GetArgs, GetFormat, IdentityArgs, KeysCommand, ListArgs,
    MasterKeyCommand, RewrapArgs, StoreArgs,
};
use crate::{escape, exit_code, output, print, read_key};

mod audit;
pub(crate) mod completions;
mod confirm;
mod doctor;
mod exec;
mod import;
mod inject;

mod args;
pub(crate) mod gateway;
pub(crate) mod limits;
pub(crate) mod quota;
mod report;
pub(crate) mod usage;

/// Runs the parsed command line; the exit code to leave with when it did not fail.
pub(crate) async fn run(cli: Cli) -> Result<u8> {
    // Commands that need no configuration (or check it themselves) come first: a broken
    // configuration must not stop them.
    match &cli.command {
        Command::Completions(args) => {
            return completions::completions(args).map(|()| exit_code::OK);
        }
        Command::Manual(args) => return completions::manual(args).map(|()| exit_code::OK),
        Command::Doctor(args) => return doctor::doctor(&cli, args).await,
        _ => {}
    }
    let overrides = Overrides {
        database_url: cli.db,
        provider: cli.provider,
        create_if_missing: cli.create,
    };
    let mut settings = Settings::load(cli.config.as_deref(), &overrides)?;
    if let Some(url) = cli.accounting_db {
        settings.accounting.database_url = Some(url);
    }
    let ctx = Context {
        settings,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let done = match cli.command {
        Command::Exec(args) => return exec::exec(&ctx, args).await,
        Command::Inject(args) => inject::inject(&ctx, args).await,
        Command::Completions(_) | Command::Manual(_) | Command::Doctor(_) => Ok(()),
        Command::Keys(keys) => match keys {
            KeysCommand::Store(args) => store(&ctx, args, false).await,
            KeysCommand::Rotate(args) => store(&ctx, args, true).await,
            KeysCommand::Get(args) => get(&ctx, &args).await,
            KeysCommand::Rewrap(args) => rewrap(&ctx, &args).await,
            KeysCommand::Audit(args) => audit::audit(&ctx, &args).await,
            KeysCommand::List(args) => list(&ctx, &args).await,
            KeysCommand::Disable(args) => set_enabled(&ctx, &args, false).await,
            KeysCommand::Enable(args) => set_enabled(&ctx, &args, true).await,
            KeysCommand::Delete(args) => return delete(&ctx, &args).await,
            KeysCommand::Seal => seal(&ctx).await,
            KeysCommand::Import(args) => import::import(&ctx, &args).await,
        },
        Command::Usage(command) => usage::run(&ctx, command).await,
        Command::Limits(command) => limits::run(&ctx, command).await,
        Command::Quota(command) => quota::run(&ctx, command).await,
        Command::Gateway(command) => gateway::run(&ctx, command).await,
        #[cfg(feature = "kms-local")]
        Command::MasterKey(MasterKeyCommand::AddVersion) => add_master_key_version(&ctx),
        #[cfg(not(feature = "kms-local"))]
        Command::MasterKey(MasterKeyCommand::AddVersion) => Err(Error::config(
            "this build of llm-accounting was built without feature kms-local",
        )),
    };
    done.map(|()| exit_code::OK)
}

/// What every command needs.
struct Context {
    settings: Settings,
    quiet: bool,
    verbose: bool,
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
        let stack = self
            .stack(Stack::builder(&self.settings).accounting(false))
            .await?;
        Ok(stack.manager().clone())
    }

    /// Builds a stack and says which defaults were used.
    async fn stack(&self, builder: llm_accounting::StackBuilder) -> Result<Stack> {
        let stack = builder.build().await?;
        self.defaults_notice(stack.defaults_used());
        Ok(stack)
    }

    /// Says where the default database and master key are: when they were just created (the
    /// first run), or with `--verbose`; not on every run.
    fn defaults_notice(&self, used: &llm_accounting::DefaultsUsed) {
        if !(used.created_any() || self.verbose) {
            return;
        }
        if let Some(notice) = output::defaults_notice(used) {
            self.say(&format!("note: {notice}"));
        }
    }
}

impl Context {
    /// The accounting database's store and writer (no KMS is needed).
    async fn accounting(&self) -> Result<llm_accounting::usage::Accounting> {
        let (accounting, used) = Stack::builder(&self.settings)
            .build_accounting_only()
            .await?;
        self.defaults_notice(&used);
        Ok(accounting)
    }
}

/// Stops the accounting's background work after `result` (as [`finish`]).
async fn finish_accounting<T>(
    accounting: &llm_accounting::usage::Accounting,
    result: Result<T>,
) -> Result<T> {
    if let Err(e) = accounting.shutdown().await {
        if result.is_ok() {
            return Err(e);
        }
        tracing::debug!(error = %e, "accounting shutdown after a failed command also failed");
    }
    result
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
    let options = WriteOptions {
        expires_at: args.expiry(),
    };
    // The configuration, the database and the provider's settings are checked before the
    // key is asked for: a mistake there must not cost a paste.
    let manager = ctx.manager().await?;
    let key = match read_key::read_key(args.key, &identity, args.as_is)
        .and_then(|key| key.validate().map(|()| key))
    {
        Ok(key) => key,
        Err(e) => return finish(&manager, Err(e)).await,
    };
    let result = if rotate {
        manager.rotate_with(&identity, &key, &options).await
    } else {
        manager.store_with(&identity, &key, &options).await
    };
    drop(key);
    let outcome = finish(&manager, result).await?;
    let verb = if rotate { "rotated" } else { "stored" };
    let expiry = options
        .expires_at
        .map(|t| format!("; expires {}", output::timestamp(&t)))
        .unwrap_or_default();
    ctx.say(&format!(
        "{verb} API key for {identity} (version {}{expiry})",
        outcome.version
    ));
    if rotate {
        let grace = output::span(std::time::Duration::from_secs(
            ctx.settings.keys.previous_grace_secs,
        ));
        ctx.say(&format!(
            "the previous value stays readable with `keys get --previous` for {grace}"
        ));
    }
    Ok(())
}

/// `keys get`: the key and a newline on stdout.
async fn get(ctx: &Context, args: &GetArgs) -> Result<()> {
    let identity = args.identity()?;
    if let Some(model) = &args.model {
        let key = quota::gated_get(ctx, &identity, model, args.input_tokens).await?;
        return write_key(&identity, args, &key);
    }
    let manager = ctx.manager().await?;
    let result = async {
        let key = if args.previous {
            manager.get_previous(&identity).await?
        } else {
            manager.get(&identity).await?
        };
        write_key(&identity, args, &key)
    }
    .await;
    if matches!(result, Err(Error::NotFound { .. }))
        && let Some(hint) = nearby(&manager, &identity).await
    {
        eprintln!("{}", escape::text(&hint));
    }
    finish(&manager, result).await
}

/// Most other keys of a service named after a miss.
const NEARBY: usize = 5;

/// After a miss: the keys stored for the same service under another user or project, as a
/// `hint:` line (`None` when there are none, or they cannot be listed).
async fn nearby(
    manager: &llm_accounting::SecureKeyManager,
    identity: &llm_accounting::KeyIdentity,
) -> Option<String> {
    let filter = llm_accounting::KeyFilter {
        service: Some(identity.service().to_owned()),
        ..llm_accounting::KeyFilter::default()
    };
    // Names only, from the repository: no audit row (the miss has its own).
    let keys: Vec<llm_accounting::KeyRecord> = manager
        .repository()?
        .list_keys(&filter)
        .await
        .ok()?
        .into_iter()
        .filter_map(|row| match row {
            llm_accounting::Listed::Key(k) => Some(k),
            llm_accounting::Listed::Broken(_) => None,
        })
        .collect();
    if keys.is_empty() {
        return None;
    }
    let named: Vec<String> = keys
        .iter()
        .take(NEARBY)
        .map(|k| match (k.identity.user(), k.identity.project()) {
            (None, None) => "no user, no project".to_owned(),
            (Some(u), None) => format!("user {u}"),
            (None, Some(p)) => format!("project {p}"),
            (Some(u), Some(p)) => format!("user {u}, project {p}"),
        })
        .collect();
    let more = keys.len().saturating_sub(NEARBY);
    let more = if more > 0 {
        format!(
            " and {more} more (keys list --service {})",
            identity.service()
        )
    } else {
        String::new()
    };
    Some(format!(
        "hint: stored for service {:?}: {}{more} (use --user/--project)",
        identity.service(),
        named.join("; ")
    ))
}

/// Writes a key got by `keys get` on stdout, in the format asked for.
fn write_key(
    identity: &llm_accounting::KeyIdentity,
    args: &GetArgs,
    key: &llm_accounting::ApiKey,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let written = match args.format {
        GetFormat::Text => out
            .write_all(key.expose_secret().as_bytes())
            .and_then(|()| out.write_all(b"\n")),
        // Straight to stdout: no intermediate string holds the key.
        GetFormat::Json => serde_json::to_writer(
            &mut out,
            &output::KeyValueJson {
                service: identity.service(),
                user: identity.user(),
                project: identity.project(),
                previous: args.previous,
                key: key.expose_secret(),
            },
        )
        .map_err(std::io::Error::other)
        .and_then(|()| out.write_all(b"\n")),
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| print::stdout_error("writing the API key", e))
}

/// `keys list`. Every readable key is listed; keys whose record cannot be read or does not
/// verify are named on stderr, and the command then exits 4.
async fn list(ctx: &Context, args: &ListArgs) -> Result<()> {
    print::use_csv(args.format == Format::Csv);
    let filter = args.filter();
    let manager = ctx.manager().await?;
    let options = ListOptions {
        expiring_within: args.expiring,
        versions: args.versions,
    };
    let result = async {
        let listing = manager.list_with(&filter, &options).await?;
        let versions: Vec<_> = if args.versions {
            listing.keys.iter().cloned().zip(listing.versions).collect()
        } else {
            Vec::new()
        };
        let broken: Vec<(String, Error)> = listing
            .broken
            .into_iter()
            .map(|b| (b.row.to_string(), b.error))
            .collect();
        Ok((listing.keys, versions, broken, listing.matched))
    }
    .await;
    let (keys, versions, broken, stored) = finish(&manager, result).await?;
    let text = match args.format {
        Format::Json if args.versions => Some(output::json_with_versions(&versions)),
        Format::Json => Some(output::json(&keys)),
        Format::Table if keys.is_empty() => {
            if broken.is_empty() {
                ctx.say(&output::no_keys_message(&filter, args.expiring, stored));
            }
            None
        }
        Format::Table | Format::Csv if args.versions => Some(output::versions_table(&versions)),
        Format::Table | Format::Csv => Some(output::table(&keys)),
    };
    if let Some(text) = text {
        print::print(&text, "writing the key list")?;
    }
    if broken.is_empty() {
        return Ok(());
    }
    for (what, error) in &broken {
        eprintln!(
            "broken: {what}: {}",
            output::error_line(error).trim_start_matches("error: ")
        );
    }
    Err(Error::Integrity {
        identity: Some(format!("{} listed key(s) (named above)", broken.len())),
    })
}

/// `keys seal`: authenticate the state of every key of a store written before sealing
/// existed (once), or verify every key of a sealed store.
async fn seal(ctx: &Context) -> Result<()> {
    let manager = ctx.manager().await?;
    let result = manager.seal().await;
    let report = finish(&manager, result).await?;
    if report.made_state_key {
        ctx.say(&format!(
            "sealed the store: {} key(s) sealed; their state is authenticated from now on",
            report.sealed
        ));
    } else {
        ctx.say(&format!(
            "the store was sealed already: {} key(s) verified, {} sealed",
            report.verified, report.sealed
        ));
    }
    if report.broken.is_empty() {
        return Ok(());
    }
    for b in &report.broken {
        eprintln!(
            "broken: {}: {}",
            b.row,
            output::error_line(&b.error).trim_start_matches("error: ")
        );
    }
    Err(Error::Integrity {
        identity: Some(format!("{} key(s) (named above)", report.broken.len())),
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

/// `keys delete`: on a terminal, only after the user typed the service's name (or `--yes`).
async fn delete(ctx: &Context, args: &DeleteArgs) -> Result<u8> {
    let identity = args.identity.identity()?;
    if !args.yes && !confirm::confirm_delete(&identity)? {
        // Declining is no usage error: the user said no.
        eprintln!("cancelled, nothing deleted");
        return Ok(exit_code::OTHER);
    }
    let manager = ctx.manager().await?;
    let result = async {
        // A record that does not verify can still be deleted (that is the remedy).
        let versions = match manager.versions(&identity).await {
            Ok(v) => Some(v.len()),
            Err(e) if e.kind() == ErrorKind::Integrity => None,
            Err(e) => return Err(e),
        };
        manager.delete(&identity).await?;
        Ok(versions)
    }
    .await;
    let versions = finish(&manager, result).await?;
    ctx.say(&match versions {
        Some(n) => format!(
            "deleted API key for {identity}: {n} stored version(s) and their ciphertexts are \
             gone for good (this cannot be undone)"
        ),
        None => format!(
            "deleted API key for {identity}, whose record did not verify: its stored versions \
             and their ciphertexts are gone for good (this cannot be undone)"
        ),
    });
    Ok(exit_code::OK)
}

/// `keys rewrap`: the target provider (and master key) as configured or as asked, the
/// configured provider kept for unwrapping what it wrapped.
async fn rewrap(ctx: &Context, args: &RewrapArgs) -> Result<()> {
    let provider = match &args.to_provider {
        Some(p) => Some(p.parse()?),
        None => None,
    };
    // The target's provider and master key behind its branch-key layer (records move to its
    // `kms.hierarchy`); the configured provider kept to unwrap what it wrapped; the audit
    // trail, its options and the change feed as configured.
    let stack = ctx
        .stack(
            Stack::builder(&ctx.settings)
                .accounting(false)
                .rewrap_to(RewrapTarget::new(provider, args.to_key.clone())),
        )
        .await?;
    let manager = stack.manager().clone();
    let options = RewrapOptions {
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        reencrypt: args.reencrypt,
        check_only: args.check,
        rotate_branches: args.rotate_branches,
    };
    let bar = output::progress_bar(ctx.quiet);
    let result = manager
        .rewrap(&options, |p| {
            if let Some(bar) = &bar {
                bar.set_length(p.seen);
                bar.set_position(p.handled);
            }
        })
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = finish(&manager, result).await?;
    let target = format!(
        "{} {}",
        report.target_provider, report.target_master_key_ref
    );
    if args.check {
        ctx.say(&format!(
            "{} version(s) not under {target}; {} of them under retired master keys",
            report.done, report.under_retired_keys
        ));
        if report.state_key_moved {
            ctx.say(&format!("the store's state key is not under {target}"));
        }
        let branches = report.branch_keys;
        if branches.rewrapped > 0 {
            ctx.say(&format!(
                "{} branch key version(s) not under {target}",
                branches.rewrapped
            ));
        }
        let left = report.done + u64::from(report.state_key_moved) + branches.rewrapped;
        if left > 0 {
            return Err(Error::Incomplete {
                operation: "rewrap check",
                count: left,
                hint: "run `keys rewrap` to move them",
            });
        }
        return Ok(());
    }
    if report.state_key_moved {
        ctx.say(&format!("moved the store's state key under {target}"));
    }
    let branches = report.branch_keys;
    if branches.rewrapped > 0 || branches.rotated > 0 {
        ctx.say(&format!(
            "branch keys: {} version(s) moved under {target}, {} branch(es) rotated",
            branches.rewrapped, branches.rotated
        ));
    }
    for f in &report.failed {
        eprintln!(
            "failed: {} version {}: {}",
            f.identity,
            f.version,
            output::error_line(&f.error).trim_start_matches("error: ")
        );
    }
    ctx.say(&format!(
        "rewrapped {} version(s) under {target}; skipped {} (changed meanwhile); failed {}",
        report.done,
        report.skipped,
        report.failed.len()
    ));
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Incomplete {
            operation: "rewrap",
            count: report.failed.len() as u64,
            hint: "the failed versions are unchanged and still readable; run it again to retry",
        })
    }
}

/// `master-key add-version`.
#[cfg(feature = "kms-local")]
fn add_master_key_version(ctx: &Context) -> Result<()> {
    if ctx.settings.kms.provider != llm_accounting::KmsProviderKind::Local {
        return Err(Error::invalid(
            "command",
            "`master-key add-version` manages the local provider's key file; the configured \
             provider is not `local` (rotate cloud master keys in the KMS itself)",
        ));
    }
    let (path, _) = ctx.settings.master_key_file()?;
    let reference = llm_accounting::LocalKmsProvider::add_master_key_version(&path)?;
    ctx.say(&format!(
        "added master key {reference} to {}; new keys are wrapped with it. Run `keys rewrap` \
         to move existing keys under it",
        path.display()
    ));
    Ok(())
}
