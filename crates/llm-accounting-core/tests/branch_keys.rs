//! The branch-key layer over the in-memory repository: KMS calls counted through the metrics
//! layer, tampered branch rows, rotation and migration by rewrap.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use llm_accounting_core::branch::{
    BranchKeyLayer, BranchKeyProvider, BranchKeyRecord, BranchKeyStore, BranchScope, Hierarchy,
    ScopeKind,
};
use llm_accounting_core::envelope::{aead_open, aead_seal};
use llm_accounting_core::layers::{self, KmsMetrics, LayerOptions};
use llm_accounting_core::{
    ApiKey, DataKey, EncryptionContext, Envelope, Error, KeyIdentity, KeyRepository, KmsProvider,
    ManagerOptions, MemoryKeyRepository, Result, RewrapOptions, SecureKeyManager, WrappedKey,
};

/// AES-256-GCM under a master key per version (`mk-1`, `mk-2`, ...), the context as AAD; new
/// keys under the current version, which a test can move on.
#[derive(Debug)]
struct TestKms {
    current: AtomicU32,
    /// Versions that refuse to unwrap (a disabled KMS key).
    disabled: Mutex<Vec<u32>>,
}

impl TestKms {
    fn new() -> Arc<Self> {
        Arc::new(TestKms {
            current: AtomicU32::new(1),
            disabled: Mutex::new(Vec::new()),
        })
    }
    fn key(version: u32) -> [u8; 32] {
        let mut k = [0x5a; 32];
        k[..4].copy_from_slice(&version.to_be_bytes());
        k
    }
}

#[async_trait]
impl KmsProvider for TestKms {
    fn name(&self) -> &str {
        "test"
    }
    fn master_key_ref(&self) -> String {
        format!("mk-{}", self.current.load(Ordering::SeqCst))
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        let v = self.current.load(Ordering::SeqCst);
        let (nonce, ct) = aead_seal(
            &Self::key(v),
            &context.canonical_bytes(),
            key.expose_secret(),
        )?;
        Ok(WrappedKey::new(
            "test",
            format!("mk-{v}"),
            [nonce.as_slice(), &ct].concat(),
        ))
    }
    async fn unwrap_key(&self, w: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        w.check_made_by("test", 13)?;
        let v: u32 = w
            .master_key_ref
            .strip_prefix("mk-")
            .and_then(|v| v.parse().ok())
            .ok_or_else(Error::integrity)?;
        if self.disabled.lock().expect("lock").contains(&v) {
            return Err(Error::AccessDenied {
                provider: "test".into(),
                operation: "unwrap",
                reason: "the master key is disabled".into(),
                source: None,
            });
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&w.ciphertext[..12]);
        DataKey::from_zeroizing(aead_open(
            &Self::key(v),
            &nonce,
            &context.canonical_bytes(),
            &w.ciphertext[12..],
        )?)
    }
}

struct Setup {
    kms: Arc<TestKms>,
    repo: Arc<MemoryKeyRepository>,
}

impl Setup {
    fn new() -> Self {
        Setup {
            kms: TestKms::new(),
            repo: Arc::new(MemoryKeyRepository::new()),
        }
    }

    /// A fresh process: the metered KMS stack, a branch layer and a manager with empty caches.
    fn manager(
        &self,
        hierarchy: Hierarchy,
    ) -> (SecureKeyManager, Arc<KmsMetrics>, Arc<BranchKeyProvider>) {
        let metrics = Arc::new(KmsMetrics::new());
        let branch = layers::stack_with_branch_keys(
            Arc::clone(&self.kms) as Arc<dyn KmsProvider>,
            &LayerOptions::default(),
            Arc::clone(&metrics),
            &BranchKeyLayer::new(
                Arc::clone(&self.repo) as Arc<dyn BranchKeyStore>,
                hierarchy,
                Duration::from_secs(600),
            ),
        );
        let manager = SecureKeyManager::builder(
            Arc::clone(&branch) as Arc<dyn KmsProvider>,
            Arc::clone(&self.repo) as Arc<dyn KeyRepository>,
        )
        .branch_keys(Arc::clone(&branch))
        .options(ManagerOptions {
            require_sealed: true,
            ..ManagerOptions::default()
        })
        .build();
        (manager, metrics, branch)
    }

    async fn branch_rows(&self) -> Vec<BranchKeyRecord> {
        self.repo.branch_keys(None, 1000).await.expect("rows")
    }

    async fn envelope(&self, identity: &KeyIdentity) -> Envelope {
        let key = self
            .repo
            .find_key(identity)
            .await
            .expect("find")
            .expect("exists");
        let v = self.repo.versions_of(key.id).pop().expect("version");
        Envelope::from_bytes(&v.envelope).expect("envelope")
    }
}

fn ident(service: &str, user: usize) -> KeyIdentity {
    KeyIdentity::from_parts(service, Some(&format!("user-{user:03}")), None).expect("valid")
}

fn secret(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{i:06}-0000000000"))
}

fn is_integrity(r: &Result<ApiKey>) -> bool {
    matches!(r, Err(Error::Integrity { .. }))
}

#[tokio::test]
async fn one_service_costs_a_handful_of_kms_calls_not_one_per_key() {
    let s = Setup::new();
    let (writer, metrics, _) = s.manager(Hierarchy::Service);
    for i in 0..200 {
        writer
            .store(&ident("openai", i), &secret(i))
            .await
            .expect("store");
    }
    // The state key (one generate) and the branch key (one wrap).
    assert_eq!(metrics.snapshot().calls(), 2, "{:?}", metrics.snapshot());
    // Storing with a warm branch key makes no KMS call at all.
    let before = metrics.snapshot();
    for i in 200..210 {
        writer
            .store(&ident("openai", i), &secret(i))
            .await
            .expect("store");
    }
    assert_eq!(metrics.snapshot().since(&before).calls(), 0);

    // A fresh manager reads every key cold: the state key and the branch key, once each.
    let (reader, metrics, branch) = s.manager(Hierarchy::Service);
    for i in 0..210 {
        let got = reader.get(&ident("openai", i)).await.expect("get");
        assert_eq!(got.expose_secret(), secret(i).expose_secret());
    }
    let m = metrics.snapshot();
    assert_eq!((m.unwraps, m.calls()), (2, 2), "{m:?}");
    assert_eq!(branch.cached_branch_keys(), 1);
    // Evicting the branch costs one KMS call on the next cold read.
    branch.evict_all();
    reader.clear_cache();
    reader.get(&ident("openai", 3)).await.expect("get");
    assert_eq!(metrics.snapshot().since(&m).calls(), 1);
    assert_eq!(s.branch_rows().await.len(), 1);
}

#[tokio::test]
async fn evicting_one_branch_costs_one_kms_call_for_that_branch_only() {
    let s = Setup::new();
    let (m, _, _) = s.manager(Hierarchy::Service);
    m.store(&ident("a", 1), &secret(1)).await.expect("store");
    m.store(&ident("b", 1), &secret(2)).await.expect("store");
    let (reader, metrics, branch) = s.manager(Hierarchy::Service);
    reader.get(&ident("a", 1)).await.expect("get");
    reader.get(&ident("b", 1)).await.expect("get");
    assert_eq!(branch.cached_branch_keys(), 2);
    let rows = s.branch_rows().await;
    let a = rows
        .iter()
        .find(|r| r.scope.value() == Some("a"))
        .expect("a");
    branch.evict(a.branch_id);
    assert_eq!(branch.cached_branch_keys(), 1);
    reader.clear_cache();
    let before = metrics.snapshot();
    reader.get(&ident("b", 1)).await.expect("get");
    assert_eq!(metrics.snapshot().since(&before).calls(), 0);
    reader.get(&ident("a", 1)).await.expect("get");
    assert_eq!(metrics.snapshot().since(&before).calls(), 1);
    // A store into the evicted scope finds its branch again (no new branch).
    reader
        .store(&ident("a", 2), &secret(3))
        .await
        .expect("store");
    assert_eq!(s.branch_rows().await.len(), 2);
}

#[tokio::test]
async fn with_the_hierarchy_off_every_key_is_one_kms_call() {
    let s = Setup::new();
    let (writer, metrics, _) = s.manager(Hierarchy::Off);
    for i in 0..50 {
        writer
            .store(&ident("openai", i), &secret(i))
            .await
            .expect("store");
    }
    assert_eq!(metrics.snapshot().calls(), 51);
    let (reader, metrics, _) = s.manager(Hierarchy::Off);
    for i in 0..50 {
        reader.get(&ident("openai", i)).await.expect("get");
    }
    assert_eq!(metrics.snapshot().unwraps, 51);
    assert!(s.branch_rows().await.is_empty());
}

#[tokio::test]
async fn concurrent_cold_reads_of_one_branch_make_one_kms_call() {
    let s = Setup::new();
    let (writer, _, _) = s.manager(Hierarchy::Store);
    let ids: Vec<_> = (0..40)
        .map(|i| ident(&format!("svc-{}", i % 4), i))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        writer.store(id, &secret(i)).await.expect("store");
    }
    let (reader, metrics, _) = s.manager(Hierarchy::Store);
    let results = reader.get_many(&ids, 16).await;
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    // The state key and the one store-wide branch.
    assert_eq!(metrics.snapshot().unwraps, 2);
}

#[tokio::test]
async fn each_scope_gets_its_own_branch_named_in_its_context() {
    for (hierarchy, kind, branches) in [
        (Hierarchy::Store, ScopeKind::Store, 1),
        (Hierarchy::Service, ScopeKind::Service, 2),
        (Hierarchy::Project, ScopeKind::Project, 2),
        (Hierarchy::User, ScopeKind::User, 3),
    ] {
        let s = Setup::new();
        let (m, _, _) = s.manager(hierarchy);
        let ids = [
            KeyIdentity::from_parts("a", Some("u1"), Some("p1")).expect("id"),
            KeyIdentity::from_parts("b", Some("u2"), Some("p1")).expect("id"),
            KeyIdentity::from_parts("a", None, None).expect("id"),
        ];
        for (i, id) in ids.iter().enumerate() {
            m.store(id, &secret(i)).await.expect("store");
        }
        let rows = s.branch_rows().await;
        assert_eq!(rows.len(), branches, "{hierarchy}");
        assert!(rows.iter().all(|r| r.scope.kind() == kind));
        // The context the KMS saw names the branch and its scope, as IAM conditions need.
        let row = &rows[0];
        let map = row.context().to_map();
        assert_eq!(map["purpose"], "branch-key");
        assert_eq!(map["scope"], kind.as_str());
        assert_eq!(
            map.get(kind.as_str()).map(String::as_str),
            row.scope.value()
        );
        let env = s.envelope(&ids[0]).await;
        assert_eq!(env.wrapped.provider, "test+branch");
        assert!(env.wrapped.master_key_ref.starts_with("branch/"));
    }
}

#[tokio::test]
async fn tampered_branch_rows_and_moved_data_keys_are_integrity_errors() {
    let s = Setup::new();
    let (m, _, _) = s.manager(Hierarchy::Service);
    let (a, b) = (ident("svc-a", 1), ident("svc-b", 1));
    m.store(&a, &secret(1)).await.expect("store");
    m.store(&b, &secret(2)).await.expect("store");
    let rows = s.branch_rows().await;
    let row_of = |svc: &str| {
        rows.iter()
            .find(|r| r.scope.value() == Some(svc))
            .cloned()
            .expect("row")
    };
    let (ra, rb) = (row_of("svc-a"), row_of("svc-b"));
    let fresh_get = |id: KeyIdentity| {
        let (reader, _, _) = s.manager(Hierarchy::Service);
        async move { reader.get(&id).await }
    };
    assert!(fresh_get(a.clone()).await.is_ok());

    // Branch a's row holds branch b's wrapped key and commitment (a swapped row).
    s.repo.overwrite_branch_key(BranchKeyRecord {
        wrapped: rb.wrapped.clone(),
        commitment: rb.commitment.clone(),
        ..ra.clone()
    });
    assert!(is_integrity(&fresh_get(a.clone()).await));
    // Branch a's row moved to another scope.
    s.repo.overwrite_branch_key(BranchKeyRecord {
        scope: BranchScope::new(ScopeKind::Service, Some("svc-b".into())).expect("scope"),
        ..ra.clone()
    });
    assert!(is_integrity(&fresh_get(a.clone()).await));
    // An edited commitment.
    let mut edited = ra.clone();
    edited.commitment[0] ^= 1;
    s.repo.overwrite_branch_key(edited);
    assert!(is_integrity(&fresh_get(a.clone()).await));
    // A deleted branch row: its records cannot be opened.
    assert!(s.repo.remove_branch_key(ra.branch_id, ra.version));
    assert!(is_integrity(&fresh_get(a.clone()).await));
    s.repo.overwrite_branch_key(ra.clone());
    assert!(fresh_get(a.clone()).await.is_ok());

    // A data key moved to another branch: the envelope names branch b.
    let key = s.repo.find_key(&a).await.expect("find").expect("key");
    let v = s.repo.versions_of(key.id).pop().expect("version");
    let mut env = Envelope::from_bytes(&v.envelope).expect("envelope");
    env.wrapped.master_key_ref = format!("branch/{}/v1", rb.branch_id.hyphenated());
    assert!(
        s.repo
            .overwrite_envelope(key.id, 1, env.to_bytes().expect("encode"))
    );
    let (reader, _, _) = s.manager(Hierarchy::Service);
    assert!(matches!(reader.get(&a).await, Err(Error::Integrity { .. })));
}

#[tokio::test]
async fn a_disabled_kms_key_under_a_branch_is_a_clear_error() {
    let s = Setup::new();
    let (m, _, _) = s.manager(Hierarchy::Service);
    m.store(&ident("openai", 1), &secret(1))
        .await
        .expect("store");
    s.kms.disabled.lock().expect("lock").push(1);
    let (reader, _, _) = s.manager(Hierarchy::Service);
    let err = reader.get(&ident("openai", 1)).await.expect_err("disabled");
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
}

#[tokio::test]
async fn rewrap_moves_records_between_direct_and_branch_wrapping() {
    let s = Setup::new();
    let (direct, _, _) = s.manager(Hierarchy::Off);
    for i in 0..20 {
        direct
            .store(&ident("openai", i), &secret(i))
            .await
            .expect("store");
    }
    // Direct (format-1) envelopes keep reading through a branch layer.
    let (m, metrics, _) = s.manager(Hierarchy::Service);
    m.get(&ident("openai", 0)).await.expect("direct read");
    let check = RewrapOptions {
        check_only: true,
        ..RewrapOptions::default()
    };
    assert_eq!(m.rewrap(&check, |_| {}).await.expect("check").done, 20);
    let before = metrics.snapshot();
    let r = m
        .rewrap(&RewrapOptions::default(), |_| {})
        .await
        .expect("rewrap");
    assert_eq!((r.done, r.failed.len()), (20, 0));
    // One unwrap per direct key (the KMS wrapped them) and one wrap for the new branch.
    assert_eq!(metrics.snapshot().since(&before).calls(), 21);
    assert_eq!(
        s.envelope(&ident("openai", 7)).await.wrapped.provider,
        "test+branch"
    );
    assert_eq!(m.rewrap(&check, |_| {}).await.expect("check").done, 0);
    // Sealed state verifies after the rewrap: a fresh, strict manager reads everything.
    let (fresh, _, _) = s.manager(Hierarchy::Service);
    for i in 0..20 {
        let got = fresh.get(&ident("openai", i)).await.expect("get");
        assert_eq!(got.expose_secret(), secret(i).expose_secret());
    }

    // And back: with the hierarchy off, rewrap moves them under the KMS directly.
    let (off, _, _) = s.manager(Hierarchy::Off);
    off.get(&ident("openai", 1))
        .await
        .expect("branch read with the hierarchy off");
    let r = off
        .rewrap(&RewrapOptions::default(), |_| {})
        .await
        .expect("rewrap");
    assert_eq!(r.done, 20);
    assert_eq!(
        s.envelope(&ident("openai", 7)).await.wrapped.provider,
        "test"
    );
    let (fresh, _, _) = s.manager(Hierarchy::Off);
    for i in 0..20 {
        fresh.get(&ident("openai", i)).await.expect("get");
    }
}

#[tokio::test]
async fn master_key_rotation_rewraps_branch_keys_only() {
    let s = Setup::new();
    let (m, _, _) = s.manager(Hierarchy::Service);
    for i in 0..30 {
        m.store(&ident(&format!("svc-{}", i % 3), i), &secret(i))
            .await
            .expect("store");
    }
    s.kms.current.store(2, Ordering::SeqCst);
    let (m, metrics, _) = s.manager(Hierarchy::Service);
    let r = m
        .rewrap(&RewrapOptions::default(), |_| {})
        .await
        .expect("rewrap");
    // Three branches and the state key moved; no record touched.
    assert_eq!(
        (r.done, r.branch_keys.rewrapped, r.state_key_moved),
        (0, 3, true)
    );
    // An unwrap and a wrap per branch key and for the state key: O(branches), not O(records).
    assert_eq!(metrics.snapshot().calls(), 8, "{:?}", metrics.snapshot());
    assert!(
        s.branch_rows()
            .await
            .iter()
            .all(|r| r.wrapped.master_key_ref == "mk-2")
    );
    // The old master key can go: everything reads under the new one.
    s.kms.disabled.lock().expect("lock").push(1);
    let (fresh, metrics, _) = s.manager(Hierarchy::Service);
    for i in 0..30 {
        fresh
            .get(&ident(&format!("svc-{}", i % 3), i))
            .await
            .expect("get");
    }
    assert_eq!(metrics.snapshot().calls(), 4);
}

#[tokio::test]
async fn rotating_branches_makes_new_versions_and_moves_records_onto_them() {
    let s = Setup::new();
    let (m, _, _) = s.manager(Hierarchy::Service);
    for i in 0..10 {
        m.store(&ident(&format!("svc-{}", i % 2), i), &secret(i))
            .await
            .expect("store");
    }
    let old = s.envelope(&ident("svc-0", 0)).await.wrapped.master_key_ref;
    let rotate = RewrapOptions {
        rotate_branches: true,
        ..RewrapOptions::default()
    };
    let r = m.rewrap(&rotate, |_| {}).await.expect("rotate");
    assert_eq!((r.branch_keys.rotated, r.done), (2, 10));
    let new = s.envelope(&ident("svc-0", 0)).await.wrapped.master_key_ref;
    assert_ne!(old, new);
    assert!(new.ends_with("/v2"), "{new}");
    assert_eq!(s.branch_rows().await.len(), 4, "old versions are kept");
    let (fresh, _, _) = s.manager(Hierarchy::Service);
    for i in 0..10 {
        fresh
            .get(&ident(&format!("svc-{}", i % 2), i))
            .await
            .expect("get");
    }
    // New keys go under the new version.
    fresh
        .store(&ident("svc-1", 99), &secret(99))
        .await
        .expect("store");
    assert!(
        s.envelope(&ident("svc-1", 99))
            .await
            .wrapped
            .master_key_ref
            .ends_with("/v2")
    );
    let check = RewrapOptions {
        check_only: true,
        ..RewrapOptions::default()
    };
    assert_eq!(fresh.rewrap(&check, |_| {}).await.expect("check").done, 0);
}

#[cfg(feature = "conformance")]
#[tokio::test]
async fn the_provider_conformance_suite_passes_over_the_branch_layer() {
    llm_accounting_core::conformance::branch::run(TestKms::new()).await;
    // With the hierarchy off, the layer is the inner provider.
    let s = Setup::new();
    let (_, _, branch) = s.manager(Hierarchy::Off);
    llm_accounting_core::conformance::provider::run(branch.as_ref()).await;
    assert!(s.branch_rows().await.is_empty());
}
