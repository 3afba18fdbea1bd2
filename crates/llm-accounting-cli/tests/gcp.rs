//! The `llm-accounting` binary with `--provider gcp` against drongo's Cloud KMS emulator
//! (started by scripts/test), and against a KMS endpoint that is down.
//!
//! The binary gets its settings the way a user's shell would give them (the CryptoKey name, an
//! endpoint override, anonymous credentials); nothing from the test process's own Google Cloud
//! environment leaks in.

#![cfg(feature = "kms-gcp")]

use llm_accounting_kms_gcp::test_support::create_key;
use llm_accounting_testkit::{Env, closed_port_url, drongo_url, fail_fast};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-gcp-00000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-gcp-00000000000000000000000002";

/// A temporary database and the Google Cloud environment of one test; `endpoint` goes to
/// LLM_ACCOUNTING_KMS_ENDPOINT.
fn cloud_env(key_name: &str, endpoint: &str) -> Env {
    let mut env = Env::with_database(BIN)
        .strip_prefixes(&["GOOGLE_", "CLOUDSDK_", "GCE_"])
        .secrets(&[KEY1, KEY2]);
    // An empty gcloud configuration directory: the user's own ADC file is never read.
    let gcloud = env.dir().join("gcloud");
    std::fs::create_dir(&gcloud).expect("gcloud dir");
    let gcloud = gcloud.display().to_string();
    for (name, value) in [
        ("LLM_ACCOUNTING_KMS_KEY_ID", key_name),
        ("LLM_ACCOUNTING_KMS_ENDPOINT", endpoint),
        ("LLM_ACCOUNTING_GCP_CREDENTIALS", "anonymous"),
        ("CLOUDSDK_CONFIG", gcloud.as_str()),
        // Never ask a metadata server.
        ("GCE_METADATA_HOST", "127.0.0.1:1"),
    ] {
        env.set(name, value);
    }
    env
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
    let gcp = ["--provider", "gcp", "keys"];
    let with = |cmd: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = gcp.to_vec();
        v.push(cmd);
        v.extend_from_slice(&["--service", "openai", "--user", "alice"]);
        v.extend_from_slice(extra);
        v
    };

    let r = env.run_stdin(&with("store", &[]), KEY1).ok();
    assert!(r.stderr.contains("(version 1)"), "{r:#?}");
    assert_eq!(
        env.version_refs(),
        [("gcp".to_owned(), key.clone())],
        "provider `gcp` and the CryptoKey name are recorded"
    );

    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));

    let r = env
        .run(&[gcp.as_slice(), &["list", "--format", "json"]].concat())
        .ok();
    assert!(!r.stdout.contains(KEY1), "{r:#?}");
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(rows[0]["service"], "openai");
    assert_eq!(rows[0]["version"], 1);

    let r = env.run_stdin(&with("rotate", &[]), KEY2).ok();
    assert!(r.stderr.contains("(version 2)"), "{r:#?}");
    assert_eq!(env.version_refs().len(), 2);

    // Even with RUST_LOG=trace, no key material reaches stderr (Run::code checks the API keys).
    env.set("RUST_LOG", "trace");
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));
    assert!(
        !r.stderr.contains("\"plaintext\""),
        "a KMS answer was traced"
    );
    env.unset("RUST_LOG");

    // Another key of the same name elsewhere: a clear refusal, not "no key".
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", &format!("{key}-gone"));
    let r = env.run_stdin(&with("rotate", &[]), KEY1).code(1);
    assert!(r.stderr.contains("not found"), "{r:#?}");
    assert!(!r.stderr.contains("no API key stored"), "{r:#?}");
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", &key);

    // KMS down: exit 5 after the configured retries, never "no key".
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", &closed_port_url());
    fail_fast(&mut env);
    let r = env.run(&with("get", &[])).code(5);
    assert!(r.stderr.contains("unavailable"), "{r:#?}");
    assert!(r.stderr.contains("gave up after 3 attempts"), "{r:#?}");
    assert!(r.stdout.is_empty());
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", &url);

    env.run(&with("delete", &[])).ok();
    let r = env.run(&with("get", &[])).code(3);
    assert!(r.stderr.contains("no API key stored"), "{r:#?}");
}

#[test]
fn gcp_without_a_key_name_is_a_configuration_error() {
    let mut env = cloud_env("unused", &closed_port_url());
    env.unset("LLM_ACCOUNTING_KMS_KEY_ID");
    let r = env
        .run_stdin(
            &["--provider", "gcp", "keys", "store", "--service", "openai"],
            KEY1,
        )
        .code(2);
    assert!(r.stderr.contains("LLM_ACCOUNTING_KMS_KEY_ID"), "{r:#?}");
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
