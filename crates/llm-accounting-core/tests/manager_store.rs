//! SecureKeyManager over the in-memory repository and an AES-GCM test provider: storing, rotating and the life of a key: round trips, failed and concurrent writes,
//! last-used times.

use std::sync::atomic::Ordering;
use std::time::Duration;

use llm_accounting_core::{ApiKey, Error, KeyFilter, KeyRepository, ManagerOptions, VersionState};

mod common;

use common::{fixture, id, key};

#[tokio::test]
async fn every_operation_round_trips() {
    let f = fixture(ManagerOptions::default());
    let alice = id("openai", Some("alice"));
    let out = f
        .manager
        .store(&alice, &key("sk-test-FAKE-aaaaaaaaaaaa1111"))
        .await
        .expect("store");
    assert!(out.created);
    assert_eq!(out.version, 1);
    assert_eq!(
        f.manager.get(&alice).await.expect("get").expose_secret(),
        "sk-test-FAKE-aaaaaaaaaaaa1111"
    );

    let out = f
        .manager
        .rotate(&alice, &key("sk-test-FAKE-bbbbbbbbbbbb2222"))
        .await
        .expect("rotate");
    assert_eq!((out.version, out.created), (2, false));
    assert_eq!(
        f.manager.get(&alice).await.expect("get").expose_secret(),
        "sk-test-FAKE-bbbbbbbbbbbb2222"
    );
    let versions = f.repo.versions_of(out.key_id);
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].state, VersionState::Previous);
    assert_eq!(versions[1].state, VersionState::Current);

    let listed = f
        .manager
        .list(&KeyFilter::default())
        .await
        .expect("list")
        .keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hint.as_deref(), Some("…2222"));

    f.manager.disable(&alice).await.expect("disable");
    assert!(matches!(
        f.manager.get(&alice).await,
        Err(Error::Disabled { .. })
    ));
    f.manager.enable(&alice).await.expect("enable");
    assert!(f.manager.get(&alice).await.is_ok());
    f.manager.delete(&alice).await.expect("delete");
    assert!(matches!(
        f.manager.get(&alice).await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        f.repo.versions_of(out.key_id).is_empty(),
        "delete removes every version"
    );
    assert!(matches!(
        f.manager
            .rotate(&alice, &key("sk-test-FAKE-cccccccccccc3333"))
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        f.manager.disable(&alice).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn failed_store_leaves_previous_key_intact() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", Some("alice"));
    f.manager
        .store(&a, &key("sk-test-FAKE-original-00000"))
        .await
        .expect("store");
    f.provider.fail.store(true, Ordering::SeqCst);
    let err = f
        .manager
        .store(&a, &key("sk-test-FAKE-replacement-0"))
        .await
        .expect_err("kms down");
    assert!(
        err.is_retryable() && matches!(err, Error::ProviderUnavailable { .. }),
        "{err:?}"
    );
    // Invalid input fails before anything is written.
    f.provider.fail.store(false, Ordering::SeqCst);
    for bad in [String::new(), "   ".into(), "x".repeat(16 * 1024 + 1)] {
        let err = f
            .manager
            .store(&a, &ApiKey::new(bad))
            .await
            .expect_err("invalid");
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    }
    f.manager.clear_cache();
    assert_eq!(
        f.manager.get(&a).await.expect("get").expose_secret(),
        "sk-test-FAKE-original-00000"
    );
    let rec = f
        .manager
        .list(&KeyFilter::default())
        .await
        .expect("list")
        .keys;
    assert_eq!(rec[0].current_version, 1, "no version was added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_of_one_identity_keep_one_current_version() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", Some("race"));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let m = f.manager.clone();
            let a = a.clone();
            tokio::spawn(async move {
                m.store(&a, &key(&format!("sk-test-FAKE-race-{i:04}-000000")))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            Err(Error::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    let rec = f.repo.find_key(&a).await.expect("find").expect("exists");
    let versions = f.repo.versions_of(rec.id);
    assert_eq!(versions.len(), ok, "every success is one version");
    assert_eq!(
        versions
            .iter()
            .filter(|v| v.state == VersionState::Current)
            .count(),
        1
    );
    assert_eq!(rec.current_version as usize, ok);
    f.manager.get(&a).await.expect("current version decrypts");
}

#[tokio::test]
async fn last_used_is_throttled_and_batched() {
    let f = fixture(ManagerOptions {
        last_used_interval: Duration::from_secs(3600),
        ..ManagerOptions::default()
    });
    let a = id("openai", None);
    f.manager
        .store(&a, &key("sk-test-FAKE-lastused-0000"))
        .await
        .expect("store");
    assert!(
        f.repo
            .find_key(&a)
            .await
            .expect("find")
            .expect("exists")
            .last_used_at
            .is_none()
    );
    for _ in 0..50 {
        f.manager.get(&a).await.expect("get");
    }
    f.manager.flush().await.expect("flush");
    let first = f
        .repo
        .find_key(&a)
        .await
        .expect("find")
        .expect("exists")
        .last_used_at;
    assert!(first.is_some(), "the first use is recorded");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.manager.get(&a).await.expect("get");
    f.manager.flush().await.expect("flush");
    let second = f
        .repo
        .find_key(&a)
        .await
        .expect("find")
        .expect("exists")
        .last_used_at;
    assert_eq!(first, second, "within the interval, hits do not write");
}
