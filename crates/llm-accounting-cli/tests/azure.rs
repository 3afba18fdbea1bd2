//! The `llm-accounting` binary with `--provider azure` against the loopback Key Vault fake
//! (challenge, token request, RSA-OAEP-256 wrapKey/unwrapKey), and against a Key Vault that
//! is down.
//!
//! The binary gets its settings the way a user's shell would give them (the key id, an
//! endpoint override, a client secret in AZURE_*); nothing from the test process's own Azure
//! environment leaks in.

#![cfg(feature = "kms-azure")]

use llm_accounting_kms_azure::test_support::{
    FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FAKE_TENANT_ID, FakeKeyVault,
};
use llm_accounting_testkit::{Env, closed_port_url, fail_fast};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-azure-00000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-azure-00000000000000000000000002";

/// A temporary database and the Azure environment of one test; `endpoint` goes to
/// LLM_ACCOUNTING_KMS_ENDPOINT.
fn cloud_env(key_id: &str, endpoint: &str) -> Env {
    let mut env = Env::with_database(BIN)
        .strip_prefixes(&["AZURE_", "IDENTITY_"])
        .secrets(&[KEY1, KEY2]);
    for (name, value) in [
        ("LLM_ACCOUNTING_KMS_KEY_ID", key_id),
        ("LLM_ACCOUNTING_KMS_ENDPOINT", endpoint),
        ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "client-secret"),
        ("AZURE_TENANT_ID", FAKE_TENANT_ID),
        ("AZURE_CLIENT_ID", FAKE_CLIENT_ID),
        ("AZURE_CLIENT_SECRET", FAKE_CLIENT_SECRET),
    ] {
        env.set(name, value);
    }
    env
}

#[test]
fn round_trip_with_provider_azure_against_the_fake() {
    let fake = FakeKeyVault::start();
    let v1 = fake.create_key_version("cli");
    let mut env = cloud_env(&FakeKeyVault::key_id("cli"), fake.url());
    let azure = ["--provider", "azure", "keys"];
    let with = |cmd: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = azure.to_vec();
        v.push(cmd);
        v.extend_from_slice(&["--service", "openai", "--user", "alice"]);
        v.extend_from_slice(extra);
        v
    };

    let r = env.run_stdin(&with("store", &[]), KEY1).ok();
    assert!(r.stderr.contains("(version 1)"), "{r:#?}");
    assert_eq!(
        env.version_refs(),
        [("azure".to_owned(), v1.clone())],
        "provider `azure` and the versioned key id are recorded"
    );
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));

    // The Key Vault key is rotated: the old record still reads (its version is recorded), the
    // next one is wrapped under the new version.
    let v2 = fake.create_key_version("cli");
    assert_eq!(env.run(&with("get", &[])).ok().stdout, format!("{KEY1}\n"));
    let r = env.run_stdin(&with("rotate", &[]), KEY2).ok();
    assert!(r.stderr.contains("(version 2)"), "{r:#?}");
    assert_eq!(
        env.version_refs(),
        [("azure".to_owned(), v1), ("azure".to_owned(), v2)]
    );
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));

    let r = env
        .run(&[azure.as_slice(), &["list", "--format", "json"]].concat())
        .ok();
    assert!(!r.stdout.contains(KEY2), "{r:#?}");

    // Even with RUST_LOG=trace, no key material reaches stderr (Run::code checks the API keys).
    env.set("RUST_LOG", "trace");
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));
    assert!(!r.stderr.contains(FAKE_CLIENT_SECRET), "secret traced");
    env.unset("RUST_LOG");

    // Key Vault down: exit 5 after the configured retries, never "no key".
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", &closed_port_url());
    fail_fast(&mut env);
    let r = env.run(&with("get", &[])).code(5);
    assert!(r.stderr.contains("unavailable"), "{r:#?}");
    assert!(r.stderr.contains("gave up after 3 attempts"), "{r:#?}");
    assert!(r.stdout.is_empty());
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", fake.url());

    env.run(&with("delete", &[])).ok();
    let r = env.run(&with("get", &[])).code(3);
    assert!(r.stderr.contains("no API key stored"), "{r:#?}");
}

#[test]
fn azure_without_a_key_id_is_a_configuration_error() {
    let mut env = cloud_env("unused", &closed_port_url());
    env.unset("LLM_ACCOUNTING_KMS_KEY_ID");
    let r = env
        .run_stdin(
            &[
                "--provider",
                "azure",
                "keys",
                "store",
                "--service",
                "openai",
            ],
            KEY1,
        )
        .code(2);
    assert!(r.stderr.contains("LLM_ACCOUNTING_KMS_KEY_ID"), "{r:#?}");
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", "my-vault/keys/k");
    let r = env
        .run_stdin(
            &[
                "--provider",
                "azure",
                "keys",
                "store",
                "--service",
                "openai",
            ],
            KEY1,
        )
        .code(2);
    assert!(r.stderr.contains("not a Key Vault key id"), "{r:#?}");
}
