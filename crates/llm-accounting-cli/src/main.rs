//! `llm-accounting`: store, read, list and manage LLM provider API keys encrypted at rest under
//! a KMS master key.
//!
//! ```text
//! printf '%s' "$OPENAI_API_KEY" | llm-accounting keys store --service openai --user alice
//! llm-accounting keys get --service openai --user alice
//! llm-accounting keys list --format json
//! ```
//!
//! Exit codes: 0 ok, 1 other failure, 2 usage or invalid input, 3 not found, 4 integrity
//! failure, 5 KMS or database unavailable, 6 expired, 7 quota exceeded (see
//! `llm-accounting --help`).

mod chart;
mod cli;
mod commands;
mod dotenv;
mod error_line;
mod escape;
mod exit_code;
mod format;
mod logging;
mod output;
mod print;
mod read_key;
mod reference;
mod write_file;

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // No core dumps: a crash must not write decrypted keys or data keys to disk.
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0) {
        eprintln!("warning: could not disable core dumps: {e}");
    }
    // The completion scripts' own word, before clap: no command a user sees (clap_complete
    // would offer even a hidden subcommand), no warnings, candidates only.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == commands::completions::SERVICES_WORD)
    {
        commands::completions::services().await;
        return ExitCode::SUCCESS;
    }
    // clap prints usage errors and exits 2 (0 for --help and --version).
    let cli = cli::parse();
    logging::init(cli.verbose || cli.command.is_server());
    // Doctor reports them among its checks.
    if !matches!(cli.command, cli::Command::Doctor(_)) {
        warn_unknown_variables();
    }
    match commands::run(cli).await {
        Ok(code) => ExitCode::from(code),
        // `| head`: the reader had all it wanted.
        Err(e) if print::is_broken_pipe(&e) => ExitCode::from(exit_code::OK),
        Err(e) => {
            eprintln!("{}", output::error_line(&e));
            ExitCode::from(exit_code::for_error(&e))
        }
    }
}

/// One `warning:` line on stderr per `LLM_ACCOUNTING_*` variable that nothing reads (most
/// likely a typo, which leaves the setting meant at its default), naming the nearest valid
/// one. Printed whatever `--quiet` says: it silences what succeeded, not what is wrong.
fn warn_unknown_variables() {
    for var in llm_accounting::Settings::unknown_env_vars() {
        eprintln!("{}", escape::text(&format!("warning: {var}")));
    }
}
