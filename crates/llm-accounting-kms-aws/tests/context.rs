//! The AWS provider against moto: the record's context is KMS's EncryptionContext, so KMS
//! itself refuses a data key under another one.

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use llm_accounting_core::{DataKey, EncryptionContext, Error, KmsProvider};
use llm_accounting_kms_aws::{AwsKmsProvider, aws_sdk_kms};
use llm_accounting_testkit::ctx;

mod common;

use common::{Moto, moto_with_key};

#[tokio::test]
async fn a_wrong_context_is_refused_by_kms_itself() {
    let Some(Moto { client, arn, .. }) = moto_with_key(
        "a_wrong_context_is_refused_by_kms_itself",
        "llm-accounting context",
    )
    .await
    else {
        return;
    };
    let provider = AwsKmsProvider::from_client(&client, &arn).expect("provider");
    let alice = ctx("openai", Some("alice"), 1);
    let bob = ctx("openai", Some("bob"), 1);
    let dek = DataKey::generate().expect("rng");
    let wrapped = provider.wrap_key(&dek, &alice).await.expect("wrap");

    // Through the provider: an opaque integrity error.
    let err = provider
        .unwrap_key(&wrapped, &bob)
        .await
        .expect_err("another user's context");
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");

    // Straight at KMS with the context our provider sends: KMS refuses, not us.
    let to_kms = |c: &EncryptionContext| {
        c.to_map()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let refused = client
        .decrypt()
        .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
        .set_encryption_context(Some(to_kms(&bob)))
        .send()
        .await
        .expect_err("KMS checks the context");
    assert_eq!(refused.code(), Some("InvalidCiphertextException"));
    let ok = client
        .decrypt()
        .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
        .set_encryption_context(Some(to_kms(&alice)))
        .send()
        .await
        .expect("the right context decrypts");
    assert_eq!(
        ok.plaintext().expect("plaintext").as_ref(),
        dek.expose_secret()
    );
    // And no context at all is refused too.
    let none = client
        .decrypt()
        .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
        .send()
        .await
        .expect_err("context is required");
    assert_eq!(none.code(), Some("InvalidCiphertextException"));
}
