//! `doctor`: checks the configuration, the database, the master key and the KMS, one line per
//! check with what to do about a problem. It changes nothing: no file or directory is
//! created, no migration is applied, nothing is stored (the KMS check wraps and unwraps a
//! throwaway data key). Exit 1 if any check found a problem.

use std::path::Path;

use llm_accounting::{
    CONFIG_FILE_ENV, ConfigFileSource, DataKey, EncryptionContext, KeyIdentity, KmsProviderKind,
    Overrides, Result, SeaOrmKeyRepository, Settings, Stack, build_provider, inspect_database,
    redact_url,
};
use serde::Serialize;

use crate::cli::{Cli, DoctorArgs, Format};
use crate::{escape, exit_code, output, print};

/// One check's result.
#[derive(Debug, Serialize)]
struct Check {
    /// What was checked.
    check: &'static str,
    /// Whether it is fine.
    ok: bool,
    /// What was found.
    detail: String,
    /// What to do about a problem.
    fix: Option<String>,
}

impl Check {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Check {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn problem(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// `doctor`: the exit code (0 all fine, 1 a problem).
pub(crate) async fn doctor(cli: &Cli, args: &DoctorArgs) -> Result<u8> {
    let mut checks = Vec::new();
    let overrides = Overrides {
        database_url: cli.db.clone(),
        provider: cli.provider.clone(),
        create_if_missing: cli.create,
    };
    checks.push(variables());
    match Settings::load(cli.config.as_deref(), &overrides) {
        Ok(settings) => {
            checks.push(Check::ok("configuration", configuration_source(cli)));
            checks.push(features(&settings));
            let files = files(&settings);
            let files_ok = files.iter().all(|c| c.ok);
            checks.extend(files);
            let (db_checks, db_ready) = database(&settings).await;
            checks.extend(db_checks);
            checks.push(quota_engine(&settings).await);
            checks.extend(dashboard(&settings));
            if files_ok {
                let kms_checks = kms(&settings, db_ready).await;
                let kms_ok = kms_checks.iter().all(|c| c.ok);
                checks.extend(kms_checks);
                if kms_ok && db_ready {
                    let stored = stored_keys(&settings).await;
                    // A problem found by opening what is stored replaces the line of the same
                    // check that found nothing wrong before (the file's mode, a round trip).
                    for problem in stored.iter().filter(|c| !c.ok) {
                        checks.retain(|c| !(c.ok && c.check == problem.check));
                    }
                    checks.extend(stored);
                }
            }
        }
        Err(e) => checks.push(Check::problem(
            "configuration",
            error_text(&e),
            "correct the file, variable or flag named above; the other checks need it",
        )),
    }
    let text = match args.format {
        Format::Json => {
            escape::json(serde_json::to_string_pretty(&checks).unwrap_or_else(|_| "[]".to_owned()))
        }
        Format::Csv => {
            let mut table = comfy_table::Table::new();
            table.set_header(["CHECK", "OK", "DETAIL", "FIX"]);
            for c in &checks {
                table.add_row(escape::row([
                    c.check.to_owned(),
                    c.ok.to_string(),
                    c.detail.clone(),
                    c.fix.clone().unwrap_or_default(),
                ]));
            }
            print::use_csv(true);
            print::finish_table(table)
        }
        Format::Table => checks
            .iter()
            .map(|c| {
                let mut line = format!(
                    "{:<8} {:<14} {}",
                    if c.ok { "ok" } else { "problem" },
                    c.check,
                    c.detail
                );
                if let Some(fix) = &c.fix {
                    line.push_str(" (fix: ");
                    line.push_str(fix);
                    line.push(')');
                }
                escape::text(&line).into_owned()
            })
            .collect::<Vec<_>>()
            .join("\n"),
    };
    print::print(&text, "writing the checks")?;
    Ok(if checks.iter().all(|c| c.ok) {
        exit_code::OK
    } else {
        exit_code::OTHER
    })
}

/// An error as one line, without `error: `.
/// The quota engine, and for `redis` whether Redis answers (its URL redacted).
async fn quota_engine(settings: &Settings) -> Check {
    let a = &settings.accounting;
    let Some(url) = a
        .redis_url
        .as_deref()
        .filter(|_| a.engine == llm_accounting::AccountingEngine::Redis)
    else {
        return Check::ok("quota engine", a.engine.to_string());
    };
    let shown = redact_url(url);
    let fallback = if a.redis_fallback == llm_accounting::RedisFallback::Database {
        ", falls back to the database"
    } else {
        ""
    };
    #[cfg(feature = "redis")]
    match llm_accounting::ping_redis(url, std::time::Duration::from_secs(2)).await {
        Ok(()) => Check::ok(
            "quota engine",
            format!("redis at {shown} answers{fallback}"),
        ),
        Err(e) => Check::problem(
            "quota engine",
            format!("redis at {shown}: {}", error_text(&e)),
            "start Redis or correct accounting.redis_url (LLM_ACCOUNTING_ACCOUNTING_REDIS_URL)",
        ),
    }
    #[cfg(not(feature = "redis"))]
    Check::problem(
        "quota engine",
        format!("redis at {shown}{fallback}: this build has no feature redis"),
        "build llm-accounting with feature redis or set accounting.engine = database",
    )
}

fn error_text(e: &llm_accounting::Error) -> String {
    output::error_line(e)
        .trim_start_matches("error: ")
        .replace('\n', " ")
}

/// Which file the configuration came from.
fn configuration_source(cli: &Cli) -> String {
    let file = match Settings::config_file(cli.config.as_deref()) {
        Some((path, ConfigFileSource::Explicit)) => format!("file {} (--config)", path.display()),
        Some((path, ConfigFileSource::Env)) => {
            format!("file {} ({CONFIG_FILE_ENV})", path.display())
        }
        Some((path, _)) => format!("file {} (the default location)", path.display()),
        None => match Settings::default_config_file() {
            Some(path) => format!("no file (none at {}); embedded defaults", path.display()),
            None => "no file; embedded defaults".to_owned(),
        },
    };
    format!("{file}; no unknown settings")
}

/// The `LLM_ACCOUNTING_*` variables that are set (names only: values may hold passwords), and
/// any that nothing reads (a typo leaves the setting at its default), with the nearest name.
fn variables() -> Check {
    let unknown = Settings::unknown_env_vars();
    let mut known: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("LLM_ACCOUNTING_") && !unknown.iter().any(|u| u.name == *n))
        .collect();
    known.sort();
    if !unknown.is_empty() {
        return Check::problem(
            "variables",
            format!(
                "no setting reads {} (a typo leaves the setting at its default)",
                unknown
                    .iter()
                    .map(|u| match u.suggestion {
                        Some(s) => format!("{} (did you mean {s}?)", u.name),
                        None => u.name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "fix the name; `llm-accounting --help` lists the variables",
        );
    }
    if known.is_empty() {
        Check::ok("variables", "no LLM_ACCOUNTING_* variable set")
    } else {
        Check::ok("variables", format!("set: {}", known.join(", ")))
    }
}

/// What this binary was built with, and whether the configuration needs anything else.
fn features(settings: &Settings) -> Check {
    let built = crate::cli::long_version()
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("; ");
    let kind = settings.kms.provider;
    if !kind.is_built() {
        return Check::problem(
            "features",
            format!("KMS provider `{kind}` is configured but not built ({built})"),
            format!("rebuild with --features {}", kind.feature()),
        );
    }
    if let Ok((url, _)) = settings.database_url() {
        let scheme = url.split(':').next().unwrap_or_default();
        let feature = match scheme {
            "sqlite" => Some(("sqlite", cfg!(feature = "sqlite"))),
            "postgres" | "postgresql" => Some(("postgres", cfg!(feature = "postgres"))),
            "mysql" | "mariadb" => Some(("mysql", cfg!(feature = "mysql"))),
            _ => None,
        };
        if let Some((feature, false)) = feature {
            return Check::problem(
                "features",
                format!("the database is {scheme} but it is not built ({built})"),
                format!("rebuild with --features {feature}"),
            );
        }
    }
    Check::ok("features", built)
}

/// The database: the file and its mode (SQLite), reachable, migrations current; and whether
/// it is ready to be read (it exists, and no migration is pending).
async fn database(settings: &Settings) -> (Vec<Check>, bool) {
    let checks = database_checks(settings).await;
    let ready = checks.len() == 2 && checks.iter().all(|c| c.ok);
    (checks, ready)
}

/// The checks of [`database`]: two when the database could be inspected.
async fn database_checks(settings: &Settings) -> Vec<Check> {
    let (url, default) = match settings.database_url() {
        Ok(u) => u,
        Err(e) => {
            return vec![Check::problem(
                "database",
                error_text(&e),
                "set LLM_ACCOUNTING_DATABASE_URL",
            )];
        }
    };
    let shown = redact_url(&url);
    if let Some(path) = sqlite_path(&url) {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return vec![if default {
                    Check::ok(
                        "database",
                        format!("{shown}: not created yet (the first command creates it)"),
                    )
                } else if settings.create_if_missing {
                    Check::ok(
                        "database",
                        format!("{shown}: not created yet (created_if_missing is on)"),
                    )
                } else {
                    Check::problem(
                        "database",
                        format!("{shown}: the file does not exist"),
                        "check the path, or pass --create to create it",
                    )
                }];
            }
            Err(e) => {
                return vec![Check::problem(
                    "database",
                    format!("{shown}: {e}"),
                    "check the path and its permissions",
                )];
            }
            Ok(meta) => {
                if let Some(problem) = mode_problem("database", &shown, &meta, 0o022) {
                    return vec![problem];
                }
            }
        }
    }
    let mut options = settings.store_options();
    options.create_if_missing = false;
    match inspect_database(&url, &options).await {
        Ok(status) => {
            let reach = Check::ok(
                "database",
                format!(
                    "{shown}: reachable, {} migration(s) applied",
                    status.applied
                ),
            );
            let migrations = if status.pending.is_empty() {
                Check::ok("migrations", "current")
            } else {
                Check::problem(
                    "migrations",
                    format!(
                        "{} pending: {}",
                        status.pending.len(),
                        status.pending.join(", ")
                    ),
                    "any command that opens the store (such as `keys list`) applies them",
                )
            };
            vec![reach, migrations]
        }
        Err(e) => vec![Check::problem(
            "database",
            error_text(&e),
            "check the database URL, that the server runs, and its credentials",
        )],
    }
}

/// The file of a `sqlite://PATH` URL (not `sqlite::memory:`).
fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}

/// A problem if `meta`'s mode has any of `forbidden`'s bits (group/other access).
#[cfg(unix)]
fn mode_problem(
    check: &'static str,
    shown: &str,
    meta: &std::fs::Metadata,
    forbidden: u32,
) -> Option<Check> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & forbidden != 0).then(|| {
        Check::problem(
            check,
            format!("{shown}: mode {mode:o} lets group or others in"),
            format!("chmod {:o} {shown}", mode & !forbidden & 0o700),
        )
    })
}

#[cfg(not(unix))]
fn mode_problem(_: &'static str, _: &str, _: &std::fs::Metadata, _: u32) -> Option<Check> {
    None
}

/// The master key file (local provider) and a wrap/unwrap round trip of a throwaway data key.
/// `db_ready`: the database exists with no migration pending (it may be asked what it holds).
async fn kms(settings: &Settings, db_ready: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    let kind = settings.kms.provider;
    if !kind.is_built() {
        return checks;
    }
    if kind == KmsProviderKind::Local {
        let (path, default) = match settings.master_key_file() {
            Ok(p) => p,
            Err(e) => {
                checks.push(Check::problem(
                    "master key",
                    error_text(&e),
                    "set LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE",
                ));
                return checks;
            }
        };
        let shown = path.display().to_string();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if db_ready && holds_local_keys(settings).await {
                    checks.push(Check::problem(
                        "master key",
                        format!(
                            "{shown}: missing, and the database holds keys wrapped under it \
                             (every command that reads or writes a key fails)"
                        ),
                        "restore the master key file from a backup at that path, or point \
                         LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE at it; a new master key would not \
                         open the stored keys",
                    ));
                    return checks;
                }
                checks.push(if default || settings.create_if_missing {
                    Check::ok(
                        "master key",
                        format!("{shown}: not created yet (the first command creates it)"),
                    )
                } else {
                    Check::problem(
                        "master key",
                        format!("{shown}: the file does not exist"),
                        "check the path (restore it from a backup if keys were stored under \
                         it), or pass --create for a new one",
                    )
                });
                // Nothing to round-trip with, and making the key is not a doctor's business.
                return checks;
            }
            Err(e) => {
                checks.push(Check::problem(
                    "master key",
                    format!("{shown}: {e}"),
                    "check the path and its permissions",
                ));
                return checks;
            }
            Ok(meta) => match mode_problem("master key", &shown, &meta, 0o077) {
                Some(p) => {
                    checks.push(p);
                    return checks;
                }
                None => checks.push(Check::ok("master key", format!("{shown}: private"))),
            },
        }
    }
    checks.push(round_trip(settings).await);
    checks
}

/// Whether the database holds anything wrapped by the local provider (opened without creating
/// anything; only asked when no migration is pending). `false` when it cannot tell.
async fn holds_local_keys(settings: &Settings) -> bool {
    let Ok((url, _)) = settings.database_url() else {
        return false;
    };
    let mut options = settings.store_options();
    options.create_if_missing = false;
    match SeaOrmKeyRepository::connect(&url, &options).await {
        Ok(repo) => repo
            .has_versions_wrapped_by(KmsProviderKind::Local.as_str())
            .await
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The dashboard's admin token file, when one is named: readable, private, long enough
/// (what `gateway serve` and `usage serve` would refuse). The token is not shown.
fn dashboard(settings: &Settings) -> Option<Check> {
    let path = settings.gateway.admin_token_file.as_deref()?;
    Some(
        match llm_accounting_gateway::dashboard::AdminToken::from_file(path) {
            Ok(_) => Check::ok(
                "dashboard",
                format!(
                    "admin token file {}: private, holds a token",
                    escape::text(&path.display().to_string())
                ),
            ),
            Err(e) => Check::problem(
                "dashboard",
                escape::text(&e.to_string()).into_owned(),
                "make the file private (chmod 600) and put a token of at least 16 characters \
                 in it, or unset gateway.admin_token_file",
            ),
        },
    )
}

/// The data directory, when it exists: not writable by group or others (every file the CLI
/// makes by default is in it, and the master key file and the database are refused in one
/// that is).
fn files(settings: &Settings) -> Vec<Check> {
    // Only when something is kept there by default.
    let db_default = settings.database_url().is_ok_and(|(_, default)| default);
    let key_default = settings.kms.provider == KmsProviderKind::Local
        && settings.master_key_file().is_ok_and(|(_, default)| default);
    if !(db_default || key_default) {
        return Vec::new();
    }
    let Ok(dir) = settings.data_dir() else {
        return Vec::new();
    };
    let shown = dir.display().to_string();
    match std::fs::metadata(&dir) {
        Ok(meta) => vec![
            mode_problem("files", &format!("data directory {shown}"), &meta, 0o022)
                .unwrap_or_else(|| Check::ok("files", format!("data directory {shown}: private"))),
        ],
        Err(_) => vec![Check::ok(
            "files",
            format!("data directory {shown}: not created yet"),
        )],
    }
}

/// What is stored can be opened: the store's state key and one data key per master key in
/// use unwrap with the configured provider ([`llm_accounting::SecureKeyManager::probe`]); with
/// a cloud provider, no branch keys and many keys, what a cold start costs. Reads only: the
/// stack is built without the audit trail and without accounting.
async fn stored_keys(settings: &Settings) -> Vec<Check> {
    let local = settings.kms.provider == KmsProviderKind::Local;
    let (check, wrong_key_fix) = if local {
        (
            "master key",
            "this is not the master key file the keys were stored under: restore the right \
             one (from a backup) at its path, or point LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE at \
             it",
        )
    } else {
        (
            "kms",
            "kms.key_id names another key than the one the keys were stored under, or this \
             identity may not decrypt with it: check the key id and the permissions",
        )
    };
    let mut quiet = settings.clone();
    quiet.audit.enabled = false;
    quiet.audit.anchor_file = None;
    quiet.create_if_missing = false;
    let stack = match Stack::builder(&quiet).accounting(false).build().await {
        Ok(stack) => stack,
        Err(e) => return vec![Check::problem("keys", error_text(&e), wrong_key_fix)],
    };
    let probed = stack.manager().probe().await;
    let _ = stack.shutdown().await;
    let report = match probed {
        Ok(report) => report,
        Err(e) => {
            return vec![Check::problem(
                check,
                format!("the store's state key does not unwrap: {}", error_text(&e)),
                wrong_key_fix,
            )];
        }
    };
    let mut checks = Vec::new();
    for m in report.master_keys.iter().filter(|m| m.error.is_some()) {
        let error = m.error.as_ref().map(error_text).unwrap_or_default();
        checks.push(Check::problem(
            check,
            format!(
                "{} key version(s) wrapped by {} under {}: one does not open: {error}",
                m.versions, m.provider, m.master_key_ref
            ),
            wrong_key_fix,
        ));
    }
    if !checks.is_empty() {
        return checks;
    }
    let mut detail = format!(
        "{} key(s) stored; {} and {} master key(s) in use opened (one data key each)",
        report.keys,
        if report.sealed {
            "the store's state key"
        } else {
            "no state key (not sealed)"
        },
        report.master_keys.len()
    );
    let branches_off = settings.kms.hierarchy.to_core() == llm_accounting::branch::Hierarchy::Off;
    if !local && branches_off && report.keys > 100 {
        detail.push_str(&format!(
            "; advice: with kms.hierarchy = off a cold start makes one KMS request per key \
             ({}); kms.hierarchy = service would make one per service ({}) (then run `keys \
             rewrap`)",
            report.keys, report.services
        ));
    }
    checks.push(Check::ok("keys", detail));
    checks
}

/// Wraps and unwraps a fresh data key under a throwaway context.
async fn round_trip(settings: &Settings) -> Check {
    let kind = settings.kms.provider;
    let result = async {
        let (provider, _) = build_provider(settings)?;
        let identity = KeyIdentity::new("llm-accounting-doctor")?;
        let context = EncryptionContext::new(uuid::Uuid::new_v4(), identity, 1);
        let key = DataKey::generate()?;
        let wrapped = provider.wrap_key(&key, &context).await?;
        let back = provider.unwrap_key(&wrapped, &context).await?;
        Ok::<_, llm_accounting::Error>(back.expose_secret() == key.expose_secret())
    }
    .await;
    match result {
        Ok(true) => Check::ok(
            "kms",
            format!("provider {kind}: a data key wrapped and unwrapped"),
        ),
        Ok(false) => Check::problem(
            "kms",
            format!("provider {kind}: the unwrapped data key differs from the wrapped one"),
            "the KMS (or an emulator in its place) is broken; do not store keys with it",
        ),
        Err(e) => Check::problem(
            "kms",
            error_text(&e),
            "check the master key id, the credentials and their permissions (wrap and unwrap \
             / encrypt and decrypt)",
        ),
    }
}
