//! Instant revocation on PostgreSQL: a change committed by one manager drops the entry cached
//! by another through LISTEN/NOTIFY, with polling set so long (an hour) that only the
//! notification can explain it; a lost notification connection falls back to polling, says
//! so in the log, and comes back.

#![cfg(feature = "postgres")]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use llm_accounting::{
    ApiKey, BatchMode, CacheOptions, Error, KeyIdentity, LocalKmsProvider, ManagerOptions,
    PgChangeFeed, Result, SecureKeyManager, WriteOptions,
};
use llm_accounting_testkit::TestDatabase;
use llm_accounting_testkit::database::Backend;
use sea_orm::ConnectionTrait;

/// Everything logged at INFO and above in this test binary.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(text: &str) -> bool {
    String::from_utf8_lossy(&log().lock().expect("log")).contains(text)
}

fn key(s: &str) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{s}-0123456789abcdef"))
}

fn id(user: &str) -> KeyIdentity {
    KeyIdentity::from_parts("notify", Some(user), None).expect("identity")
}

fn options(refresh: Duration) -> ManagerOptions {
    ManagerOptions {
        cache: CacheOptions {
            refresh_interval: refresh,
            ..CacheOptions::default()
        },
        ..ManagerOptions::default()
    }
}

/// A manager on `db` polling every `refresh`, listening to `feed` if given.
async fn manager(
    db: &TestDatabase,
    master_key: &Path,
    refresh: Duration,
    feed: Option<PgChangeFeed>,
) -> SecureKeyManager {
    let provider = LocalKmsProvider::open_or_create(master_key).expect("master key");
    let repo = Arc::new(db.repository().await);
    let mut builder = SecureKeyManager::builder(Arc::new(provider), repo).options(options(refresh));
    if let Some(feed) = feed {
        builder = builder.change_feed(Arc::new(feed));
    }
    builder.build()
}

/// Waits (at most 20 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

fn is_value(r: &Result<ApiKey>, want: &ApiKey) -> bool {
    r.as_ref()
        .is_ok_and(|k| k.expose_secret() == want.expose_secret())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_managers_cache_drops_a_changed_key_through_the_notification() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mk = dir.path().join("master.key");
    let hour = Duration::from_secs(3600);
    let a = manager(&db, &mk, hour, None).await;
    let repo_b = db.repository().await;
    let b = manager(&db, &mk, hour, PgChangeFeed::of(&repo_b)).await;
    assert_eq!(
        repo_b.change_channel(),
        Some("llm_accounting_changes"),
        "tables in public"
    );
    // The control: the same polling, no feed.
    let c = manager(&db, &mk, hour, None).await;

    let items: Vec<_> = ["rot", "dis", "del", "bat"]
        .iter()
        .map(|u| (id(u), key(&format!("{u}-1"))))
        .collect();
    a.store_many(&items, BatchMode::CreateOnly, &WriteOptions::default())
        .await
        .expect("store");
    for (identity, value) in &items {
        assert!(is_value(&b.get(identity).await, value));
        assert!(is_value(&c.get(identity).await, value));
    }
    eventually("B's feed is live", || async { b.change_feed_live() }).await;
    assert!(!c.change_feed_live(), "no feed, never live");

    a.rotate(&id("rot"), &key("rot-2")).await.expect("rotate");
    eventually("B sees the rotation", || async {
        is_value(&b.get(&id("rot")).await, &key("rot-2"))
    })
    .await;
    assert!(
        is_value(&c.get(&id("rot")).await, &key("rot-1")),
        "without the feed the old value is still served (polling every hour)"
    );

    a.disable(&id("dis")).await.expect("disable");
    eventually("B sees the key disabled", || async {
        matches!(b.get(&id("dis")).await, Err(Error::Disabled { .. }))
    })
    .await;

    a.delete(&id("del")).await.expect("delete");
    eventually("B sees the key deleted", || async {
        matches!(b.get(&id("del")).await, Err(Error::NotFound { .. }))
    })
    .await;

    // A batch notifies every key it writes.
    a.store_many(
        &[(id("bat"), key("bat-2"))],
        BatchMode::Upsert,
        &WriteOptions::default(),
    )
    .await
    .expect("upsert");
    eventually("B sees the batch", || async {
        is_value(&b.get(&id("bat")).await, &key("bat-2"))
    })
    .await;
    assert!(is_value(&c.get(&id("bat")).await, &key("bat-1")));

    b.shutdown().await.expect("shutdown");
    assert!(!b.change_feed_live(), "stopped by shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_takes_over_while_the_notification_connection_is_down() {
    let _ = log();
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mk = dir.path().join("master.key");
    let admin = db.repository().await;
    let sql = |s: String| {
        let conn = admin.connection().clone();
        async move { conn.execute_unprepared(&s).await.map(drop) }
    };
    // The listener logs in as a role of its own, so that it can be cut off alone.
    let role = format!(
        "lla_listen_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sql(format!("CREATE ROLE {role} LOGIN"))
        .await
        .expect("role");
    let url = db.url().replacen("//postgres@", &format!("//{role}@"), 1);
    assert_ne!(url, db.url(), "the test URL names the postgres user");
    let feed = PgChangeFeed::connect(&url, &db.options())
        .await
        .expect("feed");

    let a = manager(&db, &mk, Duration::from_secs(3600), None).await;
    let b = manager(&db, &mk, Duration::from_millis(200), Some(feed)).await;
    a.store(&id("k"), &key("k-1")).await.expect("store");
    assert!(is_value(&b.get(&id("k")).await, &key("k-1")));
    eventually("B's feed is live", || async { b.change_feed_live() }).await;

    // Cut the listener off, and keep it from coming back.
    sql(format!("ALTER ROLE {role} NOLOGIN"))
        .await
        .expect("nologin");
    sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await
    .expect("terminate");
    eventually("B notices the lost connection", || async {
        !b.change_feed_live()
    })
    .await;
    eventually("the warning is logged", || async {
        logged("lost the change-notification connection: falling back to polling")
    })
    .await;

    // Polling alone sees a change while no notification can arrive.
    a.disable(&id("k")).await.expect("disable");
    eventually("B sees the key disabled by polling", || async {
        matches!(b.get(&id("k")).await, Err(Error::Disabled { .. }))
    })
    .await;
    assert!(!b.change_feed_live(), "the listener is still cut off");

    // Back: the listener reconnects on its own and says so.
    sql(format!("ALTER ROLE {role} LOGIN"))
        .await
        .expect("login");
    eventually("B's feed is back", || async { b.change_feed_live() }).await;
    eventually("the recovery is logged", || async {
        logged("change notifications are back")
    })
    .await;
    a.enable(&id("k")).await.expect("enable");
    eventually("B sees the key enabled", || async {
        is_value(&b.get(&id("k")).await, &key("k-1"))
    })
    .await;

    b.shutdown().await.expect("shutdown");
    drop(b);
    let _ = sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
    let _ = sql(format!("DROP ROLE {role}")).await;
}

/// Only changes that were written are published (a refused batch publishes nothing), and a
/// store in another schema publishes on a channel of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_changes_are_published_per_schema() {
    use llm_accounting::{Change, StoreOptions};

    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mk = dir.path().join("master.key");
    let a = manager(&db, &mk, Duration::from_secs(3600), None).await;
    let repo = db.repository().await;
    let feed = PgChangeFeed::of(&repo).expect("postgres");
    let mut stream = llm_accounting::ChangeFeed::subscribe(&feed)
        .await
        .expect("subscribe");

    a.store(&id("x"), &key("x-1")).await.expect("store x");
    let x = a.versions(&id("x")).await.expect("versions");
    assert_eq!(x.len(), 1);
    let created = stream.next().await.expect("next").expect("a change");
    let Change::Key(x_id) = created else {
        panic!("a key change, got {created:?}");
    };

    // A create-only batch that clashes is refused: nothing is published.
    let clash = vec![(id("y"), key("y-1")), (id("x"), key("x-2"))];
    assert!(
        a.store_many(&clash, BatchMode::CreateOnly, &WriteOptions::default())
            .await
            .is_err()
    );
    a.disable(&id("x")).await.expect("disable");
    assert_eq!(
        stream.next().await.expect("next"),
        Some(Change::Key(x_id)),
        "the next notification is the disable, not the refused batch"
    );

    // Another schema, another channel: its changes do not reach this one's listeners.
    let admin = db.repository().await;
    admin
        .connection()
        .execute_unprepared("CREATE SCHEMA tenant_b")
        .await
        .expect("schema");
    let in_b = StoreOptions {
        schema: Some("tenant_b".into()),
        ..db.options()
    };
    let repo_b = llm_accounting::SeaOrmKeyRepository::connect(db.url(), &in_b)
        .await
        .expect("open in tenant_b");
    assert_eq!(
        repo_b.change_channel(),
        Some("llm_accounting_changes.tenant_b")
    );
    let feed_b = PgChangeFeed::connect(db.url(), &in_b).await.expect("feed");
    assert_eq!(feed_b.channel(), "llm_accounting_changes.tenant_b");
    let mut stream_b = llm_accounting::ChangeFeed::subscribe(&feed_b)
        .await
        .expect("subscribe");
    let provider = LocalKmsProvider::open_or_create(&mk).expect("master key");
    let m_b = SecureKeyManager::new(Arc::new(provider), Arc::new(repo_b));
    let stored = m_b.store(&id("z"), &key("z-1")).await.expect("store in b");
    assert_eq!(
        stream_b.next().await.expect("next"),
        Some(Change::Key(stored.key_id))
    );
    a.enable(&id("x")).await.expect("enable");
    assert_eq!(
        stream.next().await.expect("next"),
        Some(Change::Key(x_id)),
        "the public channel heard only its own store's change"
    );
}

/// Anyone who can connect to the database can send notifications on the channel: a forged
/// or garbled one only makes a manager read the store again (it still serves the stored
/// value and refuses what the store refuses), never anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_notification_only_causes_a_read() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mk = dir.path().join("master.key");
    let a = manager(&db, &mk, Duration::from_secs(3600), None).await;
    let repo_b = db.repository().await;
    let b = manager(
        &db,
        &mk,
        Duration::from_secs(3600),
        PgChangeFeed::of(&repo_b),
    )
    .await;
    let stored = a.store(&id("f"), &key("f-1")).await.expect("store");
    a.store(&id("g"), &key("g-1")).await.expect("store");
    assert!(is_value(&b.get(&id("f")).await, &key("f-1")));
    assert!(is_value(&b.get(&id("g")).await, &key("g-1")));
    eventually("B's feed is live", || async { b.change_feed_live() }).await;
    assert_eq!(b.cached_keys(), 2);

    let attacker = db.repository().await;
    for payload in [
        "garbage".to_owned(),
        "key:not-a-uuid".to_owned(),
        format!("key:{}", uuid::Uuid::new_v4()),
        format!("key:{}", stored.key_id.as_hyphenated()),
    ] {
        attacker
            .connection()
            .execute_unprepared(&format!(
                "SELECT pg_notify('llm_accounting_changes', '{payload}')"
            ))
            .await
            .expect("notify");
    }
    eventually("the forged key:<id> of f dropped its entry", || async {
        b.cached_keys() == 1
    })
    .await;
    assert!(b.change_feed_live(), "garbled payloads are ignored");
    assert!(
        is_value(&b.get(&id("f")).await, &key("f-1")),
        "re-read: the stored value, nothing else"
    );
    assert!(is_value(&b.get(&id("g")).await, &key("g-1")));
    b.shutdown().await.expect("shutdown");
}

/// A manager whose branch layer (`kms.hierarchy = service`) listens to `db`'s feed, as the
/// facade builds it; polling every hour.
async fn branch_manager(
    db: &TestDatabase,
    master_key: &Path,
) -> (
    SecureKeyManager,
    Arc<llm_accounting::branch::BranchKeyProvider>,
) {
    use llm_accounting::branch::{BranchKeyProvider, BranchKeyStore, Hierarchy};
    let provider = LocalKmsProvider::open_or_create(master_key).expect("master key");
    let repo = Arc::new(db.repository().await);
    let branches = Arc::new(BranchKeyProvider::new(
        Arc::new(provider),
        Arc::clone(&repo) as Arc<dyn BranchKeyStore>,
        Hierarchy::Service,
        Duration::from_secs(600),
    ));
    let feed = PgChangeFeed::of(&repo).expect("a PostgreSQL store has a feed");
    let manager = SecureKeyManager::builder(Arc::clone(&branches) as _, repo)
        .branch_keys(Arc::clone(&branches))
        .options(options(Duration::from_secs(3600)))
        .change_feed(Arc::new(feed))
        .build();
    manager.subscribe_changes(Arc::clone(&branches) as _);
    (manager, branches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_branch_version_made_elsewhere_is_used_at_once() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let master_key = dir.path().join("master.key");
    let (a, _) = branch_manager(&db, &master_key).await;
    let (b, b_branches) = branch_manager(&db, &master_key).await;
    let first = id("branch-a");
    b.store(&first, &key("1")).await.expect("store");
    // A cache miss starts B's listener (which drops every branch key when it connects) ...
    b.clear_cache();
    b.get(&first).await.expect("get");
    eventually("B's feed is live", || async { b.change_feed_live() }).await;
    // ... then B reads again and holds the service's branch key, version 1.
    b.clear_cache();
    b.get(&first).await.expect("get");
    assert_eq!(b_branches.cached_branch_keys(), 1);

    // A makes version 2 of the branch: B drops version 1 through the notification (its TTL
    // is ten minutes, its polling an hour) ...
    let report = a
        .rewrap(
            &llm_accounting::RewrapOptions {
                rotate_branches: true,
                ..llm_accounting::RewrapOptions::default()
            },
            |_| {},
        )
        .await
        .expect("rotate branches");
    assert_eq!(report.failed.len(), 0, "{report:?}");
    eventually("B dropped the old branch version", || async {
        b_branches.cached_branch_keys() == 0
    })
    .await;
    // ... and its next store is wrapped under version 2.
    let second = id("branch-b");
    b.store(&second, &key("2")).await.expect("store");
    let versions = b.versions(&second).await.expect("versions");
    assert!(
        versions[0].master_key_ref.ends_with("/v2"),
        "stored under {}",
        versions[0].master_key_ref
    );
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}
