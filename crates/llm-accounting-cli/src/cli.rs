//! The command line, as clap derive types. Parsing only: names and keys are validated later,
//! by the library, so that the rules live in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use llm_accounting::{KeyFilter, KeyIdentity, KmsProviderKind, PROVIDER_NAMES, Result};

pub(crate) use crate::format::Format;

/// Text after `--help`: configuration sources and exit codes.
const AFTER_HELP: &str = "\
Configuration (weakest first): embedded defaults, the file given by --config or
LLM_ACCOUNTING_CONFIG (else llm-accounting/config.toml in the platform configuration directory,
~/.config on Linux, if it exists; never the current directory), LLM_ACCOUNTING_* environment variables (LLM_ACCOUNTING_DATABASE_URL,
LLM_ACCOUNTING_KMS_PROVIDER, LLM_ACCOUNTING_KMS_KEY_ID, LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE,
LLM_ACCOUNTING_DATA_DIR, ...), then --db, --provider and --create. With no configuration at
all, a SQLite file and a local master key in the platform data directory are used (created on
first use); a database file or master key file named explicitly must exist unless --create
(or LLM_ACCOUNTING_CREATE_IF_MISSING=true) is given.

RUST_LOG controls diagnostic logging on stderr (default: warn).

Exit codes:
  0  success
  1  any other failure (key disabled, KMS access denied, concurrent change, database error,
     a `keys delete` declined at its question)
  2  usage error or invalid input (flags, names, API key, configuration: a malformed
     database URL, a missing database or master key file, an unsafe file mode)
  3  no API key stored under that identity
  4  integrity check failed (stored key modified, moved, or under another master key)
  5  KMS or database unavailable
  6  the key's value expired (store a new one with `keys rotate`)
  7  quota exceeded (`quota check`, `keys get --model`): one line names the limit, its
     usage/maximum and when it resets; no key is printed";

/// Heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// Stores LLM provider API keys encrypted at rest under a KMS master key.
#[derive(Debug, Parser)]
#[command(
    name = "llm-accounting",
    version,
    about = "Store LLM provider API keys encrypted at rest under a KMS master key",
    long_about = "Store LLM provider API keys (OpenAI, Anthropic, ...) encrypted at rest under a \
                  KMS master key (envelope encryption: AES-256-GCM data keys wrapped by the KMS).\n\n\
                  Only `keys get` ever prints a key. Keys are read from stdin or a no-echo prompt, \
                  never from the command line unless you insist with --key.",
    after_help = AFTER_HELP
)]
pub(crate) struct Cli {
    /// Configuration file (TOML); also LLM_ACCOUNTING_CONFIG; default:
    /// ~/.config/llm-accounting/config.toml if it exists.
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub(crate) config: Option<PathBuf>,

    /// Database URL (sqlite://PATH, ...); overrides LLM_ACCOUNTING_DATABASE_URL.
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub(crate) db: Option<String>,

    /// KMS provider; overrides LLM_ACCOUNTING_KMS_PROVIDER.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        value_parser = clap::builder::PossibleValuesParser::new(PROVIDER_NAMES),
        help_heading = GLOBAL
    )]
    pub(crate) provider: Option<String>,

    /// Create the database file or local master key file named by the configuration if it
    /// does not exist (without it, a missing named file is an error: exit 2). The default
    /// files in the data directory are created on first use anyway.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(crate) create: bool,

    /// Accounting database URL (usage events, limits, reservations); overrides
    /// LLM_ACCOUNTING_ACCOUNTING_DATABASE_URL. Default: the key database.
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    pub(crate) accounting_db: Option<String>,

    /// Print no notices or confirmations on stderr (warnings and errors still appear).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub(crate) quiet: bool,

    /// Say more on stderr: which default database and master key are used (otherwise said
    /// only when they are created), and the library's warnings (`RUST_LOG` for more).
    #[arg(short, long, global = true, conflicts_with = "quiet", help_heading = GLOBAL)]
    pub(crate) verbose: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Top-level command groups.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Store, read, list and manage API keys.
    #[command(subcommand, after_help = AFTER_HELP)]
    Keys(KeysCommand),
    /// Manage the local provider's master key file.
    #[command(subcommand, name = "master-key", after_help = AFTER_HELP)]
    MasterKey(MasterKeyCommand),
    /// Run a command with API keys in its environment: `exec --env OPENAI_API_KEY=openai --
    /// COMMAND [ARGS]`. No key is printed; the command's exit code is passed through.
    #[command(after_help = EXEC_AFTER_HELP)]
    Exec(ExecArgs),
    /// Write a text file with the stored keys in place of its `{{ llm-accounting://SERVICE?user=U
    /// }}` references: `inject -i config.tpl -o config.yaml` (mode 0600; stdout without -o).
    /// Every key is read before anything is written.
    Inject(InjectArgs),
    /// Print a shell completion script: `llm-accounting completions bash > ~/.local/share/
    /// bash-completion/completions/llm-accounting` (zsh: a file `_llm-accounting` in $fpath;
    /// fish: ~/.config/fish/completions/llm-accounting.fish).
    Completions(CompletionsArgs),
    /// Print the manual page (roff; `llm-accounting manual | man -l -`), or write one page
    /// per command into a directory.
    #[command(visible_alias = "man")]
    Manual(ManualArgs),
    /// Check the configuration, the database, the master key and the KMS (a wrap/unwrap round
    /// trip of a throwaway data key), one line per check with the fix for a problem. Changes
    /// nothing: creates no file, applies no migration. Exits 1 if any check found a problem.
    Doctor(DoctorArgs),
    /// Record, summarise, list and purge usage events.
    #[command(subcommand, after_help = AFTER_HELP)]
    Usage(crate::commands::usage::UsageCommand),
    /// Set, list and delete usage limits.
    #[command(subcommand, after_help = AFTER_HELP)]
    Limits(crate::commands::limits::LimitsCommand),
    /// Check a call against the limits.
    #[command(subcommand, after_help = AFTER_HELP)]
    Quota(crate::commands::quota::QuotaCommand),
    /// The gateway: applications call models through it with a virtual key, under the
    /// quotas, and never hold a provider key (`gateway serve`, `gateway keys create`).
    #[command(subcommand, after_help = AFTER_HELP)]
    Gateway(crate::commands::gateway::GatewayCommand),
}

impl Command {
    /// Whether this command runs as a server (its logs are its output).
    pub(crate) fn is_server(&self) -> bool {
        matches!(
            self,
            Command::Gateway(crate::commands::gateway::GatewayCommand::Serve(_))
        )
    }
}

/// Arguments of `doctor`.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Output format (JSON: an array of `{check, ok, detail, fix}`).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// Arguments of `manual`.
#[derive(Debug, Args)]
pub(crate) struct ManualArgs {
    /// Write `llm-accounting.1` and one page per command (`llm-accounting-keys-store.1`, ...)
    /// into this existing directory instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// `--version`: the version, then what this binary was built with.
pub(crate) fn long_version() -> String {
    let pick = |all: &[(&'static str, bool)]| -> String {
        let names: Vec<&str> = all.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let providers: Vec<(&'static str, bool)> = KmsProviderKind::ALL
        .iter()
        .map(|kind| (kind.as_str(), kind.is_built()))
        .collect();
    format!(
        "{}\nKMS providers: {}\ndatabases: {}",
        env!("CARGO_PKG_VERSION"),
        pick(&providers),
        pick(&[
            ("sqlite", cfg!(feature = "sqlite")),
            ("postgres", cfg!(feature = "postgres")),
            ("mysql", cfg!(feature = "mysql")),
        ]),
    )
}

/// The command line as clap sees it, `--version` included.
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    // Built once per process; clap keeps `&'static str`s.
    let long: &'static str = Box::leak(long_version().into_boxed_str());
    Cli::command().long_version(long)
}

/// Parses the process's arguments (clap prints usage errors and exits 2; 0 for --help and
/// --version).
pub(crate) fn parse() -> Cli {
    use clap::FromArgMatches;
    let parsed = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    parsed.unwrap_or_else(|e| exit_escaped(&e))
}

/// Leaves on a parse error as clap would, except that the arguments it quotes are escaped
/// as the rest of the output is (an argument holding ESC, OSC 52 or U+202E would otherwise
/// act on the terminal showing the error). Help and version are printed as they are.
fn exit_escaped(e: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.render().to_string();
    let escaped: Vec<String> = text
        .lines()
        .map(|l| crate::escape::text(l).into_owned())
        .collect();
    eprintln!("{}", escaped.join("\n"));
    std::process::exit(e.exit_code())
}

/// Text after `exec --help`: the exit codes of a run.
const EXEC_AFTER_HELP: &str = "\
Every key is read (in one process, before the command starts); any that cannot be read stops
the run with the usual exit codes (2 configuration or a bad --env, 3 not found, 4 integrity,
5 unavailable, 6 expired, 1 other), and the command is not started. A command that cannot be
found exits 127, one that cannot be run 126. Once the command runs, its exit code is this
command's; a command killed by a signal gives 128 + the signal number, as shells do.
SIGTERM and SIGHUP sent to llm-accounting are passed on to the command; SIGINT and SIGQUIT
(Ctrl-C, Ctrl-\\ on a terminal reach the command directly) are ignored while it runs.";

/// Arguments of `inject`.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// The template: any text file; each `{{ llm-accounting://SERVICE[?user=U][&project=P] }}`
    /// in it is replaced by that key, everything else is copied as it is (at most 1 MiB).
    #[arg(long, short = 'i', value_name = "TEMPLATE")]
    pub(crate) in_file: PathBuf,
    /// Where to write the result (created with mode 0600); without it, stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) out_file: Option<PathBuf>,
    /// Replace the output file if it exists (refused otherwise).
    #[arg(long, requires = "out_file")]
    pub(crate) force: bool,
}

/// Arguments of `exec`.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// A variable to set: `VAR=SERVICE[:USER[:PROJECT]]` (an empty USER with a PROJECT:
    /// `VAR=SERVICE::PROJECT`), or `VAR=llm-accounting://SERVICE?user=U&project=P`.
    /// Repeatable.
    #[arg(long = "env", value_name = "VAR=SERVICE[:USER[:PROJECT]]")]
    pub(crate) env: Vec<String>,
    /// A `.env` file, read as python-dotenv reads it (quotes, comments, `export`, `${VAR}`):
    /// a value `llm-accounting://SERVICE[?user=U][&project=P]` is replaced by that stored key;
    /// every other variable is passed as it is. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub(crate) env_file: Vec<PathBuf>,
    /// Let a key into this variable although it changes how the command is loaded or run
    /// (`LD_*`, `DYLD_*`, `PATH`, `BASH_ENV`, `PYTHONSTARTUP`, `NODE_OPTIONS`, ...: refused
    /// otherwise). Repeat for several.
    #[arg(long, value_name = "VAR")]
    pub(crate) allow_name: Vec<String>,
    /// Gate every hand-out on the quota for a call to this model (by each key's service, user
    /// and project): over a limit, exit 7 and the command is not started; else one request
    /// per key is recorded.
    #[arg(long, value_name = "M")]
    pub(crate) model: Option<String>,
    /// With --model: the estimated prompt tokens of the call.
    #[arg(long, value_name = "N", requires = "model", default_value_t = 0)]
    pub(crate) input_tokens: u64,
    /// The command to run and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub(crate) command: Vec<std::ffi::OsString>,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Store a key (a new one, or a new version of an existing one) from stdin or a prompt.
    #[command(after_help = AFTER_HELP)]
    Store(StoreArgs),
    /// Print the current value of a key on stdout (with `inject`, the only commands that print
    /// a key).
    #[command(after_help = AFTER_HELP)]
    Get(GetArgs),
    /// List stored keys with non-secret metadata.
    #[command(after_help = AFTER_HELP)]
    List(ListArgs),
    /// Replace the value of an existing key; the old value is kept as the previous version.
    #[command(after_help = AFTER_HELP)]
    Rotate(StoreArgs),
    /// Refuse reads of a key until it is enabled again.
    #[command(after_help = AFTER_HELP)]
    Disable(IdentityArgs),
    /// Make a disabled key readable again.
    #[command(after_help = AFTER_HELP)]
    Enable(IdentityArgs),
    /// Delete a key and every version of it, for good (asks first on a terminal).
    #[command(after_help = AFTER_HELP)]
    Delete(DeleteArgs),
    /// Show the audit trail (one row per operation; never a secret), or verify its hash chain.
    #[command(after_help = AFTER_HELP)]
    Audit(AuditArgs),
    /// Move every data key under the current (or another) master key or provider; online,
    /// idempotent and resumable. Exits 1 if any version failed (listed at the end).
    #[command(after_help = AFTER_HELP)]
    Rewrap(RewrapArgs),
    /// Authenticate the state of every key (current version, disabled, expiry) under a key
    /// only the KMS can unwrap: once, for a store written before sealing existed (new stores
    /// are sealed from their first write); on a sealed store, verify every key. Exits 4 naming
    /// any key whose record does not verify.
    #[command(after_help = AFTER_HELP)]
    Seal,
    /// Store every key of a `.env` file at once: `OPENAI_API_KEY=...` becomes service
    /// `openai`, `AZURE_OPENAI_API_KEY` `azure-openai` (names ending in _API_KEY, _KEY or
    /// _TOKEN; others are skipped and listed). All or nothing, in one transaction; an
    /// identity that already has a key is refused unless --rotate.
    #[command(after_help = AFTER_HELP)]
    Import(ImportArgs),
}

/// Arguments of `keys import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The dotenv file to read (`NAME=value` lines; quotes and comments as dotenv tools
    /// read them).
    #[arg(long, value_name = "FILE")]
    pub(crate) env_file: PathBuf,
    /// The user the keys belong to (absent: no user).
    #[arg(long, value_name = "U")]
    pub(crate) user: Option<String>,
    /// The project the keys belong to (absent: no project).
    #[arg(long, value_name = "P")]
    pub(crate) project: Option<String>,
    /// Map a variable to a service explicitly (`--map OPENAI_API_KEY=openai-prod`); also
    /// imports a variable whose name has none of the usual endings. Repeatable.
    #[arg(long = "map", value_name = "NAME=SERVICE")]
    pub(crate) map: Vec<String>,
    /// Rotate keys that already exist (the old value stays as the previous version); without
    /// it, an identity that already has a key refuses the whole import.
    #[arg(long)]
    pub(crate) rotate: bool,
    /// Import values with leading or trailing whitespace or several lines as they are
    /// (refused otherwise).
    #[arg(long)]
    pub(crate) keep_whitespace: bool,
    /// Output format of the summary (JSON on stdout: `{stored: [...], skipped: [...]}`).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

/// `master-key` subcommands (local provider).
#[derive(Debug, Subcommand)]
pub(crate) enum MasterKeyCommand {
    /// Add a new version to the local master key file and make it the one new keys are
    /// wrapped with; then run `keys rewrap` to move existing keys under it.
    AddVersion,
}

/// Arguments of `keys get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// Whose key, as a reference instead of the flags:
    /// `llm-accounting://SERVICE[?user=U][&project=P]`.
    #[arg(value_name = "REFERENCE", conflicts_with_all = ["service", "user", "project"])]
    pub(crate) reference: Option<String>,
    /// Service the key is for (openai, anthropic, ...).
    #[arg(long, value_name = "S", required_unless_present = "reference")]
    pub(crate) service: Option<String>,
    /// User the key belongs to (absent: no user).
    #[arg(long, value_name = "U")]
    pub(crate) user: Option<String>,
    /// Project the key belongs to (absent: no project).
    #[arg(long, value_name = "P")]
    pub(crate) project: Option<String>,
    /// Print the previous value (after a rotation, during its grace period) instead.
    #[arg(long, conflicts_with = "model")]
    pub(crate) previous: bool,
    /// Output format: the key and a newline, or a JSON object with the identity and the key.
    #[arg(long, value_enum, default_value_t = GetFormat::Text)]
    pub(crate) format: GetFormat,
    /// Gate the hand-out on the quota for a call to this model (by the key's service, user
    /// and project): over a limit, exit 7 and print no key; else one request is recorded.
    #[arg(long, value_name = "M")]
    pub(crate) model: Option<String>,
    /// With --model: the estimated prompt tokens of the call.
    #[arg(long, value_name = "N", requires = "model", default_value_t = 0)]
    pub(crate) input_tokens: u64,
}

impl GetArgs {
    /// The validated identity: from the reference, or from the flags.
    pub(crate) fn identity(&self) -> Result<KeyIdentity> {
        match (&self.reference, &self.service) {
            (Some(r), _) => crate::reference::parse(r),
            (None, Some(service)) => {
                KeyIdentity::from_parts(service, self.user.as_deref(), self.project.as_deref())
            }
            (None, None) => Err(llm_accounting::Error::invalid(
                "identity",
                "give --service (with --user, --project) or a reference",
            )),
        }
    }
}

/// Arguments of `keys audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only rows about this service.
    #[arg(long, value_name = "S")]
    pub(crate) service: Option<String>,
    /// Only rows about this user's keys.
    #[arg(long, value_name = "U")]
    pub(crate) user: Option<String>,
    /// Only this operation: store, rotate, get, get_previous, list, versions, disable, enable,
    /// delete, rewrap, rewrap_check, rotate_branch, seal, store_many, dropped (anything else
    /// is refused unless the trail holds it).
    #[arg(long, value_name = "OP")]
    pub(crate) operation: Option<String>,
    /// Only rows at or after this time: a duration back from now (`30m`, `24h`, `7d`), an RFC
    /// 3339 time (`2026-11-28T09:00:00Z`) or a date (`2026-11-28`, midnight UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub(crate) since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only rows at or before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub(crate) until: Option<chrono::DateTime<chrono::Utc>>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// Verify the whole chain instead of listing: exit 0 if intact, 4 naming the first
    /// deleted, inserted or edited row (or a row without its MAC in a sealed store).
    #[arg(long, conflicts_with_all = ["service", "user", "operation", "since", "until", "head"])]
    pub(crate) verify: bool,
    /// With --verify: also check that the trail still holds this head, as printed by
    /// `--head` and kept elsewhere (`SEQ:MAC`); a trail cut short or replaced exits 4.
    #[arg(long, value_name = "SEQ:MAC", requires = "verify")]
    pub(crate) expect_head: Option<String>,
    /// Verify the chain, then print its head, exactly one line `SEQ:MAC`, to keep outside the
    /// database (for `--verify --expect-head`).
    #[arg(long, conflicts_with_all = ["service", "user", "operation", "since", "until", "verify"])]
    pub(crate) head: bool,
}

/// Longest duration a flag takes: 100 years (time arithmetic with more overflows).
const MAX_DURATION_SECS: u64 = 100 * 366 * 24 * 3600;

/// A duration (`30d`, `12h`, `90s`) of at most 100 years.
pub(crate) fn duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("not a duration ({e}); example: 30d"))?;
    if d.as_secs() > MAX_DURATION_SECS {
        return Err("too long: at most 100 years".to_owned());
    }
    Ok(d)
}

/// A point in time for `--since`/`--until`: a duration back from now, an RFC 3339 time, or a
/// date (midnight UTC).
pub(crate) fn parse_since(s: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = parse_time(s) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    humantime::parse_duration(s)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .ok_or(())
        .map_err(|_| {
            format!(
                "`{s}` is neither a duration back from now (30m, 24h, 7d), an RFC 3339 time \
                 (2026-11-28T09:00:00Z) nor a date (2026-11-28)"
            )
        })
}

/// Arguments of `keys rewrap`.
#[derive(Debug, Args)]
pub(crate) struct RewrapArgs {
    /// Move the data keys to this provider (both providers must be configured); default: the
    /// configured provider's current master key.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(PROVIDER_NAMES))]
    pub(crate) to_provider: Option<String>,
    /// The target master key (AWS key id/ARN/alias, ...); default: the configured one.
    #[arg(long, value_name = "ID")]
    pub(crate) to_key: Option<String>,
    /// Only report how many versions are not under the target master key (and how many are
    /// under retired master-key versions); change nothing. Exits 1 if any are left.
    #[arg(long)]
    pub(crate) check: bool,
    /// Also re-encrypt the API keys under fresh data keys (default: only rewrap data keys).
    #[arg(long)]
    pub(crate) reencrypt: bool,
    /// Give every branch key (`kms.hierarchy`) a new version and move the keys onto it; old
    /// versions stay readable until then.
    #[arg(long)]
    pub(crate) rotate_branches: bool,
    /// Versions read per batch.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub(crate) batch_size: usize,
    /// Versions processed at once (concurrent KMS requests).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub(crate) concurrency: usize,
}

/// Arguments of `keys delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// Whose key.
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    /// Delete without asking (on a terminal, `keys delete` asks for confirmation first;
    /// elsewhere it never asks).
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

/// Who a key belongs to: `--service S [--user U] [--project P]`.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdentityArgs {
    /// Service the key is for (openai, anthropic, ...).
    #[arg(long, value_name = "S")]
    pub(crate) service: String,
    /// User the key belongs to (absent: no user).
    #[arg(long, value_name = "U")]
    pub(crate) user: Option<String>,
    /// Project the key belongs to (absent: no project).
    #[arg(long, value_name = "P")]
    pub(crate) project: Option<String>,
}

impl IdentityArgs {
    /// The validated identity.
    pub(crate) fn identity(&self) -> Result<KeyIdentity> {
        KeyIdentity::from_parts(&self.service, self.user.as_deref(), self.project.as_deref())
    }
}

/// Arguments of `keys store` and `keys rotate`.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Whose key it is.
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    /// The key itself. Discouraged: it shows in shell history and the process list. Without
    /// it the key is read from stdin, or prompted for without echo on a terminal.
    #[arg(long, value_name = "KEY")]
    pub(crate) key: Option<String>,
    /// The value expires after this long (`90d`, `12h`, `30m`); reads are refused from then
    /// on (exit code 6).
    #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "expires_at")]
    pub(crate) expires_in: Option<std::time::Duration>,
    /// The value expires at this time: an RFC 3339 time (`2027-01-31T00:00:00Z`) or a date
    /// (`2027-01-31`, midnight UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time_or_date)]
    pub(crate) expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Store the key exactly as given even if it starts or ends with whitespace, spans
    /// several lines, starts with `NAME=` or is in quotes (refused otherwise: usually a paste
    /// that took too much). One trailing newline on stdin is always removed.
    #[arg(long = "as-is", visible_alias = "keep-whitespace")]
    pub(crate) as_is: bool,
}

impl StoreArgs {
    /// The expiry these flags ask for.
    pub(crate) fn expiry(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.expires_at.or_else(|| {
            self.expires_in.map(|d| {
                chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
            })
        })
    }
}

/// An RFC 3339 time, or a date (midnight UTC).
fn parse_time_or_date(s: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    parse_time(s).or_else(|_| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .ok_or_else(|| {
                format!(
                    "`{s}` is neither an RFC 3339 time (2027-01-31T00:00:00Z) nor a date \
                     (2027-01-31)"
                )
            })
    })
}

fn parse_time(s: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}); example: 2027-01-31T00:00:00Z"))
}

/// Arguments of `keys list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only keys of this service.
    #[arg(long, value_name = "S")]
    pub(crate) service: Option<String>,
    /// Only keys of this user.
    #[arg(long, value_name = "U")]
    pub(crate) user: Option<String>,
    /// Only keys of this project.
    #[arg(long, value_name = "P")]
    pub(crate) project: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// Also list every version of each key (dates, state, hint, master key; never values).
    #[arg(long)]
    pub(crate) versions: bool,
    /// Only keys whose value expires within this time (`7d`, `12h`), or has expired.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) expiring: Option<std::time::Duration>,
}

impl ListArgs {
    /// The filter these flags describe.
    pub(crate) fn filter(&self) -> KeyFilter {
        KeyFilter {
            service: self.service.clone(),
            user: self.user.clone(),
            project: self.project.clone(),
        }
    }
}

/// Output format of `keys get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GetFormat {
    /// The key and a newline.
    Text,
    /// `{"service", "user", "project", "previous", "key"}`.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "llm-accounting",
            "keys",
            "get",
            "--service",
            "openai",
            "--db",
            "sqlite://x.db",
            "-q",
        ])
        .expect("parses");
        assert_eq!(cli.db.as_deref(), Some("sqlite://x.db"));
        assert!(cli.quiet);
    }

    #[test]
    fn the_long_version_names_what_was_built() {
        let v = long_version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(
            v.contains("KMS providers: ") && v.contains("databases: "),
            "{v}"
        );
        command().debug_assert();
    }

    #[test]
    fn unknown_provider_is_a_usage_error() {
        let err = Cli::try_parse_from(["llm-accounting", "--provider", "vault", "keys", "list"])
            .expect_err("refused");
        assert_eq!(err.exit_code(), 2);
    }
}
