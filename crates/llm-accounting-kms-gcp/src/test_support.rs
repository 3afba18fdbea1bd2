//! Helpers for tests against drongo's Cloud KMS emulator (feature `test-support`): a client
//! with anonymous credentials, and a key ring with one key.
//!
//! `scripts/test` starts drongo on a free loopback port; tests find it (or skip, or fail when
//! services are required) with `llm_accounting_testkit::drongo_url`.

use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::CryptoKey;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;

/// The project and location test keys live in.
pub const TEST_LOCATION: &str = "projects/llm-accounting-test/locations/global";

/// A Cloud KMS client for the emulator at `url`: anonymous credentials, no retries.
///
/// # Panics
/// If the client cannot be made.
pub async fn client(url: &str) -> KeyManagementService {
    KeyManagementService::builder()
        .with_endpoint(url)
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .with_retry_policy(NeverRetry)
        .build()
        .await
        .expect("Cloud KMS client for the emulator")
}

/// A new key ring with one symmetric `ENCRYPT_DECRYPT` key in the emulator at `url`; returns
/// the CryptoKey name. `tag` makes the names unique per test.
///
/// # Panics
/// If the emulator refuses (tests want to stop there).
pub async fn create_key(url: &str, tag: &str) -> String {
    let client = client(url).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let ring_id = format!("{tag}-{nanos}");
    let ring = client
        .create_key_ring()
        .set_parent(TEST_LOCATION)
        .set_key_ring_id(&ring_id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateKeyRing in the emulator failed: {e}"));
    let key = client
        .create_crypto_key()
        .set_parent(&ring.name)
        .set_crypto_key_id("api-keys")
        .set_crypto_key(CryptoKey::new().set_purpose(CryptoKeyPurpose::EncryptDecrypt))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateCryptoKey in the emulator failed: {e}"));
    key.name
}
