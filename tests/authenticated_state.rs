//! A database writer cannot make a reader accept anything but the record as written: every
//! attack below is a SQL edit an attacker with write access to the database could make, on
//! SQLite, PostgreSQL and MariaDB, followed by the expected refusal (the integrity error, never
//! a served key and never "not found").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use llm_accounting::{
    ApiKey, CacheOptions, Error, KeyFilter, KeyIdentity, LocalKmsProvider, ManagerOptions,
    SecureKeyManager, WriteOptions,
};
use llm_accounting_testkit::TestDatabase;
use llm_accounting_testkit::database::Backend;
use sea_orm::{ConnectionTrait, Statement, Value};

const V1: &str = "sk-test-FAKE-state-0000000000000000000001";
const V2: &str = "sk-test-FAKE-state-0000000000000000000002";

/// A database, the master key file and a way to open managers on them.
struct Store {
    db: TestDatabase,
    _dir: tempfile::TempDir,
    master_key: PathBuf,
}

impl Store {
    async fn all() -> Vec<Store> {
        TestDatabase::create_all()
            .await
            .into_iter()
            .map(|db| {
                let dir = tempfile::tempdir().expect("tempdir");
                let master_key = dir.path().join("master.key");
                Store {
                    db,
                    _dir: dir,
                    master_key,
                }
            })
            .collect()
    }

    fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// A fresh manager (its own cache and state) with `options`.
    async fn manager_with(&self, options: ManagerOptions) -> SecureKeyManager {
        manager_on(&self.db, &self.master_key, options).await
    }

    /// A fresh manager that reads the store on every get.
    async fn manager(&self) -> SecureKeyManager {
        self.manager_with(no_cache()).await
    }

    /// The attacker's own connection.
    async fn sql(&self, sql: &str) {
        self.db.execute(sql, Vec::new()).await;
    }

    /// Runs `sql` with one parameter (write `{}` for it).
    async fn sql_with(&self, sql: &str, value: Value) {
        self.db.execute(sql, vec![value]).await;
    }

    /// The envelope of `version` as stored.
    async fn envelope(&self, version: u32) -> Vec<u8> {
        let repo = self.db.repository().await;
        let conn = repo.connection();
        let row = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                format!("SELECT envelope FROM api_key_versions WHERE version = {version}"),
            ))
            .await
            .expect("select")
            .expect("row");
        row.try_get("", "envelope").expect("envelope")
    }
}

async fn manager_on(
    db: &TestDatabase,
    master_key: &Path,
    options: ManagerOptions,
) -> SecureKeyManager {
    let provider = LocalKmsProvider::open_or_create(master_key).expect("master key");
    SecureKeyManager::builder(Arc::new(provider), Arc::new(db.repository().await))
        .options(options)
        .build()
}

fn no_cache() -> ManagerOptions {
    ManagerOptions {
        cache: CacheOptions {
            max_entries: 0,
            refresh_interval: Duration::ZERO,
            ..CacheOptions::default()
        },
        ..ManagerOptions::default()
    }
}

fn alice() -> KeyIdentity {
    KeyIdentity::from_parts("openai", Some("alice"), None).expect("valid")
}

fn key(value: &str) -> ApiKey {
    ApiKey::new(value.into())
}

/// Asserts the integrity error (and so: no key, not "not found", not "disabled").
#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, backend: Backend, result: llm_accounting::Result<T>) {
    assert!(
        matches!(result, Err(Error::Integrity { .. })),
        "{backend}: {what}: expected the integrity error, got {result:?}"
    );
}

#[tokio::test]
async fn a_rotated_out_value_is_not_served_again_by_setting_current_version_back() {
    for s in Store::all().await {
        let m = s.manager().await;
        m.store(&alice(), &key(V1)).await.expect("store");
        m.rotate(&alice(), &key(V2)).await.expect("rotate");
        assert_eq!(m.get(&alice()).await.expect("get").expose_secret(), V2);

        s.sql("UPDATE api_keys SET current_version = 1").await;
        refused(
            "current_version set back",
            s.backend(),
            s.manager().await.get(&alice()).await,
        );
        refused(
            "the same manager, uncached",
            s.backend(),
            m.get(&alice()).await,
        );
        // The attacker also sets the old version back to current: still refused.
        s.sql("UPDATE api_key_versions SET state = 'current' WHERE version = 1")
            .await;
        refused("and its version row", s.backend(), m.get(&alice()).await);
        // A write refuses to build on the edited record too.
        refused(
            "a rotation on top",
            s.backend(),
            m.rotate(&alice(), &key(V2)).await,
        );
    }
}

#[tokio::test]
async fn a_disabled_key_is_not_served_by_setting_its_state_back() {
    for s in Store::all().await {
        let m = s.manager().await;
        m.store(&alice(), &key(V1)).await.expect("store");
        m.disable(&alice()).await.expect("disable");
        assert!(matches!(m.get(&alice()).await, Err(Error::Disabled { .. })));

        s.sql("UPDATE api_keys SET state = 'active'").await;
        refused(
            "state set back to active",
            s.backend(),
            m.get(&alice()).await,
        );
        refused("enable on top", s.backend(), m.enable(&alice()).await);
    }
}

#[tokio::test]
async fn an_expired_key_is_not_served_by_clearing_its_expiry() {
    for s in Store::all().await {
        let m = s.manager().await;
        let soon = chrono::Utc::now() + chrono::Duration::milliseconds(800);
        m.store_with(
            &alice(),
            &key(V1),
            &WriteOptions {
                expires_at: Some(soon),
            },
        )
        .await
        .expect("store");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(matches!(m.get(&alice()).await, Err(Error::Expired { .. })));

        s.sql("UPDATE api_keys SET expires_at = NULL").await;
        s.sql("UPDATE api_key_versions SET expires_at = NULL").await;
        refused("expiry cleared", s.backend(), m.get(&alice()).await);
    }
}

#[tokio::test]
async fn a_retired_version_put_back_from_a_backup_is_not_served() {
    for s in Store::all().await {
        // No grace period: the previous version retires (and is wiped) at the next write.
        let m = s
            .manager_with(ManagerOptions {
                previous_grace: Duration::ZERO,
                ..no_cache()
            })
            .await;
        m.store(&alice(), &key(V1)).await.expect("store");
        let backup = s.envelope(1).await;
        m.rotate(&alice(), &key(V2)).await.expect("rotate");
        assert!(matches!(
            m.get_previous(&alice()).await,
            Err(Error::NoPrevious { .. })
        ));
        assert!(s.envelope(1).await.is_empty(), "retired and wiped");

        // The backup's envelope, and the state and grace it had then.
        s.sql_with(
            "UPDATE api_key_versions SET envelope = {}, state = 'previous' WHERE version = 1",
            Value::Bytes(Some(backup.clone())),
        )
        .await;
        let future = chrono::Utc::now() + chrono::Duration::days(1);
        s.sql_with(
            "UPDATE api_key_versions SET retire_at = {} WHERE version = 1",
            Value::ChronoDateTimeUtc(Some(future)),
        )
        .await;
        let r = m.get_previous(&alice()).await;
        assert!(
            matches!(r, Err(Error::Integrity { .. })),
            "{}: restored previous version: {r:?}",
            s.backend()
        );
        // Or made current again.
        s.sql("UPDATE api_keys SET current_version = 1").await;
        s.sql("UPDATE api_key_versions SET state = 'current' WHERE version = 1")
            .await;
        refused("restored as current", s.backend(), m.get(&alice()).await);
    }
}

#[tokio::test]
async fn clearing_or_editing_the_seal_gains_nothing() {
    for s in Store::all().await {
        let m = s.manager().await;
        m.store(&alice(), &key(V1)).await.expect("store");
        for (what, sql) in [
            (
                "seal columns cleared",
                "UPDATE api_keys SET state_mac = NULL, current_digest = NULL, previous_digest = NULL",
            ),
            (
                "revision bumped",
                "UPDATE api_keys SET revision = revision + 1",
            ),
            ("hint edited", "UPDATE api_keys SET hint = '...1234'"),
            // A provider this build has: without the seal, "not configured here" (exit 2);
            // with it, the integrity error (exit 4).
            (
                "provider edited",
                "UPDATE api_key_versions SET provider = 'aws'",
            ),
        ] {
            // A fresh record for each edit.
            m.delete(&alice()).await.expect("delete");
            m.store(&alice(), &key(V1)).await.expect("store");
            s.sql(sql).await;
            refused(what, s.backend(), s.manager().await.get(&alice()).await);
        }
        // Without the state key the seals cannot be checked: refused, not trusted.
        m.delete(&alice()).await.expect("delete");
        m.store(&alice(), &key(V1)).await.expect("store");
        s.sql("DELETE FROM store_keys").await;
        refused(
            "state key deleted",
            s.backend(),
            s.manager().await.get(&alice()).await,
        );
    }
}

#[tokio::test]
async fn a_listing_names_the_broken_keys_and_lists_the_others() {
    for s in Store::all().await {
        let m = s.manager().await;
        let bob = KeyIdentity::from_parts("openai", Some("bob"), None).expect("valid");
        m.store(&alice(), &key(V1)).await.expect("store");
        m.store(&bob, &key(V2)).await.expect("store");
        s.sql("UPDATE api_keys SET current_version = 7 WHERE user_id = 'bob'")
            .await;
        let listing = m.list(&KeyFilter::default()).await.expect("list");
        assert_eq!(listing.keys.len(), 1, "{}", s.backend());
        assert_eq!(listing.keys[0].identity, alice());
        assert_eq!(listing.broken.len(), 1);
        assert_eq!(listing.broken[0].row.user.as_deref(), Some("bob"));
        assert!(matches!(listing.broken[0].error, Error::Integrity { .. }));
        // A row that cannot even be read is named too, and hides nothing.
        s.sql("UPDATE api_keys SET state = 'actove' WHERE user_id = 'bob'")
            .await;
        let listing = m.list(&KeyFilter::default()).await.expect("list");
        assert_eq!(
            (listing.keys.len(), listing.broken.len()),
            (1, 1),
            "{}",
            s.backend()
        );
    }
}

#[tokio::test]
async fn a_cached_key_is_dropped_when_its_record_is_set_back_behind_the_managers_back() {
    for s in Store::all().await {
        let reader = s
            .manager_with(ManagerOptions {
                cache: CacheOptions {
                    refresh_interval: Duration::from_millis(50),
                    ..CacheOptions::default()
                },
                ..ManagerOptions::default()
            })
            .await;
        let writer = s.manager().await;
        writer.store(&alice(), &key(V1)).await.expect("store");
        assert_eq!(reader.get(&alice()).await.expect("get").expose_secret(), V1);
        // Disabled by an operator, then set back to active by an attacker.
        writer.disable(&alice()).await.expect("disable");
        s.sql("UPDATE api_keys SET state = 'active'").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        refused(
            "cached, then set back",
            s.backend(),
            reader.get(&alice()).await,
        );
    }
}

#[tokio::test]
async fn a_store_written_before_sealing_is_read_with_a_warning_until_sealed() {
    for s in Store::all().await {
        let m = s.manager().await;
        m.store(&alice(), &key(V1)).await.expect("store");
        m.rotate(&alice(), &key(V2)).await.expect("rotate");
        // What an older release left: no state key, no seals, revision 0.
        s.sql("DELETE FROM store_keys").await;
        s.sql(
            "UPDATE api_keys SET state_mac = NULL, current_digest = NULL, \
             previous_digest = NULL, revision = 0",
        )
        .await;
        let legacy = s.manager().await;
        assert_eq!(
            legacy
                .get(&alice())
                .await
                .expect("legacy read")
                .expose_secret(),
            V2
        );
        assert_eq!(
            legacy
                .get_previous(&alice())
                .await
                .expect("previous")
                .expose_secret(),
            V1
        );
        // Pinned: an unsealed store is refused.
        let pinned = s
            .manager_with(ManagerOptions {
                require_sealed: true,
                ..no_cache()
            })
            .await;
        refused(
            "unsealed but required",
            s.backend(),
            pinned.get(&alice()).await,
        );

        let report = legacy.seal().await.expect("seal");
        assert!(report.made_state_key, "{}", s.backend());
        assert_eq!((report.sealed, report.broken.len()), (1, 0));
        assert_eq!(
            pinned.get(&alice()).await.expect("sealed").expose_secret(),
            V2
        );
        assert_eq!(
            pinned
                .get_previous(&alice())
                .await
                .expect("previous")
                .expose_secret(),
            V1
        );
        // Sealing again only verifies.
        let again = legacy.seal().await.expect("seal again");
        assert!(!again.made_state_key);
        assert_eq!((again.sealed, again.verified), (0, 1));
        // Now the attacks fail.
        s.sql("UPDATE api_keys SET current_version = 1").await;
        refused(
            "after sealing",
            s.backend(),
            s.manager().await.get(&alice()).await,
        );
        // And a record without a seal is not adopted by sealing again.
        s.sql(
            "UPDATE api_keys SET current_version = 2, state_mac = NULL, \
             current_digest = NULL, previous_digest = NULL",
        )
        .await;
        let report = legacy.seal().await.expect("verify");
        assert_eq!(
            (report.sealed, report.broken.len()),
            (0, 1),
            "{}",
            s.backend()
        );
        refused(
            "unsealed record in a sealed store",
            s.backend(),
            pinned.get(&alice()).await,
        );
    }
}

#[tokio::test]
async fn rewrapping_moves_the_state_key_and_keeps_every_seal_valid() {
    for s in Store::all().await {
        let m = s.manager().await;
        m.store(&alice(), &key(V1)).await.expect("store");
        m.rotate(&alice(), &key(V2)).await.expect("rotate");
        LocalKmsProvider::add_master_key_version(&s.master_key).expect("new master key");
        let m = s.manager().await;
        let report = m.rewrap(&Default::default(), |_| {}).await.expect("rewrap");
        assert_eq!(report.done, 2, "{}", s.backend());
        assert!(report.state_key_moved);
        // Every version, and the state key, under v2: retire v1 and read everything.
        let strict = s
            .manager_with(ManagerOptions {
                require_sealed: true,
                ..no_cache()
            })
            .await;
        assert_eq!(strict.get(&alice()).await.expect("get").expose_secret(), V2);
        assert_eq!(
            strict
                .get_previous(&alice())
                .await
                .expect("previous")
                .expose_secret(),
            V1
        );
        let check = strict
            .rewrap(
                &llm_accounting::RewrapOptions {
                    check_only: true,
                    ..Default::default()
                },
                |_| {},
            )
            .await
            .expect("check");
        assert_eq!((check.done, check.state_key_moved), (0, false));
    }
}

/// Deleted and retired envelopes leave no trace in the SQLite files (secure_delete, the
/// overwrite before delete, and the write-ahead log truncated).
#[tokio::test]
async fn deleted_and_retired_ciphertexts_are_not_left_in_the_sqlite_files() {
    let Some(db) = TestDatabase::create(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manager_on(
        &db,
        &dir.path().join("master.key"),
        ManagerOptions {
            previous_grace: Duration::ZERO,
            ..no_cache()
        },
    )
    .await;
    let s = Store {
        db,
        _dir: dir,
        master_key: PathBuf::new(),
    };
    let file = PathBuf::from(s.db.url().trim_start_matches("sqlite://"));
    let contains = |needle: &[u8]| {
        ["", "-wal", "-journal"].iter().any(|suffix| {
            std::fs::read(format!("{}{suffix}", file.display()))
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
    };
    m.store(&alice(), &key(V1)).await.expect("store");
    let first = s.envelope(1).await;
    assert!(first.len() > 60);
    // A positive control: the envelope is there to be found while it is stored.
    assert!(
        contains(&first[first.len() - 40..]),
        "the detector finds a stored envelope"
    );

    m.rotate(&alice(), &key(V2))
        .await
        .expect("rotate: retires version 1");
    assert!(
        !contains(&first[first.len() - 40..]),
        "a retired envelope is gone"
    );

    let second = s.envelope(2).await;
    m.delete(&alice()).await.expect("delete");
    assert!(
        !contains(&second[second.len() - 40..]),
        "a deleted envelope is gone"
    );
}
