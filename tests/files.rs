//! Which files the facade creates, and which it refuses: named files only when asked, the
//! default ones on first use, never a new master key for a database that needs the old one,
//! and no existing file or data directory that others can write or another user owns.

use std::collections::HashMap;
use std::path::Path;

use llm_accounting::{ApiKey, Error, LlmAccounting, Overrides, SecureKeyManager, Settings, Stack};

/// The manager of a stack built from `settings`, without accounting.
async fn build_manager(settings: &Settings) -> llm_accounting::Result<SecureKeyManager> {
    let stack = Stack::builder(settings).accounting(false).build().await?;
    Ok(stack.manager().clone())
}

fn settings(vars: &[(&str, String)]) -> Settings {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Settings::load_with(None, &Overrides::default(), |k| env.get(k).cloned()).expect("settings")
}

fn config_message(err: Error) -> String {
    match err {
        Error::Config { message, .. } => message,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn store_one(s: &Settings) {
    let acct = LlmAccounting::from_settings(s).await.expect("build");
    acct.store_api_key(
        "openai",
        ApiKey::new("sk-test-FAKE-files-0123456789".into()),
    )
    .await
    .expect("store");
    acct.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn named_files_are_created_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("named.db");
    let mk = dir.path().join("named.key");
    let named = [
        (
            "LLM_ACCOUNTING_DATABASE_URL",
            format!("sqlite://{}", db.display()),
        ),
        (
            "LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE",
            mk.display().to_string(),
        ),
    ];
    // Neither exists: the master key file is named first, and nothing is created.
    let m = config_message(build_manager(&settings(&named)).await.expect_err("refused"));
    assert!(
        m.contains(&mk.display().to_string()) && m.contains("create_if_missing"),
        "{m}"
    );
    assert!(files_in(dir.path()).is_empty(), "nothing was created");

    // The master key file exists, the database does not.
    llm_accounting::LocalKmsProvider::open_or_create(&mk).expect("master key");
    let m = config_message(build_manager(&settings(&named)).await.expect_err("refused"));
    assert!(
        m.contains(&db.display().to_string()) && m.contains("does not exist"),
        "{m}"
    );
    assert!(!db.exists(), "the database was not created");

    // Asked: both are made.
    std::fs::remove_file(&mk).expect("remove");
    let mut asked = named.to_vec();
    asked.push(("LLM_ACCOUNTING_CREATE_IF_MISSING", "true".to_owned()));
    store_one(&settings(&asked)).await;
    assert!(db.exists() && mk.exists());
    // Then they open without being asked again.
    store_one(&settings(&named)).await;
}

#[tokio::test]
async fn a_named_audit_database_is_created_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.db");
    let data = [
        (
            "LLM_ACCOUNTING_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        (
            "LLM_ACCOUNTING_AUDIT_DATABASE_URL",
            format!("sqlite://{}", audit.display()),
        ),
    ];
    let m = config_message(build_manager(&settings(&data)).await.expect_err("refused"));
    assert!(m.contains(&audit.display().to_string()), "{m}");
    let mut asked = data.to_vec();
    asked.push(("LLM_ACCOUNTING_CREATE_IF_MISSING", "true".to_owned()));
    store_one(&settings(&asked)).await;
    assert!(audit.exists());
}

/// The default location is created on first use; once it holds keys, its master key file is
/// never silently made again (not even with `create_if_missing`).
#[tokio::test]
async fn a_lost_master_key_file_is_not_regenerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let base = [("LLM_ACCOUNTING_DATA_DIR", data.display().to_string())];
    store_one(&settings(&base)).await;
    let mk = data.join("master.key");
    assert!(mk.exists() && data.join("keys.db").exists());

    std::fs::rename(&mk, dir.path().join("backup.key")).expect("move the key away");
    let mut asked = base.to_vec();
    asked.push(("LLM_ACCOUNTING_CREATE_IF_MISSING", "true".to_owned()));
    for s in [settings(&base), settings(&asked)] {
        let m = config_message(build_manager(&s).await.expect_err("refused"));
        assert!(
            m.contains(&mk.display().to_string()) && m.contains("Restore the file"),
            "{m}"
        );
        assert!(!mk.exists(), "no new master key file was made");
    }
    // Restored, everything reads again.
    std::fs::rename(dir.path().join("backup.key"), &mk).expect("restore");
    let acct = LlmAccounting::from_settings(&settings(&base))
        .await
        .expect("build");
    assert_eq!(
        acct.get_api_key("openai")
            .await
            .expect("get")
            .expose_secret(),
        "sk-test-FAKE-files-0123456789"
    );
    acct.shutdown().await.expect("shutdown");
}

#[cfg(unix)]
#[tokio::test]
async fn an_unsafe_data_directory_or_database_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let base = [("LLM_ACCOUNTING_DATA_DIR", data.display().to_string())];
    store_one(&settings(&base)).await;

    chmod(&data, 0o777);
    let m = config_message(build_manager(&settings(&base)).await.expect_err("refused"));
    assert!(
        m.contains("data directory") && m.contains(&format!("chmod 700 {}", data.display())),
        "{m}"
    );
    chmod(&data, 0o700);

    let db = data.join("keys.db");
    chmod(&db, 0o664);
    let m = config_message(build_manager(&settings(&base)).await.expect_err("refused"));
    assert!(m.contains(&format!("chmod 600 {}", db.display())), "{m}");
    chmod(&db, 0o600);

    let mk = data.join("master.key");
    chmod(&mk, 0o620);
    let m = config_message(build_manager(&settings(&base)).await.expect_err("refused"));
    assert!(m.contains(&format!("chmod 600 {}", mk.display())), "{m}");
    chmod(&mk, 0o600);

    // Another owner (only root can give a file away).
    if std::os::unix::fs::chown(&db, Some(65534), None).is_ok() {
        let m = config_message(build_manager(&settings(&base)).await.expect_err("refused"));
        assert!(m.contains("owned by another user"), "{m}");
        std::os::unix::fs::chown(&db, Some(0), None).expect("chown back");
        std::os::unix::fs::chown(&data, Some(65534), None).expect("chown");
        let m = config_message(build_manager(&settings(&base)).await.expect_err("refused"));
        assert!(
            m.contains("data directory") && m.contains("owned by another user"),
            "{m}"
        );
    }
}
