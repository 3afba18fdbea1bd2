//! The Google Cloud KMS provider against drongo's emulator (started by scripts/test) and
//! against a loopback fake of the Cloud KMS REST API for what drongo cannot show: real
//! tamper detection (drongo's "ciphertext" is encoded plaintext, not crypto), primary-version
//! rotation, disabled versions, permission denied, quota exhaustion and outages.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use llm_accounting_core::conformance::provider::Expectations;
use llm_accounting_core::{DataKey, Error, KmsProvider};
use llm_accounting_kms_gcp::GcpKmsProvider;
use llm_accounting_kms_gcp::google_cloud_kms_v1::model::DecryptRequest;
use llm_accounting_kms_gcp::test_support::{self, create_key};
use llm_accounting_testkit::{
    assert_unavailable, closed_port_url, conformance_through_layers, ctx, drongo_url, error_chain,
    layered, quick_layers,
};
use serde_json::{Value, json};

const FAKE_KEY: &str = "projects/fake/locations/global/keyRings/ring/cryptoKeys/api-keys";

/// Each KMS call in failure tests is cut off after this.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

fn provider_for(url: &str, key: &str) -> GcpKmsProvider {
    GcpKmsProvider::builder()
        .with_key_name(key)
        .with_endpoint(url)
        .with_anonymous_credentials()
        .build()
        .expect("provider")
}

// ---------------------------------------------------------------------------------------------
// drongo

#[tokio::test]
async fn round_trip_against_drongo() {
    let Some(url) = drongo_url("round_trip_against_drongo") else {
        return;
    };
    let key = create_key(&url, "round-trip").await;
    let provider = provider_for(&url, &key);
    let c = ctx("openai", Some("alice"), 1);
    let dek = DataKey::generate().expect("rng");
    let wrapped = provider.wrap_key(&dek, &c).await.expect("wrap");
    assert_eq!(wrapped.provider, "gcp");
    assert_eq!(wrapped.master_key_ref, key);
    let back = provider.unwrap_key(&wrapped, &c).await.expect("unwrap");
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let (fresh, fresh_wrapped) = provider.generate_data_key(&c).await.expect("generate");
    let fresh_back = provider
        .unwrap_key(&fresh_wrapped, &c)
        .await
        .expect("unwrap generated");
    assert_eq!(fresh.expose_secret(), fresh_back.expose_secret());
}

#[tokio::test]
async fn conformance_over_branch_keys_against_drongo() {
    let Some(url) = drongo_url("conformance_over_branch_keys_against_drongo") else {
        return;
    };
    // drongo's own ciphertext is no crypto, but the branch layer's is: the suite passes.
    let key = create_key(&url, "branch-conformance").await;
    llm_accounting_core::conformance::branch::run(Arc::new(provider_for(&url, &key))).await;
}

#[tokio::test]
async fn a_wrong_context_is_refused_by_kms_itself() {
    let Some(url) = drongo_url("a_wrong_context_is_refused_by_kms_itself") else {
        return;
    };
    let key = create_key(&url, "context").await;
    let provider = provider_for(&url, &key);
    let alice = ctx("openai", Some("alice"), 1);
    let dek = DataKey::generate().expect("rng");
    let wrapped = provider.wrap_key(&dek, &alice).await.expect("wrap");
    for other in [
        ctx("openai", Some("bob"), 1),
        ctx("openai", None, 1),
        ctx("openai", Some("alice"), 2),
        ctx("anthropic", Some("alice"), 1),
    ] {
        let err = provider
            .unwrap_key(&wrapped, &other)
            .await
            .expect_err("another context");
        assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
    }

    // Straight at Cloud KMS with the AAD the provider sends: KMS refuses, not us.
    let client = test_support::client(&url).await;
    let refused = client
        .decrypt()
        .with_request(
            DecryptRequest::new()
                .set_name(&key)
                .set_ciphertext(wrapped.ciphertext.clone())
                .set_additional_authenticated_data(ctx("openai", Some("bob"), 1).canonical_bytes()),
        )
        .send()
        .await
        .expect_err("KMS checks the AAD");
    let status = refused.status().expect("a Cloud KMS status");
    assert_eq!(status.code.name(), "INVALID_ARGUMENT", "{refused}");
    let ok = client
        .decrypt()
        .set_name(&key)
        .set_ciphertext(wrapped.ciphertext.clone())
        .set_additional_authenticated_data(alice.canonical_bytes())
        .send()
        .await
        .expect("the right AAD");
    assert_eq!(ok.plaintext.as_ref(), dek.expose_secret());
}

#[tokio::test]
async fn a_missing_key_is_access_denied_never_no_key() {
    let Some(url) = drongo_url("a_missing_key_is_access_denied_never_no_key") else {
        return;
    };
    let key = create_key(&url, "missing").await;
    let provider = provider_for(&url, &format!("{key}-gone"));
    let err = provider
        .wrap_key(&DataKey::generate().expect("rng"), &ctx("openai", None, 1))
        .await
        .expect_err("no such key");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        error_chain(&err).contains("not found"),
        "{}",
        error_chain(&err)
    );
}

// ---------------------------------------------------------------------------------------------
// The loopback fake

/// One stored ciphertext of the fake.
struct Entry {
    version: u32,
    plaintext: Vec<u8>,
    aad: Vec<u8>,
}

/// State of the fake Cloud KMS: one CryptoKey with numbered versions.
#[derive(Default)]
struct FakeState {
    primary: u32,
    disabled: Vec<u32>,
    entries: HashMap<Vec<u8>, Entry>,
    /// Canned answers (status, body) given before any real handling.
    script: VecDeque<(u16, String)>,
    /// (path, body) of every request.
    requests: Vec<(String, Value)>,
}

#[derive(Clone)]
struct FakeKms {
    url: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeKms {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(FakeState {
            primary: 1,
            ..FakeState::default()
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        FakeKms { url, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }

    fn provider(&self) -> GcpKmsProvider {
        provider_for(&self.url, FAKE_KEY)
    }
}

fn status_body(code: u16, status: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message, "status": status}}).to_string()
}

fn b64_field(body: &Value, field: &str) -> Vec<u8> {
    body.get(field)
        .and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// Answers one request (the client is told to close the connection afterwards).
fn serve(stream: TcpStream, state: &Mutex<FakeState>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = handle(&path, &body, &mut state.lock().expect("fake state"));
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

fn handle(path: &str, body: &Value, s: &mut FakeState) -> (u16, String) {
    s.requests.push((path.to_owned(), body.clone()));
    if let Some(canned) = s.script.pop_front() {
        return canned;
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return (404, status_body(404, "NOT_FOUND", "no route"));
    };
    let (name, method) = rest.rsplit_once(':').unwrap_or((rest, ""));
    if name != FAKE_KEY {
        return (404, status_body(404, "NOT_FOUND", "CryptoKey not found"));
    }
    let aad = b64_field(body, "additionalAuthenticatedData");
    match method {
        "encrypt" => {
            let version = s.primary;
            if s.disabled.contains(&version) {
                return (
                    400,
                    status_body(400, "FAILED_PRECONDITION", "version is not enabled"),
                );
            }
            let mut ciphertext = vec![u8::try_from(version).unwrap_or(0)];
            ciphertext.extend_from_slice(DataKey::generate().expect("rng").expose_secret());
            s.entries.insert(
                ciphertext.clone(),
                Entry {
                    version,
                    plaintext: b64_field(body, "plaintext"),
                    aad,
                },
            );
            let answer = json!({
                "name": format!("{FAKE_KEY}/cryptoKeyVersions/{version}"),
                "ciphertext": B64.encode(&ciphertext),
            });
            (200, answer.to_string())
        }
        "decrypt" => {
            let ciphertext = b64_field(body, "ciphertext");
            let Some(entry) = s.entries.get(&ciphertext) else {
                return (
                    400,
                    status_body(
                        400,
                        "INVALID_ARGUMENT",
                        "Decryption failed: the ciphertext is invalid.",
                    ),
                );
            };
            if entry.aad != aad {
                return (
                    400,
                    status_body(
                        400,
                        "INVALID_ARGUMENT",
                        "Decryption failed: the ciphertext is invalid.",
                    ),
                );
            }
            if s.disabled.contains(&entry.version) {
                return (
                    400,
                    status_body(400, "FAILED_PRECONDITION", "version is not enabled"),
                );
            }
            let answer = json!({
                "plaintext": B64.encode(&entry.plaintext),
                "usedPrimary": entry.version == s.primary,
            });
            (200, answer.to_string())
        }
        _ => (404, status_body(404, "NOT_FOUND", "no such method")),
    }
}

#[tokio::test]
async fn conformance_against_the_fake() {
    let fake = FakeKms::start();
    llm_accounting_core::conformance::branch::run(Arc::new(fake.provider())).await;
    llm_accounting_core::conformance::provider::run(&fake.provider()).await;

    // The same through the standard layers: they change nothing visible.
    conformance_through_layers(Arc::new(fake.provider()), Expectations::default()).await;
}

#[tokio::test]
async fn requests_carry_the_canonical_context_as_aad_and_name_the_crypto_key() {
    let fake = FakeKms::start();
    let provider = fake.provider();
    let c = ctx("openai", Some("alice"), 1);
    let dek = DataKey::generate().expect("rng");
    let wrapped = provider.wrap_key(&dek, &c).await.expect("wrap");
    provider.unwrap_key(&wrapped, &c).await.expect("unwrap");
    let s = fake.state();
    assert_eq!(s.requests.len(), 2);
    assert_eq!(s.requests[0].0, format!("/v1/{FAKE_KEY}:encrypt"));
    assert_eq!(s.requests[1].0, format!("/v1/{FAKE_KEY}:decrypt"));
    for (_, body) in &s.requests {
        assert_eq!(
            b64_field(body, "additionalAuthenticatedData"),
            c.canonical_bytes()
        );
    }
    assert_eq!(
        b64_field(&s.requests[0].1, "plaintext"),
        dek.expose_secret()
    );
}

#[tokio::test]
async fn decrypt_works_after_a_primary_version_rotation() {
    let fake = FakeKms::start();
    let provider = fake.provider();
    let c = ctx("openai", Some("alice"), 1);
    let old_dek = DataKey::generate().expect("rng");
    let old = provider.wrap_key(&old_dek, &c).await.expect("wrap v1");
    fake.state().primary = 2;
    let new_dek = DataKey::generate().expect("rng");
    let new = provider.wrap_key(&new_dek, &c).await.expect("wrap v2");
    assert_eq!(new.ciphertext[0], 2, "wrapped under the new primary");
    assert_eq!(old.master_key_ref, new.master_key_ref);
    assert_eq!(old.master_key_ref, FAKE_KEY);
    let back = provider.unwrap_key(&old, &c).await.expect("old record");
    assert_eq!(back.expose_secret(), old_dek.expose_secret());
    let back = provider.unwrap_key(&new, &c).await.expect("new record");
    assert_eq!(back.expose_secret(), new_dek.expose_secret());

    // Disabling the old version is a clear refusal, not an integrity failure, and nothing is
    // lost: re-enabling it makes the record readable again.
    fake.state().disabled.push(1);
    let err = provider.unwrap_key(&old, &c).await.expect_err("disabled");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(
        error_chain(&err).contains("disabled"),
        "{}",
        error_chain(&err)
    );
    fake.state().disabled.clear();
    provider.unwrap_key(&old, &c).await.expect("re-enabled");
}

#[tokio::test]
async fn permission_denied_is_access_denied_and_not_retried() {
    let fake = FakeKms::start();
    fake.state().script.push_back((
        403,
        status_body(
            403,
            "PERMISSION_DENIED",
            "Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied",
        ),
    ));
    let (p, metrics) = layered(Arc::new(fake.provider()), &quick_layers(CALL_TIMEOUT));
    let err = p
        .wrap_key(&DataKey::generate().expect("rng"), &ctx("openai", None, 1))
        .await
        .expect_err("denied");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = error_chain(&err);
    assert!(text.contains("PERMISSION_DENIED"), "{text}");
    assert!(text.contains("cryptoKeyEncrypterDecrypter"), "{text}");
    assert_eq!(metrics.snapshot().retries, 0);
    assert_eq!(
        fake.state().requests.len(),
        1,
        "one request, no SDK retries"
    );
}

#[tokio::test]
async fn quota_exhaustion_and_outages_are_retried() {
    let fake = FakeKms::start();
    {
        let mut s = fake.state();
        s.script.push_back((
            429,
            status_body(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for cryptographic requests",
            ),
        ));
        s.script.push_back((
            503,
            status_body(503, "UNAVAILABLE", "The service is unavailable"),
        ));
    }
    let (p, metrics) = layered(Arc::new(fake.provider()), &quick_layers(CALL_TIMEOUT));
    let c = ctx("openai", None, 1);
    let dek = DataKey::generate().expect("rng");
    let wrapped = p.wrap_key(&dek, &c).await.expect("third attempt succeeds");
    assert_eq!(metrics.snapshot().retries, 2);
    assert_eq!(fake.state().requests.len(), 3);

    // Without the retry layer, each is a retryable ProviderUnavailable.
    let bare = fake.provider();
    for (code, status) in [
        (429, "RESOURCE_EXHAUSTED"),
        (503, "UNAVAILABLE"),
        (500, "INTERNAL"),
    ] {
        fake.state()
            .script
            .push_back((code, status_body(code, status, "try later")));
        let err = bare.unwrap_key(&wrapped, &c).await.expect_err(status);
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
        assert!(error_chain(&err).contains(status), "{}", error_chain(&err));
    }
    let back = bare.unwrap_key(&wrapped, &c).await.expect("back up");
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn a_refused_connection_is_retryable_unavailable() {
    let url = closed_port_url();
    let err = provider_for(&url, FAKE_KEY)
        .wrap_key(&DataKey::generate().expect("rng"), &ctx("openai", None, 1))
        .await
        .expect_err("nothing listens");
    assert_unavailable(&err, true);
}

#[tokio::test]
async fn errors_never_carry_the_data_key() {
    let fake = FakeKms::start();
    fake.state()
        .script
        .push_back((400, status_body(400, "INVALID_ARGUMENT", "bad request")));
    let dek = DataKey::generate().expect("rng");
    let err = fake
        .provider()
        .wrap_key(&dek, &ctx("openai", None, 1))
        .await
        .expect_err("rejected");
    let text = format!("{} {err:?}", error_chain(&err));
    assert!(!text.contains(&B64.encode(dek.expose_secret())), "{text}");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
}
