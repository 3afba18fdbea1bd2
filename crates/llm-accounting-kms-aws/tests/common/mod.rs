//! What the AWS provider's tests share: moto with a fresh key, and the per-call deadline of
//! failure tests.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use llm_accounting_kms_aws::aws_sdk_kms::Client;
use llm_accounting_kms_aws::test_support::{self, create_key};
use llm_accounting_testkit::moto_url;

/// Each KMS call in failure tests is cut off after this.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// moto, a client of it, and a key made there for one test.
pub struct Moto {
    /// moto's URL.
    pub url: String,
    /// A client with dummy credentials.
    pub client: Client,
    /// The key's id.
    pub key_id: String,
    /// The key's ARN.
    pub arn: String,
}

/// moto with a fresh key described as `description`, or `None` (the test skips) when moto
/// cannot be reached (see `moto_url`).
pub async fn moto_with_key(test: &str, description: &str) -> Option<Moto> {
    let url = moto_url(test)?;
    let client = test_support::client(&url);
    let (key_id, arn) = create_key(&client, description).await;
    Some(Moto {
        url,
        client,
        key_id,
        arn,
    })
}
