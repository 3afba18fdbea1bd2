//! SecureKeyManager over the in-memory repository and an AES-GCM test provider: failures: KMS outages, tampered and moved ciphertexts, unconfigured providers, and no
//! secret in debug output.

use std::sync::atomic::Ordering;

use llm_accounting_core::{
    DataKey, Envelope, Error, KeyRepository, ManagerOptions, SecureKeyManager,
};

mod common;

use common::{TestProvider, fixture, id, key};

#[tokio::test]
async fn kms_outage_on_read_is_unavailable_not_missing() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", None);
    f.manager
        .store(&a, &key("sk-test-FAKE-outage-000000"))
        .await
        .expect("store");
    f.provider.fail.store(true, Ordering::SeqCst);
    let err = f.manager.get(&a).await.expect_err("down");
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    f.provider.fail.store(false, Ordering::SeqCst);
    assert!(f.manager.get(&a).await.is_ok(), "errors are not cached");
}

#[tokio::test]
async fn every_changed_byte_of_an_envelope_fails_with_integrity() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", Some("alice"));
    let out = f
        .manager
        .store(&a, &key("sk-test-FAKE-tamper-00000"))
        .await
        .expect("store");
    let original = f.repo.versions_of(out.key_id)[0].envelope.clone();
    for i in 0..original.len() {
        let mut bad = original.clone();
        bad[i] ^= 0x20;
        f.repo.overwrite_envelope(out.key_id, 1, bad);
        f.manager.clear_cache();
        match f.manager.get(&a).await {
            Err(Error::Integrity { identity: Some(_) }) => {}
            other => panic!("byte {i}: expected integrity error, got {other:?}"),
        }
    }
    f.repo.overwrite_envelope(out.key_id, 1, original);
    assert!(f.manager.get(&a).await.is_ok());
}

#[tokio::test]
async fn ciphertexts_moved_between_identities_or_versions_fail() {
    let f = fixture(ManagerOptions::default());
    let alice = id("openai", Some("alice"));
    let bob = id("openai", Some("bob"));
    let other_service = id("anthropic", Some("alice"));
    let a = f
        .manager
        .store(&alice, &key("sk-test-FAKE-alice-0000000"))
        .await
        .expect("store");
    let b = f
        .manager
        .store(&bob, &key("sk-test-FAKE-bob-000000000"))
        .await
        .expect("store");
    let c = f
        .manager
        .store(&other_service, &key("sk-test-FAKE-anth-00000000"))
        .await
        .expect("store");
    let a2 = f
        .manager
        .store(&alice, &key("sk-test-FAKE-alice-v2-00000"))
        .await
        .expect("store");
    let env = |k, v| {
        f.repo
            .versions_of(k)
            .into_iter()
            .find(|x| x.version == v)
            .expect("version")
            .envelope
    };

    // Bob's ciphertext in Alice's row (another user), another service's, and Alice's own
    // version 1 in place of version 2.
    for (what, moved) in [
        ("another user", env(b.key_id, 1)),
        ("another service", env(c.key_id, 1)),
        ("another version", env(a.key_id, 1)),
    ] {
        f.repo.overwrite_envelope(a2.key_id, 2, moved);
        f.manager.clear_cache();
        assert!(
            matches!(f.manager.get(&alice).await, Err(Error::Integrity { .. })),
            "{what}: moved ciphertext must not decrypt"
        );
    }
    // Re-labelling the version inside the envelope does not help either.
    let mut relabelled = Envelope::from_bytes(&env(a.key_id, 1)).expect("decode");
    relabelled.key_version = 2;
    f.repo
        .overwrite_envelope(a2.key_id, 2, relabelled.to_bytes().expect("encode"));
    f.manager.clear_cache();
    assert!(matches!(
        f.manager.get(&alice).await,
        Err(Error::Integrity { .. })
    ));
}

#[tokio::test]
async fn envelope_from_an_unconfigured_provider_is_a_clear_error() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", None);
    f.manager
        .store(&a, &key("sk-test-FAKE-migrate-00000"))
        .await
        .expect("store");
    // A second manager on the same repository with another provider cannot read it...
    let other = SecureKeyManager::new(TestProvider::new("other", 9), f.repo.clone());
    assert!(
        matches!(other.get(&a).await, Err(Error::ProviderNotConfigured { provider }) if provider == "test")
    );
    // ...unless the old provider is configured for decryption.
    let both = SecureKeyManager::builder(TestProvider::new("other", 9), f.repo.clone())
        .decrypt_provider(f.provider.clone())
        .build();
    assert_eq!(
        both.get(&a).await.expect("get").expose_secret(),
        "sk-test-FAKE-migrate-00000"
    );
}

#[tokio::test]
async fn debug_output_never_shows_secrets() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", None);
    let secret = "sk-test-FAKE-debug-canary-0000";
    f.manager.store(&a, &key(secret)).await.expect("store");
    let k = f.manager.get(&a).await.expect("get");
    let versions = f
        .repo
        .versions_of(f.repo.find_key(&a).await.expect("f").expect("e").id);
    for text in [
        format!("{k:?}"),
        format!("{:?}", f.manager),
        format!("{versions:?}"),
        format!("{:?}", DataKey::generate().expect("rng")),
    ] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("canary"), "{text}");
    }
}
