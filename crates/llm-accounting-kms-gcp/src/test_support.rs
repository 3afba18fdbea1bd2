//! Helpers for tests against drongo's Cloud KMS emulator (feature `test-support`).
//!
//! `scripts/test` starts drongo on a free loopback port and exports its URL as
//! [`DRONGO_URL_ENV`]. Tests call [`drongo_url`] first: without a reachable drongo they print a
//! loud notice and skip, unless `LLM_ACCOUNTING_REQUIRE_SERVICES=1`, where they fail.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::CryptoKey;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;

/// Variable holding the drongo server's URL (`http://127.0.0.1:PORT`).
pub const DRONGO_URL_ENV: &str = "LLM_ACCOUNTING_TEST_DRONGO_URL";

/// Variable that turns a missing service into a test failure (`1`).
pub const REQUIRE_SERVICES_ENV: &str = "LLM_ACCOUNTING_REQUIRE_SERVICES";

/// The project and location test keys live in.
pub const TEST_LOCATION: &str = "projects/llm-accounting-test/locations/global";

/// Whether missing services must fail tests.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|v| v == "1")
}

/// The drongo URL if drongo is reachable. Otherwise prints a loud SKIPPED notice naming `test`
/// and returns `None`, or panics when [`services_required`].
pub fn drongo_url(test: &str) -> Option<String> {
    let url = std::env::var(DRONGO_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty());
    let problem = match &url {
        None => format!("{DRONGO_URL_ENV} is not set (scripts/test starts drongo and sets it)"),
        Some(u) if !reachable(u) => format!("drongo is not reachable at {u}"),
        Some(_) => return url,
    };
    if services_required() {
        panic!("{test}: {problem}, and {REQUIRE_SERVICES_ENV}=1 requires it");
    }
    eprintln!(
        "\n*** SKIPPED {test}: {problem}. Run scripts/test, or start drongo yourself \
         (pip install drongo google-crc32c; drongo server --host 127.0.0.1 --port 8089) and set \
         {DRONGO_URL_ENV}. With {REQUIRE_SERVICES_ENV}=1 this is a failure. ***\n"
    );
    None
}

/// Whether a TCP connection to the URL's host and port succeeds within a second.
fn reachable(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let Ok(addrs) = host_port.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

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
