//! The facade on its embedded default: SQLite file + local provider, built from settings.

use std::collections::HashMap;
use std::path::Path;

use llm_accounting::{
    ApiKey, Error, KeyFilter, KeyIdentity, KmsProviderKind, LlmAccounting, Overrides, Settings,
};

fn settings(dir: &Path, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("LLM_ACCOUNTING_DATA_DIR".into(), dir.display().to_string());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    Settings::load_with(None, &Overrides::default(), |k| env.get(k).cloned()).expect("settings")
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

#[tokio::test]
async fn store_and_get_with_no_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let acct = LlmAccounting::from_settings(&s).await.expect("build");
    let canary = "sk-test-FAKE-canary-7f3a9c1e5b2d4f60";
    acct.store_api_key("openai", ApiKey::new(canary.into()))
        .await
        .expect("store");
    assert_eq!(
        acct.get_api_key("openai")
            .await
            .expect("get")
            .expose_secret(),
        canary
    );
    acct.shutdown().await.expect("shutdown");

    // A second instance (a new process, in effect) reads the same key from disk.
    let again = LlmAccounting::from_settings(&s).await.expect("build");
    assert_eq!(
        again
            .get_api_key("openai")
            .await
            .expect("get")
            .expose_secret(),
        canary
    );
    let listed = again
        .manager()
        .list(&KeyFilter::default())
        .await
        .expect("list")
        .keys;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].last_used_at.is_some(),
        "last_used_at was written on shutdown"
    );
    again.shutdown().await.expect("shutdown");

    // The key is nowhere in plaintext on disk.
    for name in ["keys.db", "keys.db-wal", "keys.db-shm", "master.key"] {
        assert!(
            !file_contains(&dir.path().join(name), canary.as_bytes()),
            "{name} contains the plaintext key"
        );
    }
    assert!(dir.path().join("keys.db").exists());
}

#[tokio::test]
async fn default_user_and_project_scope_the_convenience_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(
        dir.path(),
        &[
            ("LLM_ACCOUNTING_USER", "alice"),
            ("LLM_ACCOUNTING_PROJECT", "p1"),
        ],
    );
    let alice = LlmAccounting::from_settings(&s).await.expect("build");
    alice
        .store_api_key("openai", ApiKey::new("sk-test-FAKE-alice-00000000".into()))
        .await
        .expect("store");
    let nobody = alice
        .clone()
        .with_user(None::<String>)
        .with_project(None::<String>);
    assert!(matches!(
        nobody.get_api_key("openai").await,
        Err(Error::NotFound { .. })
    ));
    let id = KeyIdentity::from_parts("openai", Some("alice"), Some("p1")).expect("valid");
    assert_eq!(
        alice.manager().get(&id).await.expect("get").expose_secret(),
        "sk-test-FAKE-alice-00000000"
    );
}

#[tokio::test]
async fn a_locked_database_fails_the_store_and_keeps_the_old_key() {
    use sea_orm::{ConnectionTrait, Database};
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let mut s_fast = s.clone();
    s_fast.store.busy_timeout_secs = 1;
    let acct = LlmAccounting::from_settings(&s_fast).await.expect("build");
    acct.store_api_key("openai", ApiKey::new("sk-test-FAKE-original-000000".into()))
        .await
        .expect("store");

    // Another connection takes the write lock and holds it.
    let url = s.database_url().expect("url").0;
    let other = Database::connect(format!("{url}?mode=rw"))
        .await
        .expect("connect");
    other
        .execute_unprepared("BEGIN IMMEDIATE")
        .await
        .expect("lock");
    let err = acct
        .store_api_key(
            "openai",
            ApiKey::new("sk-test-FAKE-replacement-0000".into()),
        )
        .await
        .expect_err("the database is locked");
    assert!(matches!(err, Error::DatabaseUnavailable { .. }), "{err:?}");
    other.execute_unprepared("ROLLBACK").await.expect("unlock");

    acct.manager().clear_cache();
    assert_eq!(
        acct.get_api_key("openai")
            .await
            .expect("get")
            .expose_secret(),
        "sk-test-FAKE-original-000000"
    );
    assert_eq!(
        acct.manager()
            .list(&KeyFilter::default())
            .await
            .expect("list")
            .keys[0]
            .current_version,
        1
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acct = LlmAccounting::from_settings(&settings(dir.path(), &[]))
        .await
        .expect("build");
    let cases: Vec<(&str, ApiKey, &str)> = vec![
        ("openai", ApiKey::new(String::new()), "API key"),
        (
            "openai",
            ApiKey::new("x".repeat(16 * 1024 + 1)),
            "limit is 16384",
        ),
        ("", ApiKey::new("sk-test-FAKE-0000000000".into()), "service"),
        (
            "open\u{1}ai",
            ApiKey::new("sk-test-FAKE-0000000000".into()),
            "control character",
        ),
        (
            "openai\n",
            ApiKey::new("sk-test-FAKE-0000000000".into()),
            "control character",
        ),
    ];
    for (service, key, expect) in cases {
        let err = acct.store_api_key(service, key).await.expect_err("invalid");
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
        assert!(
            err.to_string().contains(expect),
            "{err} should mention {expect}"
        );
    }
    assert!(
        acct.manager()
            .list(&KeyFilter::default())
            .await
            .expect("list")
            .keys
            .is_empty()
    );

    let err = Settings::load_with(
        None,
        &Overrides {
            provider: Some("vault".into()),
            ..Default::default()
        },
        |_| None,
    )
    .expect_err("unknown provider");
    assert!(
        err.to_string().contains("unknown provider `vault`"),
        "{err}"
    );
    // A provider whose feature is off is named as such; one that is built but has no key is a
    // configuration error naming the variable. Never a panic or a fallback to local.
    let mut gcp = settings(dir.path(), &[]);
    gcp.kms.provider = KmsProviderKind::Gcp;
    let err = LlmAccounting::from_settings(&gcp)
        .await
        .expect_err("not built, or no key");
    if cfg!(feature = "kms-gcp") {
        assert!(
            err.to_string().contains("LLM_ACCOUNTING_KMS_KEY_ID"),
            "{err}"
        );
    } else {
        assert!(err.to_string().contains("without feature kms-gcp"), "{err}");
    }
}

#[tokio::test]
async fn every_changed_byte_in_the_sqlite_row_fails_with_integrity() {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let acct = LlmAccounting::from_settings(&s).await.expect("build");
    acct.store_api_key(
        "openai",
        ApiKey::new("sk-test-FAKE-bitflip-00000000".into()),
    )
    .await
    .expect("store");
    let db = Database::connect(s.database_url().expect("url").0)
        .await
        .expect("connect");
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT envelope FROM api_key_versions",
        ))
        .await
        .expect("query")
        .expect("row");
    let original: Vec<u8> = row.try_get("", "envelope").expect("blob");
    let write = |bytes: Vec<u8>| {
        let db = &db;
        async move {
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "UPDATE api_key_versions SET envelope = ?",
                [bytes.into()],
            ))
            .await
            .expect("update");
        }
    };
    for i in 0..original.len() {
        let mut bad = original.clone();
        bad[i] ^= 0x01;
        write(bad).await;
        acct.manager().clear_cache();
        match acct.get_api_key("openai").await {
            Err(Error::Integrity { .. }) => {}
            other => panic!(
                "byte {i} of {}: expected an integrity error, got {other:?}",
                original.len()
            ),
        }
    }
    write(original).await;
    acct.manager().clear_cache();
    assert!(
        acct.get_api_key("openai").await.is_ok(),
        "the restored row decrypts again"
    );
}
