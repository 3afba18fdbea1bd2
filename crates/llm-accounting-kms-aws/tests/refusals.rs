//! The AWS provider against moto: a disabled, deleted or missing master key is a clear
//! refusal, never "no key", and is not retried; nothing stored is lost.

use std::sync::Arc;
use std::time::Duration;

use llm_accounting_core::{
    ApiKey, DataKey, Error, KeyFilter, KeyIdentity, KmsProvider, MemoryKeyRepository,
    SecureKeyManager,
};
use llm_accounting_kms_aws::AwsKmsProvider;
use llm_accounting_kms_aws::test_support;
use llm_accounting_testkit::{ctx, error_chain, layered, moto_url, quick_layers};
use uuid::Uuid;

mod common;

use common::{CALL_TIMEOUT, Moto, moto_with_key};

#[tokio::test]
async fn a_disabled_key_under_branch_keys_is_a_clear_error_once_the_branch_is_evicted() {
    use llm_accounting_core::branch::{BranchKeyProvider, BranchKeyStore, Hierarchy};
    let Some(Moto {
        client,
        key_id,
        arn,
        ..
    }) = moto_with_key(
        "a_disabled_key_under_branch_keys_is_a_clear_error",
        "llm-accounting branch disable",
    )
    .await
    else {
        return;
    };
    let repo = Arc::new(MemoryKeyRepository::new());
    let open = || {
        let (provider, metrics) = layered(
            Arc::new(AwsKmsProvider::from_client(&client, &arn).expect("provider")),
            &quick_layers(CALL_TIMEOUT),
        );
        let branch = Arc::new(BranchKeyProvider::new(
            provider,
            Arc::clone(&repo) as Arc<dyn BranchKeyStore>,
            Hierarchy::Service,
            Duration::from_secs(600),
        ));
        let manager = SecureKeyManager::new(
            Arc::clone(&branch) as Arc<dyn KmsProvider>,
            Arc::clone(&repo) as Arc<dyn llm_accounting_core::KeyRepository>,
        );
        (manager, branch, metrics)
    };
    let (manager, branch, _) = open();
    let id = KeyIdentity::from_parts("openai", Some("alice"), None).expect("valid");
    let original = "sk-test-FAKE-branch-disabled-00000001";
    manager
        .store(&id, &ApiKey::new(original.into()))
        .await
        .expect("store");
    client
        .disable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("DisableKey");

    // The trade-off SECURITY.md states: a cached branch key keeps serving its branch until
    // it expires or is evicted...
    manager.clear_cache();
    assert!(manager.get(&id).await.is_ok());
    // ...and once evicted, the disabled KMS key is a clear error, not retried.
    branch.evict_all();
    manager.clear_cache();
    let err = manager.get(&id).await.expect_err("disabled");
    assert!(
        matches!(&err, Error::AccessDenied { reason, .. } if reason.contains("disabled")),
        "{err:?}"
    );
    let text = error_chain(&err);
    assert!(text.contains("DisabledException"), "{text}");
    assert!(!text.contains(original), "no secret in errors: {text}");

    // A fresh process: the same error, one KMS call.
    let (fresh, _, metrics) = open();
    let err = fresh.get(&id).await.expect_err("disabled");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    let m = metrics.snapshot();
    assert_eq!((m.unwraps, m.retries), (1, 0), "{m:?}");
    // A new branch cannot be made under it either.
    let other = KeyIdentity::new("anthropic").expect("valid");
    let err = fresh
        .store(
            &other,
            &ApiKey::new("sk-test-FAKE-branch-disabled-2".into()),
        )
        .await
        .expect_err("no branch under a disabled key");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");

    client
        .enable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("EnableKey");
    let (fresh, _, _) = open();
    assert_eq!(
        fresh.get(&id).await.expect("readable").expose_secret(),
        original
    );
}

#[tokio::test]
async fn a_disabled_key_is_a_clear_error_and_nothing_is_lost() {
    let Some(Moto {
        client,
        key_id,
        arn,
        ..
    }) = moto_with_key(
        "a_disabled_key_is_a_clear_error_and_nothing_is_lost",
        "llm-accounting disable",
    )
    .await
    else {
        return;
    };
    let (provider, metrics) = layered(
        Arc::new(AwsKmsProvider::from_client(&client, &arn).expect("provider")),
        &quick_layers(CALL_TIMEOUT),
    );
    let repo = Arc::new(MemoryKeyRepository::new());
    let manager = SecureKeyManager::new(provider, repo.clone());
    let id = KeyIdentity::from_parts("openai", Some("alice"), None).expect("valid");
    let original = "sk-test-FAKE-disabled-key-0000000001";
    manager
        .store(&id, &ApiKey::new(original.into()))
        .await
        .expect("store");
    manager.clear_cache();

    client
        .disable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("DisableKey");
    let before = metrics.snapshot();
    let err = manager.get(&id).await.expect_err("key disabled in KMS");
    let text = error_chain(&err);
    assert!(
        matches!(&err, Error::AccessDenied { reason, .. } if reason.contains("disabled")),
        "{err:?}"
    );
    assert!(text.contains("DisabledException"), "{text}");
    assert!(!text.contains(original), "no secret in errors: {text}");
    let m = metrics.snapshot().since(&before);
    assert_eq!(
        (m.calls(), m.retries),
        (1, 0),
        "a refusal is not retried: {m:?}"
    );

    // Writing is refused the same way, and changes nothing.
    let err = manager
        .store(
            &id,
            &ApiKey::new("sk-test-FAKE-disabled-key-0000000002".into()),
        )
        .await
        .expect_err("cannot wrap under a disabled key");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    let listed = manager
        .list(&KeyFilter::default())
        .await
        .expect("list")
        .keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].current_version, 1, "no new version was written");

    client
        .enable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("EnableKey");
    assert_eq!(
        manager
            .get(&id)
            .await
            .expect("readable again")
            .expose_secret(),
        original
    );
}

#[tokio::test]
async fn a_key_pending_deletion_is_a_clear_error_until_cancelled() {
    let Some(Moto {
        client,
        key_id,
        arn,
        ..
    }) = moto_with_key(
        "a_key_pending_deletion_is_a_clear_error_until_cancelled",
        "llm-accounting deletion",
    )
    .await
    else {
        return;
    };
    let provider = AwsKmsProvider::from_client(&client, &arn).expect("provider");
    let c = ctx("mistral", Some("carol"), 1);
    let (dek, wrapped) = provider.generate_data_key(&c).await.expect("generate");

    client
        .schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");
    let err = provider
        .unwrap_key(&wrapped, &c)
        .await
        .expect_err("pending deletion");
    assert!(
        matches!(&err, Error::AccessDenied { reason, .. } if reason.contains("pending deletion")),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    // Cancelling leaves the key disabled (as in AWS); enabling it makes the data key readable.
    client
        .cancel_key_deletion()
        .key_id(&key_id)
        .send()
        .await
        .expect("CancelKeyDeletion");
    client
        .enable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("EnableKey");
    let back = provider.unwrap_key(&wrapped, &c).await.expect("unwrap");
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn a_missing_key_is_access_denied_never_no_key() {
    let Some(url) = moto_url("a_missing_key_is_access_denied_never_no_key") else {
        return;
    };
    let client = test_support::client(&url);
    let missing = format!(
        "arn:aws:kms:{}:123456789012:key/{}",
        test_support::TEST_REGION,
        Uuid::new_v4()
    );
    let provider = AwsKmsProvider::from_client(&client, &missing).expect("provider");
    let err = provider
        .generate_data_key(&ctx("openai", None, 1))
        .await
        .expect_err("no such key");
    assert!(
        matches!(&err, Error::AccessDenied { reason, .. } if reason.contains("not found")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let alias = AwsKmsProvider::from_client(&client, "alias/llm-accounting-does-not-exist")
        .expect("provider");
    let err = alias
        .wrap_key(&DataKey::generate().expect("rng"), &ctx("openai", None, 1))
        .await
        .expect_err("no such alias");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
}
