//! The rules of a missing master key file (`MasterKeyFile::check_missing`, `open_with`), the
//! settings applied by `with_config`, and refusals that speak the library's language.

use llm_accounting_core::{DataKey, Error, KmsProvider};
use llm_accounting_kms_local::{CreateRules, LocalKmsConfig, LocalKmsProvider, MasterKeyFile};
use llm_accounting_testkit::ctx;

fn rules(allowed: bool) -> CreateRules {
    CreateRules {
        allowed,
        how_to_ask: "create_if_missing, SOME_VARIABLE".into(),
        path_setting: "THE_PATH_VARIABLE".into(),
    }
}

fn message(r: llm_accounting_core::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Config { message, .. }) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn a_missing_file_is_created_only_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.key");
    let m = message(MasterKeyFile::check_missing(&path, &rules(false)));
    assert!(
        m.contains(&path.display().to_string()) && m.contains("(create_if_missing, SOME_VARIABLE)"),
        "{m}"
    );
    let m = message(MasterKeyFile::open_with(&path, &rules(false), false));
    assert!(m.contains("creating it was not asked for"), "{m}");
    assert!(
        !MasterKeyFile::exists(&path).expect("inspect"),
        "nothing made"
    );

    MasterKeyFile::check_missing(&path, &rules(true)).expect("allowed");
    let (file, created) = MasterKeyFile::open_with(&path, &rules(true), false).expect("create");
    assert!(created && MasterKeyFile::exists(&path).expect("inspect"));
    // Once it exists, the rules no longer matter: it is opened, never made again.
    let (again, created) = MasterKeyFile::open_with(&path, &rules(false), true).expect("open");
    assert!(!created);
    assert_eq!(
        again.primary().reference(),
        file.primary().reference(),
        "the same key"
    );
}

#[test]
fn a_lost_file_is_not_made_again_while_the_store_holds_keys_under_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.key");
    for allowed in [true, false] {
        let m = message(MasterKeyFile::open_with(&path, &rules(allowed), true));
        assert!(
            m.contains("Restore the file") && m.contains("THE_PATH_VARIABLE"),
            "{m}"
        );
        assert!(
            !MasterKeyFile::exists(&path).expect("inspect"),
            "nothing made"
        );
    }
}

#[tokio::test]
async fn the_config_retires_older_versions_and_the_refusal_names_no_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.key");
    let old = LocalKmsProvider::open_or_create(&path).expect("create");
    let c = ctx("openai", None, 1);
    let wrapped = old
        .wrap_key(&DataKey::generate().expect("rng"), &c)
        .await
        .expect("wrap");
    LocalKmsProvider::add_master_key_version(&path).expect("v2");
    let mut config = LocalKmsConfig::default();
    config.min_master_key_version = 2;
    let (file, _) = MasterKeyFile::open_with(&path, &rules(false), false).expect("open");
    let strict = LocalKmsProvider::from_file(file)
        .with_config(&config)
        .expect("v2 exists");
    let err = strict.unwrap_key(&wrapped, &c).await.expect_err("retired");
    let text = err.to_string();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(
        text.contains("retired") && !text.contains("keys "),
        "{text}"
    );

    let mut too_high = LocalKmsConfig::default();
    too_high.min_master_key_version = 3;
    let (file, _) = MasterKeyFile::open_with(&path, &rules(false), false).expect("open");
    let m = message(LocalKmsProvider::from_file(file).with_config(&too_high));
    assert!(m.contains("above the newest one"), "{m}");
}
