//! Many tasks, several managers and several OS processes on one database, on every database
//! this build supports (SQLite file, PostgreSQL, MySQL/MariaDB; see
//! `llm_accounting_testkit::database` for how the servers are found and when tests skip).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_accounting::{
    ApiKey, CacheOptions, Error, KeyFilter, KeyIdentity, LocalKmsProvider, ManagerOptions,
    SeaOrmKeyRepository, SecureKeyManager,
};
use llm_accounting_testkit::TestDatabase;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// A condition on the result of a get.
type Check = Box<dyn Fn(&llm_accounting::Result<ApiKey>) -> bool + Send>;

fn options(refresh: Duration, max_entries: u64) -> ManagerOptions {
    ManagerOptions {
        cache: CacheOptions {
            max_entries,
            refresh_interval: refresh,
            ..CacheOptions::default()
        },
        ..ManagerOptions::default()
    }
}

async fn manager(
    db: &TestDatabase,
    master_key: &Path,
    options: ManagerOptions,
) -> (SecureKeyManager, SeaOrmKeyRepository) {
    let provider = LocalKmsProvider::open_or_create(master_key).expect("master key");
    let repo = db.repository().await;
    let m = SecureKeyManager::builder(Arc::new(provider), Arc::new(repo.clone()))
        .options(options)
        .build();
    (m, repo)
}

fn key(s: &str) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{s}-0123456789"))
}

/// (state, count) of the versions of one key, read straight from the table.
async fn version_states(repo: &SeaOrmKeyRepository, key_id: uuid::Uuid) -> Vec<(String, i64)> {
    let db = repo.connection();
    let backend = db.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT state, COUNT(*) AS n FROM api_key_versions WHERE key_id = {placeholder} \
                 GROUP BY state ORDER BY state"
            ),
            [key_id.as_hyphenated().to_string().into()],
        ))
        .await
        .expect("count versions");
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "state").expect("state"),
                r.try_get::<i64>("", "n").expect("n"),
            )
        })
        .collect()
}

/// 32 concurrent stores of one identity, from four managers with their own pools: exactly one
/// current version; every other attempt became a previous version or got a clear conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_of_one_identity_keep_one_current_version() {
    for db in TestDatabase::create_all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let mk = dir.path().join("master.key");
        let mut managers = Vec::new();
        for _ in 0..4 {
            managers.push(manager(&db, &mk, ManagerOptions::default()).await.0);
        }
        let (_, repo) = manager(&db, &mk, ManagerOptions::default()).await;
        let id = KeyIdentity::from_parts("openai", None, Some("race")).expect("id");

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32 {
            let m = managers[i % 4].clone();
            let id = id.clone();
            tasks.spawn(async move { (i, m.store(&id, &key(&format!("store-{i:02}"))).await) });
        }
        let (mut stored, mut conflicts) = (Vec::new(), 0);
        while let Some(done) = tasks.join_next().await {
            match done.expect("task") {
                (i, Ok(outcome)) => stored.push((i, outcome)),
                (_, Err(Error::Conflict { .. })) => conflicts += 1,
                (_, Err(e)) => panic!("{}: unexpected error: {e}", db.backend()),
            }
        }
        assert_eq!(stored.len() + conflicts, 32);
        assert!(!stored.is_empty());
        let versions: HashSet<u32> = stored.iter().map(|(_, o)| o.version).collect();
        assert_eq!(
            versions.len(),
            stored.len(),
            "every success has its own version"
        );

        let key_id = stored[0].1.key_id;
        assert!(
            stored.iter().all(|(_, o)| o.key_id == key_id),
            "one key row"
        );
        let states = version_states(&repo, key_id).await;
        let count = |s: &str| states.iter().find(|(n, _)| n == s).map_or(0, |(_, c)| *c);
        assert_eq!(count("current"), 1, "{}: {states:?}", db.backend());
        assert_eq!(
            count("previous"),
            i64::try_from(stored.len() - 1).expect("small"),
            "{}: {states:?}",
            db.backend()
        );
        // The current value is the one stored with the highest version.
        let (winner, _) = stored.iter().max_by_key(|(_, o)| o.version).expect("one");
        let got = managers[1].get(&id).await.expect("get");
        assert_eq!(
            got.expose_secret(),
            key(&format!("store-{winner:02}")).expose_secret()
        );
        eprintln!(
            "{}: {} stores became versions, {conflicts} conflicts",
            db.backend(),
            stored.len()
        );
    }
}

/// Rotations and uncached gets at the same time: every get returns one of the values written,
/// whole, and never fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotate_and_get_never_tear() {
    for db in TestDatabase::create_all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let mk = dir.path().join("master.key");
        let (writer, _) = manager(&db, &mk, ManagerOptions::default()).await;
        let id = KeyIdentity::from_parts("anthropic", Some("bob"), None).expect("id");
        writer.store(&id, &key("initial")).await.expect("store");

        let mut valid: HashSet<String> = HashSet::new();
        valid.insert(key("initial").expose_secret().to_owned());
        for w in 0..2 {
            for j in 0..15 {
                valid.insert(key(&format!("rot-{w}-{j}")).expose_secret().to_owned());
            }
        }
        let valid = Arc::new(valid);

        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..2 {
            let (m, _) = manager(&db, &mk, ManagerOptions::default()).await;
            let id = id.clone();
            tasks.spawn(async move {
                let mut n = 0;
                for j in 0..15 {
                    match m.rotate(&id, &key(&format!("rot-{w}-{j}"))).await {
                        Ok(_) | Err(Error::Conflict { .. }) => n += 1,
                        Err(e) => panic!("rotate: {e}"),
                    }
                }
                n
            });
        }
        for _ in 0..4 {
            // No cache: every get reads and decrypts the current version.
            let (m, _) = manager(&db, &mk, options(Duration::ZERO, 0)).await;
            let id = id.clone();
            let valid = Arc::clone(&valid);
            tasks.spawn(async move {
                let mut reads = 0;
                for _ in 0..40 {
                    let got = m.get(&id).await.expect("get during rotation");
                    assert!(
                        valid.contains(got.expose_secret()),
                        "a torn or unknown value"
                    );
                    reads += 1;
                }
                reads
            });
        }
        let mut total = 0;
        while let Some(n) = tasks.join_next().await {
            total += n.expect("task");
        }
        assert_eq!(total, 2 * 15 + 4 * 40, "{}", db.backend());
    }
}

/// Another process's rotate, disable and delete are seen by a manager that had the key cached
/// within the refresh interval (here 200 ms; asserted with a generous 5 s bound), not the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_managers_changes_are_seen_within_the_refresh_interval() {
    for db in TestDatabase::create_all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let mk = dir.path().join("master.key");
        let refresh = Duration::from_millis(200);
        let (a, _) = manager(&db, &mk, options(refresh, 1000)).await;
        let (b, _) = manager(&db, &mk, options(refresh, 1000)).await;
        let id = KeyIdentity::from_parts("mistral", Some("carol"), Some("p")).expect("id");
        a.store(&id, &key("v1")).await.expect("store");
        assert_eq!(
            b.get(&id).await.expect("get").expose_secret(),
            key("v1").expose_secret()
        );
        assert_eq!(b.cached_keys(), 1);

        let seen_within = |what: &'static str, check: Check| {
            let b = b.clone();
            let id = id.clone();
            let backend = db.backend();
            async move {
                let start = Instant::now();
                loop {
                    let r = b.get(&id).await;
                    if check(&r) {
                        eprintln!("{backend}: {what} seen after {:?}", start.elapsed());
                        return;
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "{backend}: {what} not seen after 5 s: {r:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };

        a.rotate(&id, &key("v2")).await.expect("rotate");
        seen_within(
            "rotate",
            Box::new(|r| {
                r.as_ref()
                    .is_ok_and(|k| k.expose_secret() == key("v2").expose_secret())
            }),
        )
        .await;
        a.disable(&id).await.expect("disable");
        seen_within(
            "disable",
            Box::new(|r| matches!(r, Err(Error::Disabled { .. }))),
        )
        .await;
        a.enable(&id).await.expect("enable");
        seen_within("enable", Box::new(|r| r.is_ok())).await;
        a.delete(&id).await.expect("delete");
        seen_within(
            "delete",
            Box::new(|r| matches!(r, Err(Error::NotFound { .. }))),
        )
        .await;

        // Without the check, the other manager keeps serving its copy until the TTL.
        let (c, _) = manager(&db, &mk, options(Duration::ZERO, 1000)).await;
        a.store(&id, &key("v3")).await.expect("store");
        assert_eq!(
            c.get(&id).await.expect("get").expose_secret(),
            key("v3").expose_secret()
        );
        a.rotate(&id, &key("v4")).await.expect("rotate");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            c.get(&id).await.expect("get").expose_secret(),
            key("v3").expose_secret(),
            "with refresh off only the TTL expires entries"
        );
    }
}

const CHILD_ENV: &str = "LLA_TEST_CHILD_STORE";
const KEYS_PER_PROCESS: usize = 250;

/// Child side of `four_processes_storing_distinct_keys_lose_none` (does nothing when run
/// directly).
#[tokio::test]
async fn child_process_stores_keys() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (proc_no, url, mk) = (
        parts.next().expect("process number"),
        parts.next().expect("url"),
        parts.next().expect("master key"),
    );
    let provider = LocalKmsProvider::open(mk).expect("master key");
    // SQLite: the four processes create the file together.
    let options = llm_accounting::StoreOptions {
        create_if_missing: true,
        ..llm_accounting::StoreOptions::default()
    };
    let repo = SeaOrmKeyRepository::connect(url, &options)
        .await
        .expect("open");
    let m = SecureKeyManager::new(Arc::new(provider), Arc::new(repo));
    for i in 0..KEYS_PER_PROCESS {
        let id = KeyIdentity::from_parts("multi", Some(&format!("p{proc_no}-u{i:03}")), None)
            .expect("id");
        m.store(&id, &key(&format!("p{proc_no}-{i}")))
            .await
            .unwrap_or_else(|e| panic!("process {proc_no}, key {i}: {e}"));
    }
}

/// Four OS processes each store 250 distinct keys into one database at the same time (for
/// SQLite: one file, first opened by all four at once): none is lost, all decrypt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_storing_distinct_keys_lose_none() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for db in TestDatabase::create_all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let mk = dir.path().join("master.key");
        LocalKmsProvider::open_or_create(&mk).expect("create the master key first");
        let exe = std::env::current_exe().expect("test binary");
        let children: Vec<_> = (0..4)
            .map(|p| {
                Command::new(&exe)
                    .args(["--exact", "child_process_stores_keys", "--test-threads=1"])
                    .env(CHILD_ENV, format!("{p}|{}|{}", db.url(), mk.display()))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn child")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("child");
            assert!(
                out.status.success(),
                "{}: child failed: {}",
                db.backend(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (m, _) = manager(&db, &mk, ManagerOptions::default()).await;
        let listed = m
            .list(&KeyFilter {
                service: Some("multi".into()),
                ..KeyFilter::default()
            })
            .await
            .expect("list")
            .keys;
        assert_eq!(listed.len(), 4 * KEYS_PER_PROCESS, "{}", db.backend());
        for p in 0..4 {
            for i in 0..KEYS_PER_PROCESS {
                let id = KeyIdentity::from_parts("multi", Some(&format!("p{p}-u{i:03}")), None)
                    .expect("id");
                assert_eq!(
                    m.get(&id).await.expect("get").expose_secret(),
                    key(&format!("p{p}-{i}")).expose_secret()
                );
            }
        }
    }
}
