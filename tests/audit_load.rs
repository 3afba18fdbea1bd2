//! The audit trail under load, through the facade with its default settings (audit on,
//! fail-open, cache hits aggregated), on every database this build supports.
//!
//! The attack is volume: hundreds of keys read cold, hot and through `get_many`, then a burst
//! of 100,000 gets. Before writes were chunked and bounded, `shutdown()` failed with "too many
//! SQL variables" (the whole pending batch went into one INSERT), the batch was kept and retried
//! whole forever, and a last-use flush meanwhile failed with "database is locked". Expected now:
//! `shutdown()` succeeds, every operation is accounted for (a row per event, or a row with a
//! count), the chain verifies and every key's `last_used_at` is written. A writer blocked by
//! another session leaves a counted gap, never a silent one, and never holds up a get; last-use
//! times survive a locked SQLite database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use llm_accounting::{
    ApiKey, AuditFilter, AuditRecord, DROPPED_OPERATION, Error, KeyFilter, KeyIdentity,
    SeaOrmKeyRepository, SecureKeyManager, Settings, Stack, StoreOptions,
};
use llm_accounting_testkit::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

/// The manager of a stack built from `settings`, without accounting.
async fn build_manager(settings: &Settings) -> llm_accounting::Result<SecureKeyManager> {
    let stack = Stack::builder(settings).accounting(false).build().await?;
    Ok(stack.manager().clone())
}

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-load-{i:06}-0123456789"))
}

fn ids(n: usize) -> Vec<KeyIdentity> {
    (0..n)
        .map(|i| KeyIdentity::from_parts("load", Some(&format!("u{i:04}")), None).expect("id"))
        .collect()
}

/// The facade's defaults, on `db`, with the master key in `dir`.
fn settings(db: &TestDatabase, dir: &tempfile::TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.database_url = Some(db.url().to_owned());
    settings.data_dir = Some(dir.path().to_owned());
    // The test's own files: a named database and master key file are made only when asked.
    settings.create_if_missing = true;
    settings
}

/// Number of events each (operation, detail) row group stands for: the sum of the counts.
fn accounted(records: &[AuditRecord]) -> HashMap<(String, Option<String>), u64> {
    let mut out = HashMap::new();
    for r in records {
        *out.entry((r.event.operation.clone(), r.event.detail.clone()))
            .or_insert(0) += r.event.count;
    }
    out
}

async fn records(manager: &SecureKeyManager) -> Vec<AuditRecord> {
    manager
        .audit_records(&AuditFilter::default())
        .await
        .expect("audit records")
}

/// 500 keys: stored, read cold, read hot 10 times, read by `get_many`; then `shutdown()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_keys_with_default_settings() {
    const N: usize = 500;
    for db in TestDatabase::create_all().await {
        let backend = db.backend();
        let dir = tempfile::tempdir().expect("temp dir");
        let manager = build_manager(&settings(&db, &dir)).await.expect("manager");
        let ids = ids(N);
        for (i, id) in ids.iter().enumerate() {
            manager.store(id, &key(i)).await.expect("store");
        }
        for id in &ids {
            manager.get(id).await.expect("cold get");
        }
        for _ in 0..10 {
            for id in &ids {
                manager.get(id).await.expect("hot get");
            }
        }
        for (_, got) in manager.get_many(&ids, 32).await {
            got.expect("get_many");
        }
        manager
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("{backend}: shutdown failed: {e}"));

        // A second manager on the same database reads what the first one wrote.
        let reader = build_manager(&settings(&db, &dir)).await.expect("reader");
        let all = records(&reader).await;
        assert_eq!(
            reader.verify_audit().await.expect("verify"),
            all.len() as u64,
            "{backend}: the chain verifies"
        );
        let counts = accounted(&all);
        let count = |op: &str, detail: Option<&str>| {
            counts
                .get(&(op.to_owned(), detail.map(str::to_owned)))
                .copied()
                .unwrap_or(0)
        };
        assert_eq!(
            count("store", Some("version 1")),
            N as u64,
            "{backend}: stores"
        );
        assert_eq!(
            count("get", Some("cache miss")),
            N as u64,
            "{backend}: cold gets"
        );
        assert_eq!(
            count("get", Some("cache hit")),
            11 * N as u64,
            "{backend}: every hot get (10 rounds and get_many) is accounted for"
        );
        assert!(
            all.len() < 3 * N + 11 * N,
            "{backend}: cache hits were aggregated ({} rows)",
            all.len()
        );
        let listed = reader.list(&KeyFilter::default()).await.expect("list").keys;
        assert_eq!(listed.len(), N);
        assert!(
            listed.iter().all(|k| k.last_used_at.is_some()),
            "{backend}: every key's last use was written"
        );
        reader.shutdown().await.expect("reader shutdown");
    }
}

/// A burst of 100,000 gets from 8 tasks over 50 keys: every get is accounted for and
/// `shutdown()` succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_100_000_gets_is_fully_accounted_for() {
    const KEYS: usize = 50;
    const TASKS: usize = 8;
    const GETS: usize = 100_000;
    for db in TestDatabase::create_all().await {
        let backend = db.backend();
        let dir = tempfile::tempdir().expect("temp dir");
        let manager = build_manager(&settings(&db, &dir)).await.expect("manager");
        let ids = ids(KEYS);
        for (i, id) in ids.iter().enumerate() {
            manager.store(id, &key(i)).await.expect("store");
        }
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let manager = manager.clone();
            let ids = ids.clone();
            tasks.spawn(async move {
                for i in 0..GETS / TASKS {
                    manager
                        .get(&ids[(t + i) % KEYS])
                        .await
                        .expect("get in the burst");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        manager
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("{backend}: shutdown failed: {e}"));
        let all = records(&manager).await;
        let gets: u64 = all
            .iter()
            .filter(|r| r.event.operation == "get")
            .map(|r| r.event.count)
            .sum();
        assert_eq!(gets, GETS as u64, "{backend}: every get is accounted for");
        assert!(
            all.iter().all(|r| r.event.operation != "dropped"),
            "{backend}: nothing was dropped"
        );
        assert_eq!(
            manager.verify_audit().await.expect("verify"),
            all.len() as u64
        );
    }
}

/// Another session holding a lock that blocks every writer of `api_key_audit` (and, on
/// SQLite, of the whole file).
struct Blocker {
    repo: SeaOrmKeyRepository,
    txn: Option<DatabaseTransaction>,
}

impl Blocker {
    async fn lock(db: &TestDatabase) -> Blocker {
        // One connection: MySQL's table locks belong to the session that took them.
        let options = StoreOptions {
            max_connections: 1,
            ..db.options()
        };
        let repo = SeaOrmKeyRepository::connect(db.url(), &options)
            .await
            .expect("open the blocking session");
        let conn = repo.connection();
        let txn = match db.backend() {
            Backend::Sqlite => Some(
                conn.begin_with_options(sea_orm::TransactionOptions {
                    sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Exclusive),
                    ..Default::default()
                })
                .await
                .expect("exclusive lock"),
            ),
            Backend::Postgres => {
                let txn = conn.begin().await.expect("begin");
                txn.execute_unprepared("LOCK TABLE api_key_audit IN ACCESS EXCLUSIVE MODE")
                    .await
                    .expect("lock table");
                Some(txn)
            }
            Backend::MySql => {
                conn.execute_unprepared("LOCK TABLES api_key_audit WRITE")
                    .await
                    .expect("lock tables");
                None
            }
        };
        Blocker { repo, txn }
    }

    async fn release(self) {
        match self.txn {
            Some(txn) => txn.rollback().await.expect("release"),
            None => {
                self.repo
                    .connection()
                    .execute_unprepared("UNLOCK TABLES")
                    .await
                    .expect("unlock tables");
            }
        }
    }
}

/// The attack: another session blocks the audit table while gets keep coming (fail-open, one
/// row per hit, a queue of 100). Every get is served; the queue stops at 100; once the table
/// is free `shutdown()` succeeds and the trail holds a counted gap ("N events dropped") that,
/// with the rows written, accounts for every get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_writer_leaves_a_counted_gap_on_every_database() {
    const HITS: u64 = 1_000;
    for db in TestDatabase::create_all().await {
        let backend = db.backend();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = settings(&db, &dir);
        settings.audit.every_hit = true;
        settings.audit.max_pending = 100;
        let manager = build_manager(&settings).await.expect("manager");
        let id = &ids(1)[0];
        manager.store(id, &key(0)).await.expect("store");
        manager.get(id).await.expect("cold get");
        manager.flush().await.expect("flush");

        let blocker = Blocker::lock(&db).await;
        for _ in 0..HITS {
            manager
                .get(id)
                .await
                .expect("fail-open: a get never waits for the trail");
        }
        blocker.release().await;
        manager
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("{backend}: shutdown failed: {e}"));

        let all = records(&manager).await;
        assert_eq!(
            manager.verify_audit().await.expect("verify"),
            all.len() as u64,
            "{backend}: the chain verifies"
        );
        let total = |operation: &str| -> u64 {
            all.iter()
                .filter(|r| r.event.operation == operation)
                .map(|r| r.event.count)
                .sum()
        };
        let dropped = total(DROPPED_OPERATION);
        assert!(
            dropped >= HITS - 300,
            "{backend}: the queue stopped near 100 rows ({dropped} dropped)"
        );
        assert_eq!(
            total("get") + dropped,
            HITS + 1,
            "{backend}: every get is accounted for"
        );
        for gap in all
            .iter()
            .filter(|r| r.event.operation == DROPPED_OPERATION)
        {
            let e = &gap.event;
            assert_eq!(e.detail, Some(format!("{} events dropped", e.count)));
            assert!(e.first_at.is_some_and(|first| first <= e.at), "{e:?}");
        }
    }
}

/// The attack: another process holds SQLite's write lock longer than the busy timeout while
/// last-use times are pending. `flush()` reports the database as unavailable (it does not
/// claim success, nor lose them); once the lock is gone they are written in the background,
/// without another flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_use_times_survive_a_locked_sqlite_database() {
    let Some(db) = TestDatabase::create(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = settings(&db, &dir);
    settings.store.busy_timeout_secs = 1;
    let manager = build_manager(&settings).await.expect("manager");
    let ids = ids(3);
    for (i, id) in ids.iter().enumerate() {
        manager.store(id, &key(i)).await.expect("store");
    }
    manager.flush().await.expect("flush");
    let blocker = Blocker::lock(&db).await;
    for id in &ids {
        manager.get(id).await.expect("get");
    }
    match manager.flush().await {
        Err(e @ Error::DatabaseUnavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("expected DatabaseUnavailable while locked, got {other:?}"),
    }
    blocker.release().await;

    let reader = build_manager(&settings).await.expect("reader");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = reader.list(&KeyFilter::default()).await.expect("list").keys;
        if listed.iter().all(|k| k.last_used_at.is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "last-use times never written after the lock was released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    manager.shutdown().await.expect("shutdown");
    reader.shutdown().await.expect("reader shutdown");
}
