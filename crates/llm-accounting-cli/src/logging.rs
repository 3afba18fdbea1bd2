//! Diagnostic logging: `tracing` to stderr, filtered by `RUST_LOG`; without it, [`DEFAULT`]
//! with `-v` and for servers (`gateway serve`), else [`QUIET`]: a command's failure is its
//! one `error:` line, not log lines before it.

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Caps the AWS SDK's runtime at `debug`: at `trace` it prints whole HTTP requests, and an
/// `Encrypt` request carries the data key being wrapped.
///
/// Database URLs need no cap: the store builds its PostgreSQL and MySQL pools with sqlx
/// itself, so sea-orm's connect span, which records the whole URL, never runs (tested at
/// `trace` against both servers with a password in the URL: `tests/database_urls.rs`).
const AWS_SDK_CAP: &str = "aws_smithy_runtime=debug";

/// The filter without `RUST_LOG`: warnings, except the AWS SDK's multi-line dumps of each
/// failed attempt to reach the EC2 instance metadata service (IMDS) for a region or
/// credentials. Off EC2 they are expected, and the one-line error that follows says what is
/// missing (`RUST_LOG=aws_config=debug` shows them).
const DEFAULT: &str = "warn,aws_config::imds=error,aws_config::meta::credentials::chain=error";

/// The filter of a command without `RUST_LOG` or `-v`: only the warnings meant for the user
/// (a store whose record state is not authenticated), which come with their hint.
const QUIET: &str = "off,llm_accounting_core::unsealed=warn";

/// Installs the global subscriber. `verbose`: `-v`, or a server's logs. An unparsable
/// `RUST_LOG` falls back to [`DEFAULT`].
pub(crate) fn init(verbose: bool) {
    let fallback = if verbose { DEFAULT } else { QUIET };
    let filter = match std::env::var_os("RUST_LOG") {
        Some(_) => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT)),
        None => EnvFilter::new(fallback),
    };
    // Only when something may be at trace: otherwise the directive would raise the target.
    let filter = match (filter.max_level_hint(), AWS_SDK_CAP.parse()) {
        (Some(LevelFilter::TRACE) | None, Ok(cap)) => filter.add_directive(cap),
        _ => filter,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Only fails if a subscriber is already set, which leaves logging working anyway.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(Hints)
        .try_init();
}

/// Prints this CLI's hint (see [`crate::output::log_hint`]) after each library warning that
/// has one, as [`crate::output::error_line`] adds them to errors.
struct Hints;

impl<S: Subscriber> Layer<S> for Hints {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() <= Level::WARN
            && let Some(hint) = crate::output::log_hint(event.metadata().target())
        {
            eprintln!("hint: {hint}");
        }
    }
}
