//! Helpers for tests and benchmarks against moto's KMS server (feature `test-support`): an SDK
//! client with dummy credentials, and CreateKey.
//!
//! `scripts/test` starts moto on a free loopback port; tests find it (or skip, or fail when
//! services are required) with `llm_accounting_testkit::moto_url`.

use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};

/// The region test clients use.
pub const TEST_REGION: &str = "us-east-1";

/// Dummy credentials (moto accepts any).
pub const TEST_ACCESS_KEY_ID: &str = "testing";
/// Dummy secret access key.
pub const TEST_SECRET_ACCESS_KEY: &str = "testing";

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
