//! The `llm-accounting` binary with `--provider aws` against moto (started by scripts/test), and
//! against a KMS endpoint that is down.
//!
//! The binary gets its AWS settings the way a user's shell would give them (AWS_REGION, dummy
//! AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an endpoint override); nothing from the test
//! process's own AWS environment leaks in.

#![cfg(feature = "kms-aws")]

use llm_accounting_kms_aws::aws_sdk_kms::Client;
use llm_accounting_kms_aws::test_support::{self, create_key};
use llm_accounting_testkit::{
    self as testkit, CloudHooks, Env, RoundTrip, closed_port_url, fail_fast, moto_url,
};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-aws-00000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-aws-00000000000000000000000002";

/// A temporary database and the AWS environment of one test; `endpoint` goes to
/// LLM_ACCOUNTING_KMS_ENDPOINT.
fn cloud_env(key_id: &str, endpoint: &str) -> Env {
    let mut env = testkit::cloud_env(
        BIN,
        &["AWS_"],
        &[KEY1, KEY2],
        key_id,
        endpoint,
        &[
            ("AWS_REGION", test_support::TEST_REGION),
            ("AWS_ACCESS_KEY_ID", test_support::TEST_ACCESS_KEY_ID),
            (
                "AWS_SECRET_ACCESS_KEY",
                test_support::TEST_SECRET_ACCESS_KEY,
            ),
            // Never ask an instance metadata service.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    // Empty AWS config and credentials files: the user's own are never read.
    for (name, file) in [
        ("AWS_CONFIG_FILE", "aws-config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "aws-credentials"),
    ] {
        let path = env.dir().join(file);
        std::fs::write(&path, "").expect("write empty AWS file");
        env.set(name, &path.display().to_string());
    }
    env
}

/// AWS's own steps: the endpoint through AWS_ENDPOINT_URL, and the master key disabled in KMS.
struct AwsSteps<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a Client,
    key_id: &'a str,
    url: &'a str,
}

impl CloudHooks for AwsSteps<'_> {
    fn after_trace(&mut self, env: &mut Env, trip: &RoundTrip<'_>) {
        let [_, key2] = trip.values;

        // AWS_ENDPOINT_URL works as well as LLM_ACCOUNTING_KMS_ENDPOINT.
        env.unset("LLM_ACCOUNTING_KMS_ENDPOINT");
        env.set("AWS_ENDPOINT_URL", self.url);
        let r = env.run(&trip.args("get")).ok();
        assert_eq!(r.stdout, format!("{key2}\n"));

        // The master key disabled in KMS: a clear refusal (exit 1), not "no key"; then back.
        self.rt
            .block_on(self.client.disable_key().key_id(self.key_id).send())
            .expect("DisableKey");
        let r = env.run(&trip.args("get")).code(1);
        assert!(r.stderr.contains("disabled"), "{r:#?}");
        assert!(!r.stderr.contains("no API key stored"), "{r:#?}");
        assert!(r.stdout.is_empty());
        self.rt
            .block_on(self.client.enable_key().key_id(self.key_id).send())
            .expect("EnableKey");
        assert_eq!(env.run(&trip.args("get")).ok().stdout, format!("{key2}\n"));

        env.unset("AWS_ENDPOINT_URL");
        env.set("LLM_ACCOUNTING_KMS_ENDPOINT", self.url);
    }
}

#[test]
fn round_trip_with_provider_aws_against_moto() {
    let Some(url) = moto_url("round_trip_with_provider_aws_against_moto") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = test_support::client(&url);
    let (key_id, arn) = rt.block_on(create_key(&client, "llm-accounting CLI"));
    let alias = format!("alias/llm-accounting-cli-{}", &key_id[..8]);
    rt.block_on(
        client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(&key_id)
            .send(),
    )
    .expect("CreateAlias");

    // Configured with the alias; the ARN is what gets recorded.
    let mut env = cloud_env(&alias, &url);
    RoundTrip {
        provider: "aws",
        values: [KEY1, KEY2],
        endpoint: &url,
        recorded_ref: &arn,
        recorded_ref_why: "provider `aws` and the key ARN (not the alias) are recorded",
        // The SDK's request traces are capped.
        never_traced: &[
            ("transmitting request", "request traced"),
            ("\"Plaintext\"", "a KMS answer with key material was traced"),
        ],
    }
    .run(
        &mut env,
        &mut AwsSteps {
            rt: &rt,
            client: &client,
            key_id: &key_id,
            url: &url,
        },
    );
}

#[test]
fn a_kms_that_is_down_exits_5_after_bounded_retries() {
    // Needs no moto: nothing listens on the endpoint at all.
    let mut env = cloud_env(
        "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
        &closed_port_url(),
    );
    fail_fast(&mut env);
    let r = env
        .run_stdin(
            &["--provider", "aws", "keys", "store", "--service", "openai"],
            KEY1,
        )
        .code(5);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:#?}");
    assert!(
        r.stderr
            .starts_with("error: KMS provider `aws` unavailable during generate data key"),
        "{r:#?}"
    );
    assert!(r.stderr.contains("gave up after 3 attempts"), "{r:#?}");
    assert!(r.stderr.to_lowercase().contains("connect"), "{r:#?}");
    // Nothing was written.
    let r = env
        .run(&["--provider", "aws", "keys", "list", "--format", "json"])
        .ok();
    assert_eq!(r.stdout.trim(), "[]");

    // One attempt only: still exit 5, without the retry note.
    env.set("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "1");
    let r = env
        .run_stdin(
            &["--provider", "aws", "keys", "store", "--service", "openai"],
            KEY1,
        )
        .code(5);
    assert!(!r.stderr.contains("gave up"), "{r:#?}");
}

#[test]
fn aws_without_a_key_id_is_a_configuration_error() {
    let mut env = cloud_env("unused", &closed_port_url());
    testkit::assert_key_id_required(&mut env, "aws", KEY1);
}

/// Provider migration: keys stored under the local provider are rewrapped to AWS KMS with
/// `keys rewrap --to-provider aws`; afterwards the local master key file is removed and every
/// key (and a previous version) still reads through AWS alone.
#[test]
fn migration_from_local_to_aws_needs_no_local_key_afterwards() {
    let Some(url) = moto_url("migration_from_local_to_aws_needs_no_local_key_afterwards") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = test_support::client(&url);
    let (_, arn) = rt.block_on(create_key(&client, "llm-accounting migration"));
    let mut env = cloud_env(&arn, &url);
    let master_key = env.dir().join("master.key");
    env.set(
        "LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE",
        &master_key.display().to_string(),
    );
    let value = |i: usize| format!("sk-test-FAKE-migrate-{i:04}-000000000000");
    let users: Vec<String> = (0..12).map(|i| format!("u{i:02}")).collect();
    for (i, user) in users.iter().enumerate() {
        env.run_stdin(
            &["keys", "store", "--service", "openai", "--user", user],
            &value(i),
        )
        .ok();
    }
    env.run_stdin(
        &["keys", "rotate", "--service", "openai", "--user", "u00"],
        KEY1,
    )
    .ok();
    assert!(env.version_refs().iter().all(|(p, _)| p == "local"));

    let r = env.run(&["keys", "rewrap", "--to-provider", "aws"]).ok();
    assert!(
        r.stderr.contains("rewrapped 13 version(s) under aws"),
        "{r:#?}"
    );
    let refs = env.version_refs();
    assert_eq!(refs.len(), 13);
    assert!(
        refs.iter().all(|(p, r)| p == "aws" && r == &arn),
        "{refs:?}"
    );

    // The old provider is no longer needed.
    std::fs::remove_file(&master_key).expect("remove the local master key");
    let aws = |args: &[&str]| {
        let mut all = vec!["--provider", "aws", "keys"];
        all.extend_from_slice(args);
        env.run(&all)
    };
    for (i, user) in users.iter().enumerate().skip(1) {
        let r = aws(&["get", "--service", "openai", "--user", user]).ok();
        assert_eq!(r.stdout.trim_end(), value(i));
    }
    let r = aws(&["get", "--service", "openai", "--user", "u00"]).ok();
    assert_eq!(r.stdout.trim_end(), KEY1);
    let r = aws(&["get", "--service", "openai", "--user", "u00", "--previous"]).ok();
    assert_eq!(r.stdout.trim_end(), value(0));
    aws(&["rewrap", "--check"]).ok();
    assert!(!master_key.exists(), "nothing recreated the local key");
}

/// Issue 24 §3: with a cloud provider, `kms.hierarchy = off` and more than a hundred keys,
/// doctor says what a cold start costs and what `service` would cost: advice, exit 0.
#[test]
fn doctor_advises_branch_keys_for_many_keys_without_them() {
    let Some(url) = moto_url("doctor_advises_branch_keys_for_many_keys_without_them") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = test_support::client(&url);
    let (key_id, _) = rt.block_on(create_key(&client, "llm-accounting doctor advice"));
    let mut env = cloud_env(&key_id, &url);
    env.set("LLM_ACCOUNTING_KMS_PROVIDER", "aws");
    env.set("LLM_ACCOUNTING_KMS_HIERARCHY", "off");
    let file = env.dir().join("many.env");
    let lines: String = (0..101)
        .map(|i| format!("SVC{i}_API_KEY=sk-test-FAKE-doctor-{i:032}\n"))
        .collect();
    std::fs::write(&file, lines).expect("write");
    env.run(&[
        "keys",
        "import",
        "--env-file",
        file.to_str().expect("utf-8"),
    ])
    .ok();
    let r = env.run(&["doctor"]).ok();
    let keys = r
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("keys"))
        .unwrap_or_else(|| panic!("no keys line: {r:#?}"));
    assert!(keys.starts_with("ok"), "{r:#?}");
    assert!(
        keys.contains("one KMS request per key (101)") && keys.contains("kms.hierarchy = service"),
        "{r:#?}"
    );
}
