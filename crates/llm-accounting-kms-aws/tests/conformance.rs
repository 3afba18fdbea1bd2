//! The AWS provider against moto (started by scripts/test): the provider and branch-key
//! conformance suites, bare and through the standard layers.

use std::sync::Arc;

use llm_accounting_core::conformance::provider::Expectations;
use llm_accounting_kms_aws::AwsKmsProvider;
use llm_accounting_testkit::conformance_through_layers;

mod common;

use common::{Moto, moto_with_key};

#[tokio::test]
async fn conformance_against_moto() {
    let Some(Moto { client, arn, .. }) =
        moto_with_key("conformance_against_moto", "llm-accounting conformance").await
    else {
        return;
    };
    let provider = AwsKmsProvider::from_client(&client, &arn).expect("provider");
    llm_accounting_core::conformance::provider::run(&provider).await;

    // The same through the standard layers: they change nothing visible.
    let provider = AwsKmsProvider::from_client(&client, &arn).expect("provider");
    conformance_through_layers(Arc::new(provider), Expectations::default()).await;
}

#[tokio::test]
async fn conformance_over_branch_keys_against_moto() {
    let Some(Moto { client, arn, .. }) = moto_with_key(
        "conformance_over_branch_keys_against_moto",
        "llm-accounting branch conformance",
    )
    .await
    else {
        return;
    };
    let provider = AwsKmsProvider::from_client(&client, &arn).expect("provider");
    llm_accounting_core::conformance::branch::run(Arc::new(provider)).await;
}
