//! Helpers for tests and benchmarks against moto's KMS server (feature `test-support`).
//!
//! `scripts/test` starts moto on a free loopback port and exports its URL as
//! [`MOTO_URL_ENV`]. Tests call [`moto_url`] first: without a reachable moto they print a loud
//! notice and skip, unless `LLM_ACCOUNTING_REQUIRE_SERVICES=1`, where they fail.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};

/// Variable holding the moto server's URL (`http://127.0.0.1:PORT`).
pub const MOTO_URL_ENV: &str = "LLM_ACCOUNTING_TEST_MOTO_URL";

/// Variable that turns a missing service into a test failure (`1`).
pub const REQUIRE_SERVICES_ENV: &str = "LLM_ACCOUNTING_REQUIRE_SERVICES";

/// The region test clients use.
pub const TEST_REGION: &str = "us-east-1";

/// Dummy credentials (moto accepts any).
pub const TEST_ACCESS_KEY_ID: &str = "testing";
/// Dummy secret access key.
pub const TEST_SECRET_ACCESS_KEY: &str = "testing";

/// Whether missing services must fail tests.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|v| v == "1")
}

/// The moto URL if moto is reachable. Otherwise prints a loud SKIPPED notice naming `test`
/// and returns `None`, or panics when [`services_required`].
pub fn moto_url(test: &str) -> Option<String> {
    let url = std::env::var(MOTO_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty());
    let problem = match &url {
        None => format!("{MOTO_URL_ENV} is not set (scripts/test starts moto and sets it)"),
        Some(u) if !reachable(u) => format!("moto is not reachable at {u}"),
        Some(_) => return url,
    };
    if services_required() {
        panic!("{test}: {problem}, and {REQUIRE_SERVICES_ENV}=1 requires it");
    }
    eprintln!(
        "\n*** SKIPPED {test}: {problem}. Run scripts/test, or start moto yourself \
         (python3 scripts/moto_kms_server.py -H 127.0.0.1 -p 5000) and set {MOTO_URL_ENV}. \
         With {REQUIRE_SERVICES_ENV}=1 this is a failure. ***\n"
    );
    None
}

/// Whether a TCP connection to the URL's host and port succeeds within a second.
fn reachable(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let Ok(addrs) = host_port.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// An SDK client for the moto server at `url`: dummy static credentials, [`TEST_REGION`], no
/// SDK retries. Nothing is read from the environment.
pub fn client(url: &str) -> Client {
    let conf = aws_sdk_kms::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(TEST_REGION))
        .credentials_provider(Credentials::new(
            TEST_ACCESS_KEY_ID,
            TEST_SECRET_ACCESS_KEY,
            None,
            None,
            "llm-accounting-tests",
        ))
        .endpoint_url(url)
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// A new symmetric KMS key in moto; returns (key id, key ARN).
///
/// # Panics
/// If moto refuses (tests want to stop there).
pub async fn create_key(client: &Client, description: &str) -> (String, String) {
    let out = client
        .create_key()
        .description(description)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateKey in moto failed: {}",
                llm_accounting_core::error_chain(&e)
            )
        });
    let meta = out.key_metadata.expect("CreateKey returns KeyMetadata");
    let arn = meta.arn.expect("KeyMetadata has an Arn");
    (meta.key_id, arn)
}
