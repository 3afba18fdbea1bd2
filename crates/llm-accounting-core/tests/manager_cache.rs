//! SecureKeyManager over the in-memory repository and an AES-GCM test provider: the cache of decrypted keys: single flight, eviction on writes, TTL and size bound.

use std::sync::atomic::Ordering;
use std::time::Duration;

use llm_accounting_core::{CacheOptions, Error, ManagerOptions};

mod common;

use common::{fixture, id, key};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_cold_gets_unwrap_once() {
    let f = fixture(ManagerOptions::default());
    let alice = id("openai", Some("alice"));
    f.manager
        .store(&alice, &key("sk-test-FAKE-single-flight-0001"))
        .await
        .expect("store");
    let before = f.provider.unwraps.load(Ordering::SeqCst);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let m = f.manager.clone();
            let a = alice.clone();
            tokio::spawn(async move { m.get(&a).await.map(|k| k.expose_secret().to_owned()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("get"),
            "sk-test-FAKE-single-flight-0001"
        );
    }
    assert_eq!(
        f.provider.unwraps.load(Ordering::SeqCst) - before,
        1,
        "exactly one unwrap"
    );
    // And hits cost nothing.
    f.manager.get(&alice).await.expect("hit");
    assert_eq!(f.provider.unwraps.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test]
async fn writes_evict_at_once() {
    let f = fixture(ManagerOptions::default());
    let a = id("anthropic", None);
    f.manager
        .store(&a, &key("sk-test-FAKE-one-1111111111"))
        .await
        .expect("store");
    f.manager.get(&a).await.expect("warm");
    f.manager
        .store(&a, &key("sk-test-FAKE-two-2222222222"))
        .await
        .expect("store again");
    assert_eq!(
        f.manager.get(&a).await.expect("get").expose_secret(),
        "sk-test-FAKE-two-2222222222"
    );
    f.manager.disable(&a).await.expect("disable");
    assert!(matches!(
        f.manager.get(&a).await,
        Err(Error::Disabled { .. })
    ));
    f.manager.enable(&a).await.expect("enable");
    f.manager.get(&a).await.expect("warm");
    f.manager.delete(&a).await.expect("delete");
    assert!(matches!(
        f.manager.get(&a).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(f.manager.cached_keys(), 0);
}

#[tokio::test]
async fn ttl_and_size_bound() {
    let f = fixture(ManagerOptions {
        cache: CacheOptions {
            ttl: Duration::from_millis(200),
            max_entries: 3,
            ..CacheOptions::default()
        },
        ..ManagerOptions::default()
    });
    for i in 0..8 {
        let s = format!("svc{i}");
        f.manager
            .store(&id(&s, None), &key(&format!("sk-test-FAKE-{i}-000000000")))
            .await
            .expect("store");
        f.manager.get(&id(&s, None)).await.expect("get");
    }
    assert!(f.manager.cached_keys() <= 3, "size bound holds");
    let a = id("svc0", None);
    f.manager.get(&a).await.expect("get");
    let n = f.provider.unwraps.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    f.manager.get(&a).await.expect("get after ttl");
    assert_eq!(
        f.provider.unwraps.load(Ordering::SeqCst),
        n + 1,
        "expired entry is reloaded"
    );
    f.manager.clear_cache();
    assert_eq!(f.manager.cached_keys(), 0);
}
