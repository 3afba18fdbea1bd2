//! The `llm-accounting` binary with `--provider gcp` against drongo's Cloud KMS emulator
//! (started by scripts/test), and against a KMS endpoint that is down.
//!
//! The binary gets its settings the way a user's shell would give them (the CryptoKey name, an
//! endpoint override, anonymous credentials); nothing from the test process's own Google Cloud
//! environment leaks in.

#![cfg(feature = "kms-gcp")]

use llm_accounting_kms_gcp::test_support::create_key;
use llm_accounting_testkit::{
    self as testkit, CloudHooks, Env, RoundTrip, closed_port_url, drongo_url,
};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-gcp-00000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-gcp-00000000000000000000000002";

/// A temporary database and the Google Cloud environment of one test; `endpoint` goes to
/// LLM_ACCOUNTING_KMS_ENDPOINT.
fn cloud_env(key_name: &str, endpoint: &str) -> Env {
    let mut env = testkit::cloud_env(
        BIN,
        &["GOOGLE_", "CLOUDSDK_", "GCE_"],
        &[KEY1, KEY2],
        key_name,
        endpoint,
        &[
            ("LLM_ACCOUNTING_GCP_CREDENTIALS", "anonymous"),
            // Never ask a metadata server.
            ("GCE_METADATA_HOST", "127.0.0.1:1"),
        ],
    );
    // An empty gcloud configuration directory: the user's own ADC file is never read.
    let gcloud = env.dir().join("gcloud");
    std::fs::create_dir(&gcloud).expect("gcloud dir");
    env.set("CLOUDSDK_CONFIG", &gcloud.display().to_string());
    env
}

/// Google Cloud's own step: a CryptoKey name that does not exist is refused.
struct GcpSteps<'a> {
    key: &'a str,
}

impl CloudHooks for GcpSteps<'_> {
    fn after_trace(&mut self, env: &mut Env, trip: &RoundTrip<'_>) {
        // Another key of the same name elsewhere: a clear refusal, not "no key".
        let [key1, _] = trip.values;
        env.set("LLM_ACCOUNTING_KMS_KEY_ID", &format!("{}-gone", self.key));
        let r = env.run_stdin(&trip.args("rotate"), key1).code(1);
        assert!(r.stderr.contains("not found"), "{r:#?}");
        assert!(!r.stderr.contains("no API key stored"), "{r:#?}");
        env.set("LLM_ACCOUNTING_KMS_KEY_ID", self.key);
    }
}

#[test]
fn round_trip_with_provider_gcp_against_drongo() {
    let Some(url) = drongo_url("round_trip_with_provider_gcp_against_drongo") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let key = rt.block_on(create_key(&url, "cli"));

    let mut env = cloud_env(&key, &url);
    RoundTrip {
        provider: "gcp",
        values: [KEY1, KEY2],
        endpoint: &url,
        recorded_ref: &key,
        recorded_ref_why: "provider `gcp` and the CryptoKey name are recorded",
        never_traced: &[("\"plaintext\"", "a KMS answer was traced")],
    }
    .run(&mut env, &mut GcpSteps { key: &key });
}

#[test]
fn gcp_without_a_key_name_is_a_configuration_error() {
    let mut env = cloud_env("unused", &closed_port_url());
    testkit::assert_key_id_required(&mut env, "gcp", KEY1);
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", "projects/p/keyRings/r");
    let r = env
        .run_stdin(
            &["--provider", "gcp", "keys", "store", "--service", "openai"],
            KEY1,
        )
        .code(2);
    assert!(
        r.stderr.contains("not a Cloud KMS CryptoKey name"),
        "{r:#?}"
    );
}
