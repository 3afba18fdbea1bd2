//! The AWS provider against moto's KMS server (started by scripts/test), plus loopback fakes
//! for the failures moto cannot produce (throttling, 5xx, hangs, refused connections).
//!
//! Every test creates its own KMS keys, with dummy credentials set here, not read from the
//! environment.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use llm_accounting_core::layers::{self, KmsMetrics, LayerOptions, RetryPolicy};
use llm_accounting_core::{
    ApiKey, DataKey, EncryptionContext, Error, KeyFilter, KeyIdentity, KmsProvider,
    MemoryKeyRepository, SecureKeyManager,
};
use llm_accounting_kms_aws::test_support::{self, create_key};
use llm_accounting_kms_aws::{AwsKmsProvider, aws_sdk_kms};
use llm_accounting_testkit::{ctx, error_chain, moto_url, quick_layers};
use uuid::Uuid;

/// Each KMS call in failure tests is cut off after this.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn conformance_against_moto() {
    let Some(url) = moto_url("conformance_against_moto") else {
        return;
    };
    let client = test_support::client(&url);
    let (_, arn) = create_key(&client, "llm-accounting conformance").await;
    let provider = AwsKmsProvider::from_client(&client, &arn).expect("provider");
    llm_accounting_core::conformance::provider::run(&provider).await;

    // The same through the standard layers: they change nothing visible.
    let metrics = Arc::new(KmsMetrics::new());
    let layered = layers::stack(
        Arc::new(AwsKmsProvider::from_client(&client, &arn).expect("provider")),
        &LayerOptions::default(),
        Arc::clone(&metrics),
    );
    llm_accounting_core::conformance::provider::run(layered.as_ref()).await;
    let m = metrics.snapshot();
    assert!(m.calls() > 20, "{m:?}");
    assert_eq!(m.retries, 0, "nothing in the suite is retryable: {m:?}");
}

#[tokio::test]
async fn conformance_over_branch_keys_against_moto() {
    let Some(url) = moto_url("conformance_over_branch_keys_against_moto") else {
        return;
    };
    let client = test_support::client(&url);
    let (_, arn) = create_key(&client, "llm-accounting branch conformance").await;
    let provider = AwsKmsProvider::from_client(&client, &arn).expect("provider");
    llm_accounting_core::conformance::branch::run(Arc::new(provider)).await;
}

#[tokio::test]
async fn builder_with_explicit_settings_reaches_moto() {
    let Some(url) = moto_url("builder_with_explicit_settings_reaches_moto") else {
        return;
    };
    let (_, arn) = create_key(&test_support::client(&url), "llm-accounting builder").await;
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
async fn a_wrong_context_is_refused_by_kms_itself() {
    let Some(url) = moto_url("a_wrong_context_is_refused_by_kms_itself") else {
        return;
    };
    let client = test_support::client(&url);
    let (_, arn) = create_key(&client, "llm-accounting context").await;
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

#[tokio::test]
async fn an_alias_is_recorded_as_the_key_arn_and_decrypt_uses_the_record() {
    let Some(url) = moto_url("an_alias_is_recorded_as_the_key_arn_and_decrypt_uses_the_record")
    else {
        return;
    };
    let client = test_support::client(&url);
    let (key_id, arn) = create_key(&client, "llm-accounting alias").await;
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

#[tokio::test]
async fn a_disabled_key_under_branch_keys_is_a_clear_error_once_the_branch_is_evicted() {
    use llm_accounting_core::branch::{BranchKeyProvider, BranchKeyStore, Hierarchy};
    let Some(url) = moto_url("a_disabled_key_under_branch_keys_is_a_clear_error") else {
        return;
    };
    let client = test_support::client(&url);
    let (key_id, arn) = create_key(&client, "llm-accounting branch disable").await;
    let repo = Arc::new(MemoryKeyRepository::new());
    let open = || {
        let metrics = Arc::new(KmsMetrics::new());
        let provider = layers::stack(
            Arc::new(AwsKmsProvider::from_client(&client, &arn).expect("provider")),
            &quick_layers(CALL_TIMEOUT),
            Arc::clone(&metrics),
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
    let Some(url) = moto_url("a_disabled_key_is_a_clear_error_and_nothing_is_lost") else {
        return;
    };
    let client = test_support::client(&url);
    let (key_id, arn) = create_key(&client, "llm-accounting disable").await;
    let metrics = Arc::new(KmsMetrics::new());
    let provider = layers::stack(
        Arc::new(AwsKmsProvider::from_client(&client, &arn).expect("provider")),
        &quick_layers(CALL_TIMEOUT),
        Arc::clone(&metrics),
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
    let Some(url) = moto_url("a_key_pending_deletion_is_a_clear_error_until_cancelled") else {
        return;
    };
    let client = test_support::client(&url);
    let (key_id, arn) = create_key(&client, "llm-accounting deletion").await;
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

// ---- Failures moto cannot produce: loopback fakes (no moto needed) ----

/// A closed loopback port: bound, then released.
fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_unavailable() {
    let url = closed_port_url();
    let client = test_support::client(&url);
    let metrics = Arc::new(KmsMetrics::new());
    let provider = layers::stack(
        Arc::new(AwsKmsProvider::from_client(&client, "alias/any").expect("provider")),
        &quick_layers(CALL_TIMEOUT),
        Arc::clone(&metrics),
    );
    let err = provider
        .generate_data_key(&ctx("openai", None, 1))
        .await
        .expect_err("nothing listens");
    // Unavailable; after the retries are spent, no longer retryable (a caller's own retry
    // would multiply the attempts).
    assert!(
        matches!(
            err,
            Error::ProviderUnavailable {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    let text = error_chain(&err);
    assert!(text.contains("gave up after 3 attempts"), "{text}");
    let m = metrics.snapshot();
    assert_eq!((m.generates, m.failures, m.retries), (3, 3, 2), "{m:?}");
}

/// A fake KMS on loopback answering each request with the next canned (status, body), one
/// connection per request; after the script, it answers 500.
fn fake_kms(script: Vec<(u16, String)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (status, body) = script
                .next()
                .unwrap_or((500, r#"{"__type":"KMSInternalException"}"#.into()));
            if answer(stream, status, &body).is_err() {
                continue;
            }
        }
    });
    url
}

fn answer(mut stream: TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut request_body = vec![0u8; length];
    reader.read_exact(&mut request_body)?;
    let content_type = if body.starts_with('{') {
        "application/x-amz-json-1.1"
    } else {
        "text/html"
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    use base64::Engine;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000001";
    let success = format!(
        r#"{{"CiphertextBlob":"{}","KeyId":"{arn}","Plaintext":"{}"}}"#,
        encode(&[7u8; 64]),
        encode(&[9u8; 32])
    );
    let url = fake_kms(vec![
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into(),
        ),
        (500, r#"{"__type":"KMSInternalException"}"#.into()),
        (503, "<html>Service Unavailable</html>".into()),
        (200, success),
    ]);
    let client = test_support::client(&url);
    let metrics = Arc::new(KmsMetrics::new());
    let provider = layers::stack(
        Arc::new(AwsKmsProvider::from_client(&client, "alias/any").expect("provider")),
        &LayerOptions {
            retry: RetryPolicy {
                max_attempts: 4,
                ..quick_layers(CALL_TIMEOUT).retry
            },
            ..quick_layers(CALL_TIMEOUT)
        },
        Arc::clone(&metrics),
    );
    let (dek, wrapped) = provider
        .generate_data_key(&ctx("openai", None, 1))
        .await
        .expect("fourth attempt succeeds");
    assert_eq!(dek.expose_secret(), &[9u8; 32]);
    assert_eq!(wrapped.master_key_ref, arn);
    let m = metrics.snapshot();
    assert_eq!(
        (m.generates, m.retryable_failures, m.retries),
        (4, 3, 3),
        "{m:?}"
    );

    // Each one alone, without retries: retryable unavailable, never "no key".
    for (status, body, expect) in [
        (
            400,
            r#"{"__type":"ThrottlingException"}"#,
            "ThrottlingException",
        ),
        (
            500,
            r#"{"__type":"KMSInternalException"}"#,
            "KMSInternalException",
        ),
        (503, "<html>Service Unavailable</html>", "503"),
    ] {
        let url = fake_kms(vec![(status, body.into())]);
        let p = AwsKmsProvider::from_client(&test_support::client(&url), "alias/any")
            .expect("provider");
        let err = p
            .generate_data_key(&ctx("openai", None, 1))
            .await
            .expect_err("fails");
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
        assert!(
            error_chain(&err).contains(expect),
            "{status}: {}",
            error_chain(&err)
        );
    }

    // A 400 that is not transient is not retried.
    let url = fake_kms(vec![(
        400,
        r#"{"__type":"AccessDeniedException","message":"User is not authorized"}"#.into(),
    )]);
    let metrics = Arc::new(KmsMetrics::new());
    let p = layers::stack(
        Arc::new(AwsKmsProvider::from_client(&test_support::client(&url), "alias/any").expect("p")),
        &quick_layers(CALL_TIMEOUT),
        Arc::clone(&metrics),
    );
    let err = p
        .unwrap_key(
            &llm_accounting_core::WrappedKey {
                provider: "aws".into(),
                master_key_ref: arn.into(),
                ciphertext: vec![1; 64],
            },
            &ctx("openai", None, 1),
        )
        .await
        .expect_err("denied");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(
        error_chain(&err).contains("not authorized"),
        "{}",
        error_chain(&err)
    );
    assert_eq!(metrics.snapshot().retries, 0);
}

#[tokio::test]
async fn a_hung_kms_times_out_and_is_retried() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let metrics = Arc::new(KmsMetrics::new());
    let provider = layers::stack(
        Arc::new(AwsKmsProvider::from_client(&test_support::client(&url), "alias/any").expect("p")),
        &LayerOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                ..quick_layers(CALL_TIMEOUT).retry
            },
            timeout: Some(Duration::from_millis(300)),
        },
        Arc::clone(&metrics),
    );
    let err = provider
        .generate_data_key(&ctx("openai", None, 1))
        .await
        .expect_err("hangs");
    // Each timed-out attempt was retryable (it was retried); the final error, with the
    // retries spent, is not.
    assert!(
        matches!(
            err,
            Error::ProviderUnavailable {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    let text = error_chain(&err);
    assert!(text.contains("no answer within 300 ms"), "{text}");
    assert!(text.contains("gave up after 2 attempts"), "{text}");
    let m = metrics.snapshot();
    assert_eq!((m.generates, m.retries), (2, 1), "{m:?}");
}
