//! End-to-end tests of the `keys` and `master-key` commands: a real SQLite file and a real
//! local master key in a temporary directory, keys on stdin, exit codes and output checked.
//!
//! One test target, one module per behaviour (as OpenDAL's `tests/behavior/`); what the
//! modules share is here.

mod audit;
mod default_locations;
mod exit_codes;
mod integrity;
mod lifecycle;
mod no_leaks;
mod rewrap;
mod round_trip;

use std::path::Path;

use llm_accounting_testkit::Run;
use sea_orm::{Database, DatabaseConnection};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-0000000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-0000000000000000000000000002";
const KEY_BOB: &str = "sk-test-FAKE-0000000000000000000000000b0b";

/// Checks that no output carries a secret, except `get`'s stdout.
fn assert_no_secret(run: &Run, secrets: &[&str], stdout_may_have_it: bool) {
    for s in secrets {
        assert!(!run.stderr.contains(s), "secret on stderr: {run:#?}");
        if !stdout_may_have_it {
            assert!(!run.stdout.contains(s), "secret on stdout: {run:#?}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(db: &Path) -> DatabaseConnection {
    Database::connect(format!("sqlite://{}", db.display()))
        .await
        .expect("open the test database")
}
