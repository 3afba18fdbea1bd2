//! SecureKeyManager over the in-memory repository and an AES-GCM test provider: principals and the audit trail: a bound manager's boundary, and every operation and
//! refusal audited.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use llm_accounting_core::{
    Error, ErrorKind, KeyFilter, KeyIdentity, ManagerOptions, MemoryKeyRepository, Principal,
    SecureKeyManager,
};

mod common;

use common::{TestProvider, fixture, key};

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
