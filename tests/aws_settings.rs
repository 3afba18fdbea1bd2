//! The facade builds the AWS provider from settings, wrapped in the resilience layers.

#![cfg(feature = "kms-aws")]

use std::collections::HashMap;

use llm_accounting::{Error, Overrides, Settings, build_provider, build_provider_with_metrics};

fn settings(vars: &[(&str, &str)]) -> Settings {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::load_with(None, &Overrides::default(), |k| env.get(k).cloned()).expect("settings")
}

#[test]
fn aws_is_selected_by_the_provider_variable_and_keeps_its_name_under_layers() {
    let s = settings(&[
        ("LLM_ACCOUNTING_KMS_PROVIDER", "aws"),
        ("LLM_ACCOUNTING_KMS_KEY_ID", "alias/llm-accounting"),
        ("LLM_ACCOUNTING_KMS_ENDPOINT", "http://127.0.0.1:1"),
        ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "2"),
    ]);
    // Building touches no network: the SDK client is made on first use.
    let (provider, metrics, used) = build_provider_with_metrics(&s).expect("built");
    assert_eq!(
        provider.name(),
        "aws",
        "records must name the real provider"
    );
    assert_eq!(provider.master_key_ref(), "alias/llm-accounting");
    assert_eq!(metrics.snapshot().calls(), 0);
    assert_eq!(used.master_key_file, None);
    assert!(
        format!("{provider:?}").contains("Retry"),
        "layered: {provider:?}"
    );
}

#[test]
fn aws_without_key_or_with_a_bad_endpoint_is_a_config_error() {
    let s = settings(&[("LLM_ACCOUNTING_KMS_PROVIDER", "aws")]);
    let err = build_provider(&s).expect_err("no key id");
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(
        err.to_string().contains("LLM_ACCOUNTING_KMS_KEY_ID"),
        "{err}"
    );

    let s = settings(&[
        ("LLM_ACCOUNTING_KMS_PROVIDER", "aws"),
        ("LLM_ACCOUNTING_KMS_KEY_ID", "alias/x"),
        ("LLM_ACCOUNTING_KMS_ENDPOINT", "localhost:4566"),
    ]);
    let err = build_provider(&s).expect_err("bad endpoint");
    assert!(err.to_string().contains("not an http"), "{err}");
}

#[test]
fn the_aws_example_config_loads() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/aws.example.toml"
    ));
    let s = Settings::load_with(Some(path), &Overrides::default(), |_| None).expect("loads");
    assert_eq!(s.kms.provider, "aws");
    assert_eq!(s.kms.key_id.as_deref(), Some("alias/llm-accounting"));
    assert_eq!(s.kms.max_attempts, 4);
    assert_eq!(s.kms.timeout_ms, 2000);
    let (provider, _) = build_provider(&s).expect("built");
    assert_eq!(provider.name(), "aws");
}
