//! SecureKeyManager behaviour over the in-memory repository and a real AES-GCM test provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use llm_accounting_core::envelope::{aead_open, aead_seal};
use llm_accounting_core::{
    ApiKey, CacheOptions, DataKey, EncryptionContext, Envelope, Error, ErrorKind, KeyFilter,
    KeyIdentity, KeyRepository, KmsProvider, ManagerOptions, MemoryKeyRepository, Principal,
    Result, SecureKeyManager, VersionState, WrappedKey,
};

/// Wraps with AES-256-GCM under a fixed key, counting calls; can be told to fail.
#[derive(Debug)]
struct TestProvider {
    name: &'static str,
    key: [u8; 32],
    wraps: AtomicUsize,
    unwraps: AtomicUsize,
    fail: AtomicBool,
}

impl TestProvider {
    fn new(name: &'static str, seed: u8) -> Arc<Self> {
        Arc::new(TestProvider {
            name,
            key: [seed; 32],
            wraps: AtomicUsize::new(0),
            unwraps: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        })
    }
    fn unavailable(&self, operation: &'static str) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::ProviderUnavailable {
                provider: self.name.into(),
                operation,
                retryable: true,
                source: None,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl KmsProvider for TestProvider {
    fn name(&self) -> &str {
        self.name
    }
    fn master_key_ref(&self) -> String {
        "test-mk".into()
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        self.unavailable("wrap")?;
        self.wraps.fetch_add(1, Ordering::SeqCst);
        let (nonce, ct) = aead_seal(&self.key, &context.canonical_bytes(), key.expose_secret())?;
        Ok(WrappedKey {
            provider: self.name.into(),
            master_key_ref: self.master_key_ref(),
            ciphertext: [nonce.as_slice(), &ct].concat(),
        })
    }
    async fn unwrap_key(&self, w: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        self.unavailable("unwrap")?;
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        // Slow enough that concurrent callers overlap.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if w.ciphertext.len() < 12 {
            return Err(Error::integrity());
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&w.ciphertext[..12]);
        DataKey::from_zeroizing(aead_open(
            &self.key,
            &nonce,
            &context.canonical_bytes(),
            &w.ciphertext[12..],
        )?)
    }
}

fn id(service: &str, user: Option<&str>) -> KeyIdentity {
    KeyIdentity::from_parts(service, user, None).expect("valid identity")
}

fn key(s: &str) -> ApiKey {
    ApiKey::new(s.to_owned())
}

struct Fixture {
    provider: Arc<TestProvider>,
    repo: Arc<MemoryKeyRepository>,
    manager: SecureKeyManager,
}

fn fixture(options: ManagerOptions) -> Fixture {
    let provider = TestProvider::new("test", 7);
    let repo = Arc::new(MemoryKeyRepository::new());
    let manager = SecureKeyManager::builder(provider.clone(), repo.clone())
        .options(options)
        .build();
    Fixture {
        provider,
        repo,
        manager,
    }
}

#[test]
fn repository_conformance_in_memory() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(llm_accounting_core::conformance::repository::run(
        &MemoryKeyRepository::new(),
    ));
}

#[tokio::test]
async fn test_provider_conformance() {
    llm_accounting_core::conformance::provider::run(TestProvider::new("test", 1).as_ref()).await;
}

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

#[tokio::test]
async fn kms_outage_on_read_is_unavailable_not_missing() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", None);
    f.manager
        .store(&a, &key("sk-test-FAKE-outage-000000"))
        .await
        .expect("store");
    f.provider.fail.store(true, Ordering::SeqCst);
    let err = f.manager.get(&a).await.expect_err("down");
    assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
    f.provider.fail.store(false, Ordering::SeqCst);
    assert!(f.manager.get(&a).await.is_ok(), "errors are not cached");
}

#[tokio::test]
async fn every_changed_byte_of_an_envelope_fails_with_integrity() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", Some("alice"));
    let out = f
        .manager
        .store(&a, &key("sk-test-FAKE-tamper-00000"))
        .await
        .expect("store");
    let original = f.repo.versions_of(out.key_id)[0].envelope.clone();
    for i in 0..original.len() {
        let mut bad = original.clone();
        bad[i] ^= 0x20;
        f.repo.overwrite_envelope(out.key_id, 1, bad);
        f.manager.clear_cache();
        match f.manager.get(&a).await {
            Err(Error::Integrity { identity: Some(_) }) => {}
            other => panic!("byte {i}: expected integrity error, got {other:?}"),
        }
    }
    f.repo.overwrite_envelope(out.key_id, 1, original);
    assert!(f.manager.get(&a).await.is_ok());
}

#[tokio::test]
async fn ciphertexts_moved_between_identities_or_versions_fail() {
    let f = fixture(ManagerOptions::default());
    let alice = id("openai", Some("alice"));
    let bob = id("openai", Some("bob"));
    let other_service = id("anthropic", Some("alice"));
    let a = f
        .manager
        .store(&alice, &key("sk-test-FAKE-alice-0000000"))
        .await
        .expect("store");
    let b = f
        .manager
        .store(&bob, &key("sk-test-FAKE-bob-000000000"))
        .await
        .expect("store");
    let c = f
        .manager
        .store(&other_service, &key("sk-test-FAKE-anth-00000000"))
        .await
        .expect("store");
    let a2 = f
        .manager
        .store(&alice, &key("sk-test-FAKE-alice-v2-00000"))
        .await
        .expect("store");
    let env = |k, v| {
        f.repo
            .versions_of(k)
            .into_iter()
            .find(|x| x.version == v)
            .expect("version")
            .envelope
    };

    // Bob's ciphertext in Alice's row (another user), another service's, and Alice's own
    // version 1 in place of version 2.
    for (what, moved) in [
        ("another user", env(b.key_id, 1)),
        ("another service", env(c.key_id, 1)),
        ("another version", env(a.key_id, 1)),
    ] {
        f.repo.overwrite_envelope(a2.key_id, 2, moved);
        f.manager.clear_cache();
        assert!(
            matches!(f.manager.get(&alice).await, Err(Error::Integrity { .. })),
            "{what}: moved ciphertext must not decrypt"
        );
    }
    // Re-labelling the version inside the envelope does not help either.
    let mut relabelled = Envelope::from_bytes(&env(a.key_id, 1)).expect("decode");
    relabelled.key_version = 2;
    f.repo
        .overwrite_envelope(a2.key_id, 2, relabelled.to_bytes().expect("encode"));
    f.manager.clear_cache();
    assert!(matches!(
        f.manager.get(&alice).await,
        Err(Error::Integrity { .. })
    ));
}

#[tokio::test]
async fn envelope_from_an_unconfigured_provider_is_a_clear_error() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", None);
    f.manager
        .store(&a, &key("sk-test-FAKE-migrate-00000"))
        .await
        .expect("store");
    // A second manager on the same repository with another provider cannot read it...
    let other = SecureKeyManager::new(TestProvider::new("other", 9), f.repo.clone());
    assert!(
        matches!(other.get(&a).await, Err(Error::ProviderNotConfigured { provider }) if provider == "test")
    );
    // ...unless the old provider is configured for decryption.
    let both = SecureKeyManager::builder(TestProvider::new("other", 9), f.repo.clone())
        .decrypt_provider(f.provider.clone())
        .build();
    assert_eq!(
        both.get(&a).await.expect("get").expose_secret(),
        "sk-test-FAKE-migrate-00000"
    );
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

#[tokio::test]
async fn debug_output_never_shows_secrets() {
    let f = fixture(ManagerOptions::default());
    let a = id("openai", None);
    let secret = "sk-test-FAKE-debug-canary-0000";
    f.manager.store(&a, &key(secret)).await.expect("store");
    let k = f.manager.get(&a).await.expect("get");
    let versions = f
        .repo
        .versions_of(f.repo.find_key(&a).await.expect("f").expect("e").id);
    for text in [
        format!("{k:?}"),
        format!("{:?}", f.manager),
        format!("{versions:?}"),
        format!("{:?}", DataKey::generate().expect("rng")),
    ] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("canary"), "{text}");
    }
}

#[tokio::test]
async fn a_bound_manager_reads_its_own_and_shared_keys_only() {
    let f = fixture(ManagerOptions::default());
    let at =
        |u: Option<&str>, p: Option<&str>| KeyIdentity::from_parts("openai", u, p).expect("id");
    let own = at(Some("alice"), Some("search"));
    let project_shared = at(None, Some("search"));
    let global = at(None, None);
    let bobs = at(Some("bob"), Some("search"));
    let other_project = at(Some("alice"), Some("ads"));
    for (i, identity) in [&own, &project_shared, &global, &bobs, &other_project]
        .into_iter()
        .enumerate()
    {
        f.manager
            .store(identity, &key(&format!("sk-test-FAKE-scope-{i}-000000")))
            .await
            .expect("an unbound manager stores anything");
    }
    f.manager.clear_cache();
    let alice = f
        .manager
        .bound_to(Principal::new(Some("alice"), Some("search")).expect("principal"));
    assert_eq!(alice.principal().and_then(Principal::user), Some("alice"));
    for identity in [&own, &project_shared, &global] {
        alice.get(identity).await.expect("own or shared key");
    }
    let unwraps = f.provider.unwraps.load(Ordering::SeqCst);
    for identity in [&bobs, &other_project] {
        match alice.get(identity).await {
            Err(e @ Error::Forbidden { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Forbidden);
                assert!(e.to_string().contains("user=alice"), "{e}");
            }
            other => panic!("expected Forbidden for {identity}, got {other:?}"),
        }
        assert!(matches!(
            alice.get_previous(identity).await,
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            alice.versions(identity).await,
            Err(Error::Forbidden { .. })
        ));
    }
    assert_eq!(
        f.provider.unwraps.load(Ordering::SeqCst),
        unwraps,
        "a refused read never reaches the KMS"
    );
    // Cached by an unbound read, still refused to the bound handle.
    f.manager.get(&bobs).await.expect("admin read");
    assert!(matches!(
        alice.get(&bobs).await,
        Err(Error::Forbidden { .. })
    ));

    let listed: Vec<_> = alice
        .list(&KeyFilter::default())
        .await
        .expect("list")
        .keys
        .into_iter()
        .map(|k| k.identity)
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(!listed.contains(&bobs) && !listed.contains(&other_project));

    // Writes: its own scope only.
    alice
        .rotate(&own, &key("sk-test-FAKE-scope-rotated-000"))
        .await
        .expect("own key");
    for identity in [&project_shared, &global, &bobs] {
        assert!(matches!(
            alice
                .rotate(identity, &key("sk-test-FAKE-nope-0000000"))
                .await,
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            alice.disable(identity).await,
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            alice.delete(identity).await,
            Err(Error::Forbidden { .. })
        ));
    }
    assert!(matches!(
        alice
            .rewrap(&llm_accounting_core::RewrapOptions::default(), |_| {})
            .await,
        Err(Error::Forbidden { .. })
    ));
    f.manager.get(&global).await.expect("nothing was changed");
}

#[tokio::test]
async fn every_operation_and_every_refusal_is_audited() {
    use llm_accounting_core::{AuditFilter, AuditLog, MemoryAuditLog};
    let provider = TestProvider::new("test", 3);
    let log = Arc::new(MemoryAuditLog::new());
    let manager = SecureKeyManager::builder(provider, Arc::new(MemoryKeyRepository::new()))
        .audit(log.clone(), true)
        .build();
    let at = |u: &str| KeyIdentity::from_parts("openai", Some(u), None).expect("id");
    manager
        .store(&at("alice"), &key("sk-test-FAKE-audit-alice-000"))
        .await
        .expect("store");
    manager
        .store(&at("bob"), &key("sk-test-FAKE-audit-bob-00000"))
        .await
        .expect("store");
    manager.get(&at("alice")).await.expect("miss");
    manager.get(&at("alice")).await.expect("hit");
    let alice = manager.bound_to(Principal::new(Some("alice"), None).expect("principal"));
    assert!(matches!(
        alice.get(&at("bob")).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(manager.get(&at("carol")).await.is_err());
    let rows = log.records(&AuditFilter::default()).await.expect("records");
    // (operation, user, principal, outcome, detail)
    type Row<'a> = (&'a str, Option<&'a str>, &'a str, &'a str, Option<&'a str>);
    let summary: Vec<Row<'_>> = rows
        .iter()
        .map(|r| {
            (
                r.event.operation.as_str(),
                r.event.identity.as_ref().and_then(KeyIdentity::user),
                r.event.principal.as_str(),
                r.event.outcome.as_str(),
                r.event.detail.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            // The log is not the key store's database: an intent row before each change.
            ("store", Some("alice"), "-", "intent", None),
            ("store", Some("alice"), "-", "ok", Some("version 1")),
            ("store", Some("bob"), "-", "intent", None),
            ("store", Some("bob"), "-", "ok", Some("version 1")),
            ("get", Some("alice"), "-", "ok", Some("cache miss")),
            ("get", Some("alice"), "-", "ok", Some("cache hit")),
            (
                "get",
                Some("bob"),
                "user=alice project=-",
                "forbidden",
                None
            ),
            ("get", Some("carol"), "-", "not_found", None),
        ]
    );
    // Keyed (the store is sealed from its first write): the manager verifies it, plain
    // SHA-256 cannot.
    assert!(llm_accounting_core::audit::verify_chain(&rows).is_err());
    let text = format!("{rows:?}");
    assert!(!text.contains("sk-test-FAKE"), "no secret in audit rows");
    assert_eq!(manager.verify_audit().await.expect("verify"), 8);

    // A bound handle reaches neither around its boundary nor into everyone's trail.
    assert!(alice.provider().is_none() && alice.repository().is_none());
    assert!(manager.provider().is_some() && manager.repository().is_some());
    assert!(matches!(
        alice.audit_records(&AuditFilter::default()).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        alice.verify_audit().await,
        Err(Error::Forbidden { .. })
    ));
}
