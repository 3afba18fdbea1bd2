//! The SQLite file: created (0600) only when asked, never through a symbolic link, and an
//! existing one refused when others can write it or another user owns it.

use std::time::Duration;

use llm_accounting_core::{Error, error_chain};
use llm_accounting_store::{SeaOrmKeyRepository, StoreOptions};

fn quick() -> StoreOptions {
    StoreOptions {
        connect_timeout: Duration::from_secs(3),
        ..StoreOptions::default()
    }
}

fn creating() -> StoreOptions {
    StoreOptions {
        create_if_missing: true,
        ..quick()
    }
}

/// The configuration error `url` gives, with its sources.
async fn config_error(url: &str, options: &StoreOptions) -> String {
    match SeaOrmKeyRepository::connect(url, options).await {
        Err(e @ Error::Config { .. }) => error_chain(&e),
        other => panic!("{url}: expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_sqlite_file_is_created_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.db");
    let url = format!("sqlite://{}", path.display());
    let message = config_error(&url, &quick()).await;
    assert!(
        message.contains(&path.display().to_string()) && message.contains("does not exist"),
        "{message}"
    );
    assert!(!path.exists(), "nothing was created");
    SeaOrmKeyRepository::connect(&url, &creating())
        .await
        .expect("created when asked");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    SeaOrmKeyRepository::connect(&url, &quick())
        .await
        .expect("it exists now");

    let nowhere = format!(
        "sqlite://{}",
        dir.path().join("no-dir").join("k.db").display()
    );
    let message = config_error(&nowhere, &creating()).await;
    assert!(
        message.contains("no-dir") && message.contains("directory"),
        "{message}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_at_the_database_path_is_not_followed_on_creation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("planted.db");
    let link = dir.path().join("keys.db");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let url = format!("sqlite://{}", link.display());
    let message = config_error(&url, &creating()).await;
    assert!(message.contains("symbolic link"), "{message}");
    assert!(
        !target.exists(),
        "no database was created where the link points"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_database_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.db");
    let url = format!("sqlite://{}", path.display());
    drop(
        SeaOrmKeyRepository::connect(&url, &creating())
            .await
            .expect("create"),
    );
    for mode in [0o660, 0o606, 0o666] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let message = config_error(&url, &quick()).await;
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if std::os::unix::fs::chown(&path, Some(65534), None).is_ok() {
        let message = config_error(&url, &quick()).await;
        assert!(message.contains("owned by another user"), "{message}");
    }
}
