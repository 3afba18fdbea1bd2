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
use llm_accounting_testkit::{self as testkit, CloudHooks, Env, RoundTrip, closed_port_url};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-azure-00000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-azure-00000000000000000000000002";

/// A temporary database and the Azure environment of one test; `endpoint` goes to
/// LLM_ACCOUNTING_KMS_ENDPOINT.
fn cloud_env(key_id: &str, endpoint: &str) -> Env {
    testkit::cloud_env(
        BIN,
        &["AZURE_", "IDENTITY_"],
        &[KEY1, KEY2],
        key_id,
        endpoint,
        &[
            ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "client-secret"),
            ("AZURE_TENANT_ID", FAKE_TENANT_ID),
            ("AZURE_CLIENT_ID", FAKE_CLIENT_ID),
            ("AZURE_CLIENT_SECRET", FAKE_CLIENT_SECRET),
        ],
    )
}

/// Azure's own step: the Key Vault key gets a new version mid-test.
struct AzureSteps<'a> {
    fake: &'a FakeKeyVault,
}

impl CloudHooks for AzureSteps<'_> {
    fn before_rotate(&mut self, env: &mut Env, trip: &RoundTrip<'_>) -> String {
        // The Key Vault key is rotated: the old record still reads (its version is recorded),
        // the next one is wrapped under the new version.
        let v2 = self.fake.create_key_version("cli");
        let [key1, _] = trip.values;
        assert_eq!(env.run(&trip.args("get")).ok().stdout, format!("{key1}\n"));
        v2
    }
}

#[test]
fn round_trip_with_provider_azure_against_the_fake() {
    let fake = FakeKeyVault::start();
    let v1 = fake.create_key_version("cli");
    let mut env = cloud_env(&FakeKeyVault::key_id("cli"), fake.url());
    RoundTrip {
        provider: "azure",
        values: [KEY1, KEY2],
        endpoint: fake.url(),
        recorded_ref: &v1,
        recorded_ref_why: "provider `azure` and the versioned key id are recorded",
        never_traced: &[(FAKE_CLIENT_SECRET, "secret traced")],
    }
    .run(&mut env, &mut AzureSteps { fake: &fake });
}

#[test]
fn azure_without_a_key_id_is_a_configuration_error() {
    let mut env = cloud_env("unused", &closed_port_url());
    testkit::assert_key_id_required(&mut env, "azure", KEY1);
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
