//! `SecureKeyManager::get_many`: bounded concurrency, single-flight per key, per-key outcomes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_accounting_core::envelope::{aead_open, aead_seal};
use llm_accounting_core::layers::{self, KmsMetrics, LayerOptions};
use llm_accounting_core::{
    ApiKey, BatchMode, DataKey, EncryptionContext, Error, Journal, KeyChange, KeyFilter,
    KeyIdentity, KeyRecord, KeyRepository, KeyState, KeyWrite, KmsProvider, Listed, LoadedCurrent,
    MemoryKeyRepository, Result, SecureKeyManager, StoreKeyRecord, VersionRecord, WrappedKey,
    WriteOptions,
};
use uuid::Uuid;

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

/// The in-memory repository, counting single and batched reads of current versions.
#[derive(Debug, Default)]
struct CountingRepo {
    inner: MemoryKeyRepository,
    single: AtomicUsize,
    batched: AtomicUsize,
    batched_ids: AtomicUsize,
}

#[async_trait]
impl KeyRepository for CountingRepo {
    async fn load_current(
        &self,
        identity: &KeyIdentity,
    ) -> Result<Option<(KeyRecord, VersionRecord)>> {
        self.single.fetch_add(1, Ordering::SeqCst);
        self.inner.load_current(identity).await
    }
    async fn load_current_many(&self, identities: &[KeyIdentity]) -> Result<Vec<LoadedCurrent>> {
        self.batched.fetch_add(1, Ordering::SeqCst);
        self.batched_ids
            .fetch_add(identities.len(), Ordering::SeqCst);
        self.inner.load_current_many(identities).await
    }
    async fn find_key(&self, identity: &KeyIdentity) -> Result<Option<KeyRecord>> {
        self.inner.find_key(identity).await
    }
    async fn create_key(
        &self,
        key: &KeyRecord,
        first: &VersionRecord,
        journal: Option<&Journal>,
    ) -> Result<()> {
        self.inner.create_key(key, first, journal).await
    }
    async fn add_version(
        &self,
        key_id: Uuid,
        expected_current: u32,
        version: &VersionRecord,
        previous_retire_at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<()> {
        self.inner
            .add_version(
                key_id,
                expected_current,
                version,
                previous_retire_at,
                write,
                journal,
            )
            .await
    }
    async fn write_batch(&self, changes: &[KeyChange], journal: &[Journal]) -> Result<()> {
        self.inner.write_batch(changes, journal).await
    }
    async fn list_versions(&self, key_id: Uuid) -> Result<Vec<VersionRecord>> {
        self.inner.list_versions(key_id).await
    }
    async fn retire_due(&self, key_id: Option<Uuid>, now: DateTime<Utc>) -> Result<u64> {
        self.inner.retire_due(key_id, now).await
    }
    async fn versions_to_rewrap(
        &self,
        provider: &str,
        master_key_ref: &str,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<(KeyRecord, VersionRecord)>> {
        self.inner
            .versions_to_rewrap(provider, master_key_ref, after, limit)
            .await
    }
    async fn replace_wrapping(
        &self,
        rewrapped: &VersionRecord,
        old_provider: &str,
        old_ref: &str,
        key: Option<&KeyWrite>,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        self.inner
            .replace_wrapping(rewrapped, old_provider, old_ref, key, journal)
            .await
    }
    async fn set_state(
        &self,
        key_id: Uuid,
        state: KeyState,
        at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        self.inner
            .set_state(key_id, state, at, write, journal)
            .await
    }
    async fn delete_key(&self, key_id: Uuid, journal: Option<&Journal>) -> Result<bool> {
        self.inner.delete_key(key_id, journal).await
    }
    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Listed>> {
        self.inner.list_keys(filter).await
    }
    async fn record_last_used(&self, uses: &[(Uuid, DateTime<Utc>)]) -> Result<()> {
        self.inner.record_last_used(uses).await
    }
    async fn keys_by_id(&self, key_ids: &[Uuid]) -> Result<Vec<KeyRecord>> {
        self.inner.keys_by_id(key_ids).await
    }
    async fn is_empty(&self) -> Result<bool> {
        self.inner.is_empty().await
    }
    async fn store_key(&self, name: &str) -> Result<Option<StoreKeyRecord>> {
        self.inner.store_key(name).await
    }
    async fn insert_store_key(&self, key: &StoreKeyRecord) -> Result<bool> {
        self.inner.insert_store_key(key).await
    }
    async fn replace_store_key_wrapping(
        &self,
        name: &str,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool> {
        self.inner
            .replace_store_key_wrapping(name, rewrapped, old_provider, old_ref)
            .await
    }
}

#[tokio::test(start_paused = true)]
async fn cold_keys_are_read_together_not_one_query_each() {
    let repo = Arc::new(CountingRepo::default());
    let kms = Arc::new(SlowKms::default());
    let manager = SecureKeyManager::new(
        Arc::clone(&kms) as Arc<dyn KmsProvider>,
        Arc::clone(&repo) as Arc<dyn KeyRepository>,
    );
    let items: Vec<_> = (0..30).map(|i| (user(i), ApiKey::new(secret(i)))).collect();
    manager
        .store_many(&items, BatchMode::CreateOnly, &WriteOptions::default())
        .await
        .expect("store_many");
    manager.disable(&user(3)).await.expect("disable");
    manager.clear_cache();
    // Five of them cached.
    for i in 10..15 {
        manager.get(&user(i)).await.expect("get");
    }
    let single = repo.single.load(Ordering::SeqCst);
    let batched = repo.batched.load(Ordering::SeqCst);
    let ids_before = repo.batched_ids.load(Ordering::SeqCst);

    let missing = KeyIdentity::new("never-stored").expect("valid");
    let mut ids: Vec<KeyIdentity> = (0..30).map(user).collect();
    ids.push(missing);
    ids.push(user(20));
    let results = manager.get_many(&ids, 8).await;
    assert_eq!(results.len(), 32);
    for (i, (_, key)) in results.iter().take(30).enumerate() {
        if i == 3 {
            assert!(matches!(key, Err(Error::Disabled { .. })), "{key:?}");
        } else {
            assert_eq!(key.as_ref().expect("loaded").expose_secret(), secret(i));
        }
    }
    assert!(matches!(results[30].1, Err(Error::NotFound { .. })));
    assert_eq!(
        results[31].1.as_ref().expect("twice").expose_secret(),
        secret(20)
    );
    assert_eq!(
        repo.single.load(Ordering::SeqCst),
        single,
        "no key was read on its own"
    );
    assert_eq!(
        repo.batched.load(Ordering::SeqCst),
        batched + 1,
        "one batched read"
    );
    assert_eq!(
        repo.batched_ids.load(Ordering::SeqCst) - ids_before,
        26,
        "the 25 cold keys and the missing one, each once; cached keys not read"
    );
    // 24 readable cold keys unwrapped once each (the disabled one is refused before).
    assert_eq!(kms.unwraps.load(Ordering::SeqCst), 24 + 5);
}
