//! Key lifecycle on a SQLite file with the local provider: rotation with a grace period,
//! expiry, master-key rewrap (online, idempotent), and retired master-key versions.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use llm_accounting::{
    ApiKey, CacheOptions, Error, KeyFilter, KeyIdentity, KeyRepository, KmsProvider,
    LocalKmsProvider, ManagerOptions, RewrapOptions, SeaOrmKeyRepository, SecureKeyManager,
    StoreOptions, VersionState, WriteOptions,
};

fn key(s: &str) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{s}-0123456789"))
}

fn id(user: &str) -> KeyIdentity {
    KeyIdentity::from_parts("openai", Some(user), None).expect("id")
}

async fn repo(dir: &Path) -> Arc<SeaOrmKeyRepository> {
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    Arc::new(
        SeaOrmKeyRepository::connect(
            &url,
            &StoreOptions {
                create_if_missing: true,
                ..StoreOptions::default()
            },
        )
        .await
        .expect("open"),
    )
}

fn manager(
    provider: Arc<dyn KmsProvider>,
    repo: Arc<SeaOrmKeyRepository>,
    options: ManagerOptions,
) -> SecureKeyManager {
    SecureKeyManager::builder(provider, repo)
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

#[tokio::test]
async fn rotation_keeps_the_previous_value_for_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Arc::new(LocalKmsProvider::open_or_create(dir.path().join("mk")).expect("mk"));
    let repo = repo(dir.path()).await;
    let m = manager(
        provider,
        Arc::clone(&repo),
        ManagerOptions {
            previous_grace: Duration::from_millis(400),
            ..ManagerOptions::default()
        },
    );
    let a = id("alice");
    m.store(&a, &key("one")).await.expect("store");
    assert!(matches!(
        m.get_previous(&a).await,
        Err(Error::NoPrevious { .. })
    ));
    m.rotate(&a, &key("two")).await.expect("rotate");
    assert_eq!(
        m.get(&a).await.expect("get").expose_secret(),
        key("two").expose_secret()
    );
    assert_eq!(
        m.get_previous(&a).await.expect("previous").expose_secret(),
        key("one").expose_secret()
    );
    let versions = m.versions(&a).await.expect("versions");
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.state))
            .collect::<Vec<_>>(),
        [(1, VersionState::Previous), (2, VersionState::Current)]
    );
    assert!(versions[0].retire_at.is_some());
    assert!(versions[0].hint.is_some(), "hints, never values");

    tokio::time::sleep(Duration::from_millis(500)).await;
    match m.get_previous(&a).await {
        Err(e @ Error::NoPrevious { .. }) => {
            assert!(e.to_string().contains("retired"), "{e}");
        }
        other => panic!("expected the previous version retired, got {other:?}"),
    }
    let key_id = m.list(&KeyFilter::default()).await.expect("list").keys[0].id;
    let stored = repo.list_versions(key_id).await.expect("versions");
    assert_eq!(stored[0].state, VersionState::Retired);
    assert!(stored[0].envelope.is_empty(), "retired ciphertext is wiped");
    assert_eq!(
        m.get(&a)
            .await
            .expect("current still readable")
            .expose_secret(),
        key("two").expose_secret()
    );
}

#[tokio::test]
async fn expired_keys_are_refused_even_from_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Arc::new(LocalKmsProvider::open_or_create(dir.path().join("mk")).expect("mk"));
    let m = manager(provider, repo(dir.path()).await, ManagerOptions::default());
    let a = id("bob");
    let past = WriteOptions {
        expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
    };
    assert!(matches!(
        m.store_with(&a, &key("x"), &past).await,
        Err(Error::InvalidInput { .. })
    ));
    let soon = WriteOptions {
        expires_at: Some(Utc::now() + chrono::Duration::milliseconds(400)),
    };
    m.store_with(&a, &key("short"), &soon).await.expect("store");
    m.get(&a)
        .await
        .expect("readable before expiry (and now cached)");
    let listed = m.list(&KeyFilter::default()).await.expect("list").keys;
    let stored = listed[0].expires_at.expect("expiry listed");
    let wanted = soon.expires_at.expect("set");
    assert!(
        (stored - wanted).num_milliseconds().abs() < 2,
        "{stored} vs {wanted}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    match m.get(&a).await {
        Err(e @ Error::Expired { .. }) => assert_eq!(e.kind().as_str(), "expired"),
        other => panic!("expected Expired, got {other:?}"),
    }
    m.rotate(&a, &key("fresh")).await.expect("rotate");
    assert_eq!(
        m.get(&a)
            .await
            .expect("a new value is readable")
            .expose_secret(),
        key("fresh").expose_secret()
    );
}

#[tokio::test]
async fn rewrap_moves_every_key_to_the_new_master_key_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mk = dir.path().join("mk");
    let repo = repo(dir.path()).await;
    let old = Arc::new(LocalKmsProvider::open_or_create(&mk).expect("mk"));
    let v1 = old.master_key_ref();
    let m = manager(old, Arc::clone(&repo), ManagerOptions::default());
    for i in 0..300 {
        m.store(&id(&format!("u{i:03}")), &key(&format!("{i}")))
            .await
            .expect("store");
    }
    m.rotate(&id("u000"), &key("rotated"))
        .await
        .expect("rotate");

    let v2 = LocalKmsProvider::add_master_key_version(&mk).expect("add version");
    // Before the rewrap, retiring v1 would make the keys unreadable: clearly.
    let strict = Arc::new(
        LocalKmsProvider::open(&mk)
            .expect("mk")
            .with_min_version(2)
            .expect("min"),
    );
    let s = manager(strict, Arc::clone(&repo), no_cache());
    match s.get(&id("u001")).await {
        Err(e @ Error::AccessDenied { .. }) => {
            assert!(e.to_string().contains("retired"), "{e}");
        }
        other => panic!("expected AccessDenied for a retired master key, got {other:?}"),
    }
    let check = s
        .rewrap(
            &RewrapOptions {
                check_only: true,
                ..RewrapOptions::default()
            },
            |_| {},
        )
        .await
        .expect("check");
    assert_eq!(check.done, 301, "300 current + 1 previous version");
    assert_eq!(check.under_retired_keys, 301);

    let new = Arc::new(LocalKmsProvider::open(&mk).expect("mk"));
    assert_eq!(new.master_key_ref(), v2);
    let m = manager(new, Arc::clone(&repo), no_cache());
    let mut last = None;
    let report = m
        .rewrap(
            &RewrapOptions {
                batch_size: 64,
                ..RewrapOptions::default()
            },
            |p| last = Some(p),
        )
        .await
        .expect("rewrap");
    assert_eq!((report.done, report.skipped), (301, 0));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(last.map(|p| p.handled), Some(301));
    assert_ne!(v1, v2);

    // Idempotent: nothing left.
    let again = m
        .rewrap(&RewrapOptions::default(), |_| {})
        .await
        .expect("again");
    assert_eq!((again.done, again.skipped, again.failed.len()), (0, 0, 0));

    // Now v1 can be retired: every key reads under the strict provider.
    let s = manager(
        Arc::new(
            LocalKmsProvider::open(&mk)
                .expect("mk")
                .with_min_version(2)
                .expect("min"),
        ),
        Arc::clone(&repo),
        no_cache(),
    );
    for i in 1..300 {
        assert_eq!(
            s.get(&id(&format!("u{i:03}")))
                .await
                .expect("get")
                .expose_secret(),
            key(&format!("{i}")).expose_secret()
        );
    }
    assert_eq!(
        s.get_previous(&id("u000"))
            .await
            .expect("previous")
            .expose_secret(),
        key("0").expose_secret()
    );
    let versions = s.versions(&id("u000")).await.expect("versions");
    assert!(
        versions.iter().all(|v| v.master_key_ref == v2),
        "{versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewrap_while_eight_tasks_read_has_no_read_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mk = dir.path().join("mk");
    let repo = repo(dir.path()).await;
    let old = Arc::new(LocalKmsProvider::open_or_create(&mk).expect("mk"));
    let m = manager(old, Arc::clone(&repo), ManagerOptions::default());
    const N: usize = 1500;
    for i in 0..N {
        m.store(&id(&format!("r{i:05}")), &key(&format!("{i}")))
            .await
            .expect("store");
    }
    LocalKmsProvider::add_master_key_version(&mk).expect("add version");
    let provider: Arc<dyn KmsProvider> = Arc::new(LocalKmsProvider::open(&mk).expect("mk"));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for t in 0..8usize {
        // Readers without a cache: every get reads the row and unwraps its data key.
        let r = manager(Arc::clone(&provider), Arc::clone(&repo), no_cache());
        let stop = Arc::clone(&stop);
        let reads = Arc::clone(&reads);
        readers.spawn(async move {
            let mut i = t * 97;
            while !stop.load(Ordering::Relaxed) {
                let n = i % N;
                let got = r
                    .get(&id(&format!("r{n:05}")))
                    .await
                    .expect("read during rewrap");
                assert_eq!(got.expose_secret(), key(&format!("{n}")).expose_secret());
                reads.fetch_add(1, Ordering::Relaxed);
                i += 13;
            }
        });
    }
    let w = manager(Arc::clone(&provider), Arc::clone(&repo), no_cache());
    let report = w
        .rewrap(&RewrapOptions::default(), |_| {})
        .await
        .expect("rewrap");
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = readers.join_next().await {
        r.expect("reader never failed");
    }
    assert_eq!(report.done, N as u64);
    assert!(report.failed.is_empty());
    eprintln!(
        "{} reads during the rewrap of {N} keys, none failed",
        reads.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
}
