//! The Azure Key Vault provider against the loopback fake of the Key Vault data plane
//! (`test_support::FakeKeyVault`): 401 challenge, token request, wrapKey / unwrapKey with real
//! RSA-OAEP-256, key versions, and the 403 / 404 / 429 / 5xx answers. There is no Key Vault
//! emulator; the fake follows the documented protocol.

use std::sync::Arc;
use std::time::Duration;

use llm_accounting_core::conformance::provider::{Expectations, run_with};
use llm_accounting_core::{DataKey, Error, KmsProvider};
use llm_accounting_kms_azure::AzureCredentialKind;
use llm_accounting_kms_azure::test_support::{FakeKeyVault, error_body};
use llm_accounting_testkit::{
    assert_unavailable, closed_port_url, conformance_through_layers, ctx, error_chain, layered,
    quick_layers,
};

/// Each Key Vault call in failure tests is cut off after this.
const CALL_TIMEOUT: Duration = Duration::from_millis(3000);

const UNBOUND: Expectations = Expectations {
    binds_context: false,
};

#[tokio::test]
async fn conformance_against_the_fake() {
    let fake = FakeKeyVault::start();
    fake.create_key_version("conformance");
    let key = FakeKeyVault::key_id("conformance");
    let provider = fake.builder(&key).build().expect("provider");
    run_with(&provider, UNBOUND).await;
    // Key Vault binds no context; the branch layer does, so it meets every expectation.
    llm_accounting_core::conformance::branch::run(Arc::new(
        fake.builder(&key).build().expect("provider"),
    ))
    .await;

    conformance_through_layers(
        Arc::new(fake.builder(&key).build().expect("provider")),
        UNBOUND,
    )
    .await;
}

#[tokio::test]
async fn the_handshake_is_challenge_then_token_then_the_call() {
    let fake = FakeKeyVault::start();
    fake.create_key_version("k");
    let provider = fake
        .builder(&FakeKeyVault::key_id("k"))
        .build()
        .expect("provider");
    let c = ctx("openai", Some("alice"), 1);
    let dek = DataKey::generate().expect("rng");
    let wrapped = provider.wrap_key(&dek, &c).await.expect("wrap");
    let back = provider.unwrap_key(&wrapped, &c).await.expect("unwrap");
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests[0].ends_with("/wrapkey"), "challenge: {requests:?}");
    assert!(requests[1].ends_with("/oauth2/v2.0/token"), "{requests:?}");
    assert!(requests[2].ends_with("/wrapkey"), "{requests:?}");
    // The unwrap names the version recorded with the ciphertext.
    let version = wrapped.master_key_ref.rsplit('/').next().expect("version");
    assert_eq!(requests[3], format!("POST /keys/k/{version}/unwrapkey"));
    assert_eq!(provider.master_key_ref(), wrapped.master_key_ref);
}

#[tokio::test]
async fn rotation_keeps_old_records_readable() {
    let fake = FakeKeyVault::start();
    let v1 = fake.create_key_version("rotating");
    let provider = fake
        .builder(&FakeKeyVault::key_id("rotating"))
        .build()
        .expect("provider");
    let c = ctx("openai", None, 1);
    let old_dek = DataKey::generate().expect("rng");
    let old = provider.wrap_key(&old_dek, &c).await.expect("wrap v1");
    assert_eq!(
        old.master_key_ref, v1,
        "the full versioned key id is recorded"
    );

    let v2 = fake.create_key_version("rotating");
    let new_dek = DataKey::generate().expect("rng");
    let new = provider.wrap_key(&new_dek, &c).await.expect("wrap v2");
    assert_eq!(new.master_key_ref, v2);
    assert_eq!(
        provider
            .unwrap_key(&old, &c)
            .await
            .expect("old")
            .expose_secret(),
        old_dek.expose_secret()
    );
    assert_eq!(
        provider
            .unwrap_key(&new, &c)
            .await
            .expect("new")
            .expose_secret(),
        new_dek.expose_secret()
    );

    // A ciphertext of v1 presented as v2's: Key Vault cannot unwrap it → integrity.
    let mut swapped = old.clone();
    swapped.master_key_ref = v2.clone();
    let err = provider
        .unwrap_key(&swapped, &c)
        .await
        .expect_err("wrong version");
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");

    // A pinned version keeps wrapping under it after rotation.
    let pinned = fake.builder(&v1).build().expect("provider");
    let w = pinned.wrap_key(&new_dek, &c).await.expect("wrap pinned");
    assert_eq!(w.master_key_ref, v1);

    // A disabled old version: a clear refusal naming it, and nothing lost once re-enabled.
    let v1_id = v1.rsplit('/').next().expect("version").to_owned();
    fake.set_enabled("rotating", &v1_id, false);
    let err = provider.unwrap_key(&old, &c).await.expect_err("disabled");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(
        error_chain(&err).contains("disabled"),
        "{}",
        error_chain(&err)
    );
    fake.set_enabled("rotating", &v1_id, true);
    provider.unwrap_key(&old, &c).await.expect("re-enabled");
}

#[tokio::test]
async fn missing_keys_and_denied_access_are_refusals_never_no_key() {
    let fake = FakeKeyVault::start();
    let provider = fake
        .builder(&FakeKeyVault::key_id("absent"))
        .build()
        .expect("provider");
    let c = ctx("openai", None, 1);
    let dek = DataKey::generate().expect("rng");
    let err = provider.wrap_key(&dek, &c).await.expect_err("no such key");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(
        error_chain(&err).contains("not found"),
        "{}",
        error_chain(&err)
    );

    fake.create_key_version("absent");
    fake.push_response(
        403,
        &error_body(
            "Forbidden",
            "The user, group or application does not have keys unwrapKey permission.",
        ),
    );
    let (layered, metrics) = layered(Arc::new(provider), &quick_layers(CALL_TIMEOUT));
    let err = layered.wrap_key(&dek, &c).await.expect_err("forbidden");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        error_chain(&err).contains("wrapKey and unwrapKey"),
        "{}",
        error_chain(&err)
    );
    assert_eq!(metrics.snapshot().retries, 0);
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_configuration_error() {
    let fake = FakeKeyVault::start();
    fake.create_key_version("k");
    let provider = fake
        .builder(&FakeKeyVault::key_id("k"))
        .with_credential(AzureCredentialKind::ClientSecret {
            tenant_id: llm_accounting_kms_azure::test_support::FAKE_TENANT_ID.into(),
            client_id: llm_accounting_kms_azure::test_support::FAKE_CLIENT_ID.into(),
            client_secret: String::from("wrong-secret-FAKE").into(),
        })
        .build()
        .expect("provider");
    let err = provider
        .wrap_key(&DataKey::generate().expect("rng"), &ctx("openai", None, 1))
        .await
        .expect_err("bad secret");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(
        !error_chain(&err).contains("wrong-secret-FAKE"),
        "{}",
        error_chain(&err)
    );
}

#[tokio::test]
async fn throttling_and_outages_are_retried() {
    let fake = FakeKeyVault::start();
    fake.create_key_version("k");
    let provider = fake
        .builder(&FakeKeyVault::key_id("k"))
        .build()
        .expect("provider");
    let c = ctx("openai", None, 1);
    let dek = DataKey::generate().expect("rng");
    // Warm up (challenge + token) so the canned answers hit the calls themselves.
    let wrapped = provider.wrap_key(&dek, &c).await.expect("wrap");
    fake.push_response(
        429,
        &error_body(
            "Throttled",
            "Request was not processed because too many requests were received.",
        ),
    );
    fake.push_response(503, &error_body("ServiceUnavailable", "try later"));
    let (layered, metrics) = layered(Arc::new(provider), &quick_layers(CALL_TIMEOUT));
    let back = layered
        .unwrap_key(&wrapped, &c)
        .await
        .expect("third attempt");
    assert_eq!(back.expose_secret(), dek.expose_secret());
    assert_eq!(metrics.snapshot().retries, 2);

    let bare = fake
        .builder(&FakeKeyVault::key_id("k"))
        .build()
        .expect("provider");
    bare.wrap_key(&dek, &c).await.expect("warm up");
    for status in [429, 500, 503] {
        fake.push_response(status, &error_body("Whatever", "try later"));
        let err = bare.unwrap_key(&wrapped, &c).await.expect_err("canned");
        assert!(
            matches!(
                err,
                Error::ProviderUnavailable {
                    retryable: true,
                    ..
                }
            ),
            "{status}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_is_retryable_unavailable() {
    let url = closed_port_url();
    let provider = llm_accounting_kms_azure::AzureKeyVaultProvider::builder()
        .with_key_id(FakeKeyVault::key_id("k"))
        .with_endpoint(&url)
        .with_credential(FakeKeyVault::credential())
        .build()
        .expect("provider");
    let err = provider
        .wrap_key(&DataKey::generate().expect("rng"), &ctx("openai", None, 1))
        .await
        .expect_err("nothing listens");
    assert_unavailable(&err, true);
}
