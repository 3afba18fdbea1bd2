//! The AWS provider against moto: a builder with explicit settings, and what is recorded
//! (the key ARN, even for an alias) and read back.

use llm_accounting_core::{Error, KmsProvider};
use llm_accounting_kms_aws::AwsKmsProvider;
use llm_accounting_kms_aws::test_support::{self, create_key};
use llm_accounting_testkit::ctx;
use uuid::Uuid;

mod common;

use common::{Moto, moto_with_key};

#[tokio::test]
async fn builder_with_explicit_settings_reaches_moto() {
    let Some(Moto { url, arn, .. }) = moto_with_key(
        "builder_with_explicit_settings_reaches_moto",
        "llm-accounting builder",
    )
    .await
    else {
        return;
    };
    let provider = AwsKmsProvider::builder()
        .with_key_id(&arn)
        .with_region(test_support::TEST_REGION)
        .with_endpoint_url(&url)
        .with_static_credentials(
            test_support::TEST_ACCESS_KEY_ID,
            test_support::TEST_SECRET_ACCESS_KEY,
        )
        .build()
        .expect("provider");
    let c = ctx("openai", Some("alice"), 1);
    let (dek, wrapped) = provider.generate_data_key(&c).await.expect("generate");
    assert_eq!(wrapped.master_key_ref, arn);
    let back = provider.unwrap_key(&wrapped, &c).await.expect("unwrap");
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn an_alias_is_recorded_as_the_key_arn_and_decrypt_uses_the_record() {
    let Some(Moto {
        client,
        key_id,
        arn,
        ..
    }) = moto_with_key(
        "an_alias_is_recorded_as_the_key_arn_and_decrypt_uses_the_record",
        "llm-accounting alias",
    )
    .await
    else {
        return;
    };
    let alias = format!("alias/llm-accounting-test-{}", Uuid::new_v4().simple());
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .expect("CreateAlias");
    let provider = AwsKmsProvider::from_client(&client, &alias).expect("provider");
    assert_eq!(provider.master_key_ref(), alias, "nothing resolved yet");
    let c = ctx("anthropic", None, 7);
    let (dek, wrapped) = provider.generate_data_key(&c).await.expect("generate");
    assert_eq!(wrapped.master_key_ref, arn, "the ARN, not the alias");
    assert_eq!(provider.resolved_key_arn().as_deref(), Some(arn.as_str()));
    assert_eq!(provider.master_key_ref(), arn);
    let w2 = provider.wrap_key(&dek, &c).await.expect("wrap");
    assert_eq!(w2.master_key_ref, arn);

    // A provider configured with another key still reads the record: Decrypt names the
    // recorded key, not the configured one.
    let (_, other_arn) = create_key(&client, "llm-accounting other").await;
    let other = AwsKmsProvider::from_client(&client, &other_arn).expect("provider");
    let back = other.unwrap_key(&wrapped, &c).await.expect("unwrap");
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // A record claiming another key than the one that wrapped it is refused.
    let mut forged = wrapped.clone();
    forged.master_key_ref = other_arn;
    let err = other.unwrap_key(&forged, &c).await.expect_err("wrong key");
    assert!(
        matches!(err, Error::Integrity { .. } | Error::AccessDenied { .. }),
        "{err:?}"
    );
    assert!(!matches!(err, Error::NotFound { .. }));
}
