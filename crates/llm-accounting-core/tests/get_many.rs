//! `SecureKeyManager::get_many`: bounded concurrency, single-flight per key, per-key outcomes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use llm_accounting_core::envelope::{aead_open, aead_seal};
use llm_accounting_core::layers::{self, KmsMetrics, LayerOptions};
use llm_accounting_core::{
    ApiKey, DataKey, EncryptionContext, Error, KeyIdentity, KmsProvider, MemoryKeyRepository,
    Result, SecureKeyManager, WrappedKey,
};

/// AES-GCM wrapping under a fixed key; every unwrap takes 50 ms (a KMS round trip) and the
/// provider records how many unwraps ran at the same time.
#[derive(Debug, Default)]
struct SlowKms {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    unwraps: AtomicUsize,
}

const MK: [u8; 32] = [9; 32];

#[async_trait]
impl KmsProvider for SlowKms {
    fn name(&self) -> &str {
        "slow"
    }
    fn master_key_ref(&self) -> String {
        "slow-mk".into()
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        let (nonce, ct) = aead_seal(&MK, &context.canonical_bytes(), key.expose_secret())?;
        Ok(WrappedKey {
            provider: "slow".into(),
            master_key_ref: "slow-mk".into(),
            ciphertext: [nonce.as_slice(), &ct].concat(),
        })
    }
    async fn unwrap_key(&self, w: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&w.ciphertext[..12]);
        DataKey::from_zeroizing(aead_open(
            &MK,
            &nonce,
            &context.canonical_bytes(),
            &w.ciphertext[12..],
        )?)
    }
}

fn user(i: usize) -> KeyIdentity {
    KeyIdentity::from_parts("openai", Some(&format!("user-{i:03}")), None).expect("valid")
}

fn secret(i: usize) -> String {
    format!("sk-test-FAKE-bulk-{i:08}-0000000000")
}

async fn fixture(n: usize) -> (Arc<SlowKms>, Arc<KmsMetrics>, SecureKeyManager) {
    let kms = Arc::new(SlowKms::default());
    let metrics = Arc::new(KmsMetrics::new());
    let provider = layers::stack(
        Arc::clone(&kms) as Arc<dyn KmsProvider>,
        &LayerOptions::default(),
        Arc::clone(&metrics),
    );
    let manager = SecureKeyManager::new(provider, Arc::new(MemoryKeyRepository::new()));
    for i in 0..n {
        manager
            .store(&user(i), &ApiKey::new(secret(i)))
            .await
            .expect("store");
    }
    manager.clear_cache();
    (kms, metrics, manager)
}

#[tokio::test(start_paused = true)]
async fn loads_many_cold_keys_concurrently_in_order() {
    let (kms, metrics, manager) = fixture(40).await;
    let ids: Vec<KeyIdentity> = (0..40).map(user).collect();
    let before = metrics.snapshot();
    let start = tokio::time::Instant::now();
    let results = manager.get_many(&ids, 8).await;
    let took = start.elapsed();

    assert_eq!(results.len(), 40);
    for (i, (identity, key)) in results.iter().enumerate() {
        assert_eq!(identity, &ids[i], "results follow the input order");
        assert_eq!(key.as_ref().expect("loaded").expose_secret(), secret(i));
    }
    assert_eq!(
        kms.peak.load(Ordering::SeqCst),
        8,
        "bounded by `concurrency`"
    );
    assert_eq!(
        metrics.snapshot().since(&before).unwraps,
        40,
        "one unwrap per key"
    );
    // 40 keys, 8 at a time, 50 ms each: 5 rounds, not 40 (time is paused: exact).
    assert!(took < Duration::from_millis(40 * 50 / 2), "{took:?}");

    // Now cached: no KMS call at all.
    let before = metrics.snapshot();
    let again = manager.get_many(&ids, 8).await;
    assert!(again.iter().all(|(_, k)| k.is_ok()));
    assert_eq!(metrics.snapshot().since(&before).calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_outcome_and_duplicates_load_once() {
    let (kms, _metrics, manager) = fixture(3).await;
    manager.disable(&user(1)).await.expect("disable");
    let missing = KeyIdentity::new("never-stored").expect("valid");
    let ids = vec![user(0), user(1), missing.clone(), user(2), user(0), user(2)];
    let results = manager.get_many(&ids, 0).await; // 0 is taken as 1
    assert_eq!(results.len(), ids.len());
    assert_eq!(
        results[0].1.as_ref().expect("ok").expose_secret(),
        secret(0)
    );
    assert!(matches!(results[1].1, Err(Error::Disabled { .. })));
    assert!(matches!(results[2].1, Err(Error::NotFound { .. })));
    assert_eq!(results[2].0, missing);
    assert_eq!(
        results[3].1.as_ref().expect("ok").expose_secret(),
        secret(2)
    );
    assert_eq!(
        results[4].1.as_ref().expect("ok").expose_secret(),
        secret(0)
    );
    assert_eq!(
        results[5].1.as_ref().expect("ok").expose_secret(),
        secret(2)
    );
    assert_eq!(
        kms.unwraps.load(Ordering::SeqCst),
        2,
        "user 0 and user 2, once each"
    );

    // Duplicates asked for at the same time are loaded once (single-flight).
    manager.clear_cache();
    let same = vec![user(2); 10];
    let results = manager.get_many(&same, 10).await;
    assert!(results.iter().all(|(_, k)| k.is_ok()));
    assert_eq!(kms.unwraps.load(Ordering::SeqCst), 3);
    assert!(manager.get_many(&[], 4).await.is_empty());
}
