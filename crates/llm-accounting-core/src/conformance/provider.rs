//! The [`KmsProvider`] conformance suite.

use uuid::Uuid;

use crate::{ApiKey, DataKey, EncryptionContext, Error, KeyIdentity, KmsProvider, envelope};

fn ctx(
    service: &str,
    user: Option<&str>,
    project: Option<&str>,
    version: u32,
) -> EncryptionContext {
    EncryptionContext::new(
        Uuid::from_u128(0x1234),
        KeyIdentity::from_parts(service, user, project).expect("valid identity"),
        version,
    )
}

fn assert_integrity(result: crate::Result<DataKey>, what: &str) {
    match result {
        Err(Error::Integrity { .. }) => {}
        Err(other) => panic!("{what}: expected an integrity error, got {other:?}"),
        Ok(_) => panic!("{what}: expected an integrity error, but the key unwrapped"),
    }
}

/// What a provider promises beyond the base contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectations {
    /// Whether `unwrap_key` itself refuses another context (AWS EncryptionContext, GCP AAD,
    /// local AES-GCM AAD). Key Vault's RSA wrapKey takes no AAD: there only the envelope binds
    /// the context, which the suite checks either way.
    pub binds_context: bool,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            binds_context: true,
        }
    }
}

/// Runs every check against `provider`: round trips, context binding, tamper detection and
/// envelope sealing. Makes one wrap/unwrap call per check, plus one per flipped byte (at most
/// 64 positions).
pub async fn run(provider: &dyn KmsProvider) {
    run_with(provider, Expectations::default()).await;
}

/// Like [`run`], for a provider with other [`Expectations`]: without `binds_context`, unwrapping
/// under another context must give the same key (nothing is checked at that layer), and the
/// envelope must still refuse another context.
pub async fn run_with(provider: &dyn KmsProvider, expectations: Expectations) {
    assert!(
        !provider.name().is_empty(),
        "provider name must not be empty"
    );
    let base = ctx("conformance", Some("alice"), Some("proj"), 3);

    // Round trip through wrap_key.
    let dek = DataKey::generate().expect("rng");
    let wrapped = provider.wrap_key(&dek, &base).await.expect("wrap");
    assert_eq!(
        wrapped.provider,
        provider.name(),
        "wrapped key names its provider"
    );
    assert!(
        !wrapped.master_key_ref.is_empty(),
        "wrapped key names its master key"
    );
    assert!(
        !wrapped
            .ciphertext
            .windows(dek.expose_secret().len())
            .any(|w| w == dek.expose_secret()),
        "wrapped key must not contain the data key"
    );
    let back = provider.unwrap_key(&wrapped, &base).await.expect("unwrap");
    assert_eq!(back.expose_secret(), dek.expose_secret(), "round trip");

    // Wrapping twice gives different ciphertexts (randomized).
    let again = provider.wrap_key(&dek, &base).await.expect("wrap again");
    assert_ne!(
        again.ciphertext, wrapped.ciphertext,
        "wrapping must be randomized"
    );

    // generate_data_key gives a usable pair.
    let (fresh, fresh_wrapped) = provider.generate_data_key(&base).await.expect("generate");
    let fresh_back = provider
        .unwrap_key(&fresh_wrapped, &base)
        .await
        .expect("unwrap generated");
    assert_eq!(fresh.expose_secret(), fresh_back.expose_secret());

    // Every part of the context is bound.
    let other_record = EncryptionContext::new(Uuid::from_u128(0x1235), base.identity().clone(), 3);
    for (what, other) in [
        ("another record id", other_record),
        (
            "another service",
            ctx("conformance2", Some("alice"), Some("proj"), 3),
        ),
        (
            "another user",
            ctx("conformance", Some("bob"), Some("proj"), 3),
        ),
        ("no user", ctx("conformance", None, Some("proj"), 3)),
        (
            "another project",
            ctx("conformance", Some("alice"), Some("proj2"), 3),
        ),
        ("no project", ctx("conformance", Some("alice"), None, 3)),
        (
            "another version",
            ctx("conformance", Some("alice"), Some("proj"), 4),
        ),
    ] {
        let result = provider.unwrap_key(&wrapped, &other).await;
        if expectations.binds_context {
            assert_integrity(result, what);
        } else {
            let key = result.unwrap_or_else(|e| panic!("{what}: unbound unwrap failed: {e:?}"));
            assert_eq!(key.expose_secret(), dek.expose_secret(), "{what}");
        }
    }

    // Any changed byte of the wrapped key fails.
    let n = wrapped.ciphertext.len();
    let step = n.div_ceil(64).max(1);
    for i in (0..n).step_by(step).chain([n - 1]) {
        let mut bad = wrapped.clone();
        bad.ciphertext[i] ^= 0x01;
        match provider.unwrap_key(&bad, &base).await {
            Ok(_) => panic!("flipping byte {i} of the wrapped key went unnoticed"),
            Err(Error::Integrity { .. } | Error::AccessDenied { .. } | Error::NotFound { .. }) => {}
            Err(other) => panic!("flipping byte {i}: unexpected error {other:?}"),
        }
    }
    let mut truncated = wrapped.clone();
    truncated.ciphertext.truncate(n / 2);
    assert!(
        provider.unwrap_key(&truncated, &base).await.is_err(),
        "a truncated wrapped key must fail"
    );

    // Sealing an API key through the envelope.
    let api_key = ApiKey::new("sk-conformance-FAKE-0123456789".into());
    let sealed = envelope::seal(provider, &base, &api_key)
        .await
        .expect("seal");
    let opened = envelope::open(provider, &base, &sealed)
        .await
        .expect("open");
    assert_eq!(opened.expose_secret(), api_key.expose_secret());
    let moved = ctx("conformance", Some("mallory"), Some("proj"), 3);
    assert!(
        matches!(
            envelope::open(provider, &moved, &sealed).await,
            Err(Error::Integrity { .. })
        ),
        "an envelope opened under another identity must fail"
    );
}
