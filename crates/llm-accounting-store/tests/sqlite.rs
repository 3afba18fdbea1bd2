//! The repository conformance suite and SQLite specifics, on a temporary file and in memory.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use llm_accounting_core::{
    Error, KeyIdentity, KeyRecord, KeyRepository, KeyState, KeyWrite, VersionRecord, VersionState,
};
use llm_accounting_store::{SeaOrmKeyRepository, StoreOptions};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

fn file_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("keys.db").display())
}

/// Options that create the file on first open.
fn creating() -> StoreOptions {
    StoreOptions {
        create_if_missing: true,
        ..StoreOptions::default()
    }
}

async fn open_file(dir: &tempfile::TempDir) -> SeaOrmKeyRepository {
    SeaOrmKeyRepository::connect(&file_url(dir), &creating())
        .await
        .expect("open SQLite file")
}

async fn pragma(repo: &SeaOrmKeyRepository, name: &str) -> String {
    let row = repo
        .connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("PRAGMA {name}"),
        ))
        .await
        .expect("pragma")
        .expect("pragma row");
    match row.try_get_by_index::<String>(0) {
        Ok(s) => s,
        Err(_) => row
            .try_get_by_index::<i64>(0)
            .expect("pragma value")
            .to_string(),
    }
}

/// A write of a record whose revision is `expected`, in an unsealed store.
fn unsealed(expected: u64) -> KeyWrite {
    KeyWrite {
        expected_revision: expected,
        seal: None,
    }
}

fn sample(identity: KeyIdentity) -> (KeyRecord, VersionRecord) {
    let now = Utc::now();
    let id = Uuid::new_v4();
    (
        KeyRecord {
            id,
            identity,
            state: KeyState::Active,
            current_version: 1,
            hint: Some("…wxyz".into()),
            created_at: now,
            updated_at: now,
            last_used_at: None,
            expires_at: None,
            revision: 1,
            seal: None,
        },
        VersionRecord {
            key_id: id,
            version: 1,
            state: VersionState::Current,
            envelope: vec![7; 20_000],
            provider: "local".into(),
            master_key_ref: "mk".into(),
            hint: Some("…wxyz".into()),
            created_at: now,
            expires_at: None,
            retire_at: None,
        },
    )
}

#[tokio::test]
async fn conformance_on_sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = open_file(&dir).await;
    llm_accounting_core::conformance::repository::run(&repo).await;
    // Twice: the suite cleans up after itself.
    llm_accounting_core::conformance::repository::run(&repo).await;
}

#[tokio::test]
async fn conformance_in_memory() {
    let repo = SeaOrmKeyRepository::connect("sqlite::memory:", &StoreOptions::default())
        .await
        .expect("open in-memory SQLite");
    llm_accounting_core::conformance::repository::run(&repo).await;
}

#[tokio::test]
async fn reopening_a_file_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = KeyIdentity::from_parts("openai", None, None).expect("identity");
    let (key, version) = sample(identity.clone());
    {
        let first = open_file(&dir).await;
        first
            .create_key(&key, &version, None)
            .await
            .expect("create");
        let second = open_file(&dir).await;
        let (k, v) = second
            .load_current(&identity)
            .await
            .expect("load")
            .expect("seen by a second pool");
        assert_eq!(k, key, "nanosecond timestamps round-trip on SQLite");
        assert_eq!(v, version, "a 20 KB envelope round-trips");
    }
    let third = open_file(&dir).await;
    assert!(third.find_key(&identity).await.expect("find").is_some());
}

#[tokio::test]
async fn sqlite_pragmas() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = open_file(&dir).await;
    assert_eq!(pragma(&repo, "journal_mode").await.to_lowercase(), "wal");
    assert_eq!(pragma(&repo, "foreign_keys").await, "1");
    assert_eq!(pragma(&repo, "synchronous").await, "1", "NORMAL");
    assert_eq!(pragma(&repo, "busy_timeout").await, "5000");
    assert!(format!("{repo:?}").contains("sqlite"));
}

#[cfg(unix)]
#[tokio::test]
async fn database_files_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = open_file(&dir).await;
    let (key, version) = sample(KeyIdentity::from_parts("openai", None, None).expect("id"));
    repo.create_key(&key, &version, None).await.expect("create");
    for name in ["keys.db", "keys.db-wal", "keys.db-shm"] {
        let path = dir.path().join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is readable by others: {mode:o}");
    }
}

#[tokio::test]
async fn debug_does_not_print_the_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = open_file(&dir).await;
    let debug = format!("{repo:?}");
    assert!(!debug.contains("keys.db"), "{debug}");
    assert_eq!(debug, "SeaOrmKeyRepository { backend: \"sqlite\", .. }");
}

#[tokio::test]
async fn unopenable_file_is_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory where the file should be: SQLite cannot open it. (A missing file or
    // directory is a configuration error, tested below.)
    let url = format!("sqlite://{}", dir.path().display());
    let options = StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    match SeaOrmKeyRepository::connect(&url, &options).await {
        Err(e @ Error::DatabaseUnavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("expected DatabaseUnavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn databases_not_compiled_in_are_config_errors() {
    let mut missing = Vec::new();
    if cfg!(not(feature = "postgres")) {
        missing.push(("postgres://user:hunter2@localhost/test", "postgres"));
    }
    if cfg!(not(feature = "mysql")) {
        missing.push(("mysql://root:hunter2@localhost/test", "mysql"));
    }
    for (url, feature) in missing {
        match SeaOrmKeyRepository::connect(url, &StoreOptions::default()).await {
            Err(e @ Error::Config { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("built without feature {feature}")),
                    "{msg}"
                );
                assert!(!msg.contains("hunter2"), "{msg}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
    assert!(matches!(
        SeaOrmKeyRepository::connect("oracle://x", &StoreOptions::default()).await,
        Err(Error::Config { .. })
    ));
}

#[tokio::test]
async fn locked_database_is_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..creating()
    };
    let repo = SeaOrmKeyRepository::connect(&file_url(&dir), &options)
        .await
        .expect("open");
    let blocker = SeaOrmKeyRepository::connect(&file_url(&dir), &options)
        .await
        .expect("open a second pool");
    // Hold the write lock from another pool.
    let txn = sea_orm::TransactionTrait::begin_with_options(
        blocker.connection(),
        sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Exclusive),
            ..Default::default()
        },
    )
    .await
    .expect("exclusive lock");
    let (key, version) = sample(KeyIdentity::new("anthropic").expect("identity"));
    match repo.create_key(&key, &version, None).await {
        Err(e @ Error::DatabaseUnavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("expected DatabaseUnavailable while locked, got {other:?}"),
    }
    txn.rollback().await.expect("release");
    repo.create_key(&key, &version, None)
        .await
        .expect("works once released");
}

/// Last-use times under write contention: while another process holds the write lock
/// longer than the busy timeout, recording them is "unavailable" (retryable), never a silent
/// success; a lock held for less than the busy timeout is waited out; once the lock is gone
/// the same batch is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_uses_wait_out_a_short_lock_and_report_a_long_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(500),
        create_if_missing: true,
        ..StoreOptions::default()
    };
    let repo = SeaOrmKeyRepository::connect(&file_url(&dir), &options)
        .await
        .expect("open");
    let blocker = SeaOrmKeyRepository::connect(&file_url(&dir), &options)
        .await
        .expect("open a second pool");
    let (key, version) = sample(KeyIdentity::new("openai").expect("identity"));
    repo.create_key(&key, &version, None).await.expect("create");
    let at = Utc::now().trunc_subsecs(3);
    let mut uses: Vec<_> = (0..1_200).map(|_| (Uuid::new_v4(), at)).collect();
    uses[1_100] = (key.id, at);
    let lock = || async {
        sea_orm::TransactionTrait::begin_with_options(
            blocker.connection(),
            sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Exclusive),
                ..Default::default()
            },
        )
        .await
        .expect("exclusive lock")
    };
    let last_used = || async {
        repo.find_key(&key.identity)
            .await
            .expect("find")
            .expect("exists")
            .last_used_at
    };

    let txn = lock().await;
    match repo.record_last_used(&uses).await {
        Err(e @ Error::DatabaseUnavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("expected DatabaseUnavailable while locked, got {other:?}"),
    }
    assert_eq!(last_used().await, None, "nothing claimed written");
    txn.rollback().await.expect("release");

    // A lock released within the busy timeout is waited out.
    let txn = lock().await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        txn.rollback().await.expect("release");
    });
    repo.record_last_used(&uses)
        .await
        .expect("written once the lock is released");
    release.await.expect("released");
    assert_eq!(last_used().await, Some(at));
}

#[tokio::test]
async fn corrupted_rows_are_integrity_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = open_file(&dir).await;
    let identity = KeyIdentity::new("mistral").expect("identity");
    let (key, version) = sample(identity.clone());
    repo.create_key(&key, &version, None).await.expect("create");
    let db = repo.connection();

    db.execute_unprepared("UPDATE api_keys SET state = 'bogus'")
        .await
        .expect("corrupt state");
    assert!(matches!(
        repo.find_key(&identity).await,
        Err(Error::Integrity { .. })
    ));
    db.execute_unprepared("UPDATE api_keys SET state = 'active'")
        .await
        .expect("restore");

    // The row found by scope key names another identity.
    db.execute_unprepared("UPDATE api_keys SET service = 'openai'")
        .await
        .expect("corrupt identity");
    assert!(matches!(
        repo.find_key(&identity).await,
        Err(Error::Integrity { .. })
    ));
    assert!(matches!(
        repo.load_current(&identity).await,
        Err(Error::Integrity { .. })
    ));
    db.execute_unprepared("UPDATE api_keys SET service = 'mistral'")
        .await
        .expect("restore");

    // The current version row is missing.
    db.execute_unprepared("UPDATE api_keys SET current_version = 5")
        .await
        .expect("dangling version");
    assert!(matches!(
        repo.load_current(&identity).await,
        Err(Error::Integrity { .. })
    ));
    db.execute_unprepared("UPDATE api_keys SET current_version = 1")
        .await
        .expect("restore");

    db.execute_unprepared("UPDATE api_key_versions SET state = 'nope'")
        .await
        .expect("corrupt version state");
    assert!(matches!(
        repo.load_current(&identity).await,
        Err(Error::Integrity { .. })
    ));
}

#[tokio::test]
async fn add_version_to_a_missing_key_is_not_found() {
    let repo = SeaOrmKeyRepository::connect("sqlite::memory:", &StoreOptions::default())
        .await
        .expect("open");
    let (_, mut version) = sample(KeyIdentity::new("openai").expect("identity"));
    let missing = Uuid::new_v4();
    version.key_id = missing;
    version.version = 2;
    assert!(matches!(
        repo.add_version(missing, 1, &version, Utc::now(), &unsealed(1), None)
            .await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn add_version_keeps_the_previous_one() {
    let repo = SeaOrmKeyRepository::connect("sqlite::memory:", &StoreOptions::default())
        .await
        .expect("open");
    let identity = KeyIdentity::new("openai").expect("identity");
    let (key, v1) = sample(identity.clone());
    repo.create_key(&key, &v1, None).await.expect("create");
    let v2 = VersionRecord {
        version: 2,
        created_at: Utc::now().trunc_subsecs(3),
        ..v1.clone()
    };
    repo.add_version(key.id, 1, &v2, Utc::now(), &unsealed(1), None)
        .await
        .expect("add");
    let states = repo
        .connection()
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT state FROM api_key_versions ORDER BY version",
        ))
        .await
        .expect("versions")
        .into_iter()
        .map(|r| r.try_get_by_index::<String>(0).expect("state"))
        .collect::<Vec<_>>();
    assert_eq!(states, ["previous", "current"]);
    let k = repo
        .find_key(&identity)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(k.updated_at, v2.created_at);
}

#[tokio::test]
async fn versions_of_a_provider_are_found() {
    let repo = SeaOrmKeyRepository::connect("sqlite::memory:", &StoreOptions::default())
        .await
        .expect("open");
    assert!(!repo.has_versions_wrapped_by("local").await.expect("query"));
    let (key, version) = sample(KeyIdentity::new("openai").expect("identity"));
    repo.create_key(&key, &version, None).await.expect("create");
    assert!(repo.has_versions_wrapped_by("local").await.expect("query"));
    assert!(!repo.has_versions_wrapped_by("aws").await.expect("query"));
    // Retired versions need no master key any more.
    repo.connection()
        .execute_unprepared("UPDATE api_key_versions SET state = 'retired'")
        .await
        .expect("retire");
    assert!(!repo.has_versions_wrapped_by("local").await.expect("query"));
    // The store's state key needs its master key as long as the store exists.
    repo.connection()
        .execute_unprepared(
            "INSERT INTO store_keys (name, store_id, provider, master_key_ref, wrapped, created_at) \
             VALUES ('state', 'x', 'local', 'v1', x'00', '2026-01-01T00:00:00Z')",
        )
        .await
        .expect("a state key");
    assert!(repo.has_versions_wrapped_by("local").await.expect("query"));
    assert!(!repo.has_versions_wrapped_by("aws").await.expect("query"));
}
