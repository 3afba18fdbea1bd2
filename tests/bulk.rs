//! `store_many` on SQLite, PostgreSQL and MariaDB: one transaction, all or nothing, sealed and
//! audited key by key, with the audit rows committed in the batch's own transaction.

use std::sync::Arc;

use llm_accounting::{
    ApiKey, AuditFilter, AuditOptions, BatchMode, Error, KeyIdentity, LocalKmsProvider,
    SecureKeyManager, WriteOptions,
};
use llm_accounting_testkit::TestDatabase;

fn key(tag: &str, i: usize) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{tag}-{i:06}-0123456789"))
}

fn ids(service: &str, n: usize) -> Vec<KeyIdentity> {
    (0..n)
        .map(|i| {
            KeyIdentity::from_parts(service, Some(&format!("user{i}")), None).expect("identity")
        })
        .collect()
}

/// A manager on `db` whose audit trail is the key database, written in each change's own
/// transaction.
async fn manager(db: &TestDatabase, dir: &tempfile::TempDir) -> SecureKeyManager {
    let provider =
        LocalKmsProvider::open_or_create(dir.path().join("master.key")).expect("master key");
    let repo = Arc::new(db.repository().await);
    SecureKeyManager::builder(Arc::new(provider), repo.clone())
        .audit_with(
            repo,
            AuditOptions {
                fail_closed: true,
                same_transaction: true,
                ..AuditOptions::default()
            },
        )
        .build()
}

async fn stored_rows(m: &SecureKeyManager) -> usize {
    m.audit_records(&AuditFilter {
        operation: Some("store".into()),
        ..AuditFilter::default()
    })
    .await
    .expect("audit records")
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_many_is_one_audited_transaction_on_every_database() {
    for db in TestDatabase::create_all().await {
        let backend = db.backend();
        let dir = tempfile::tempdir().expect("tempdir");
        let m = manager(&db, &dir).await;
        let first = ids("bulk", 300);
        let items: Vec<_> = first
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), key("a", i)))
            .collect();
        let outcomes = m
            .store_many(&items, BatchMode::CreateOnly, &WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        assert_eq!(outcomes.len(), 300);
        assert!(outcomes.iter().all(|o| o.created && o.version == 1));
        for (i, id) in first.iter().enumerate().step_by(37) {
            assert_eq!(
                m.get(id).await.expect("get").expose_secret(),
                key("a", i).expose_secret()
            );
        }
        assert_eq!(
            stored_rows(&m).await,
            300,
            "{backend:?}: one audit row per key"
        );

        // Create-only: an identity that has a key refuses the whole batch, by name.
        let fresh = KeyIdentity::from_parts("bulk", Some("fresh"), None).expect("identity");
        let clash = vec![
            (fresh.clone(), key("b", 0)),
            (first[5].clone(), key("b", 1)),
        ];
        match m
            .store_many(&clash, BatchMode::CreateOnly, &WriteOptions::default())
            .await
        {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!(field, "identity");
                assert!(reason.contains(&first[5].to_string()), "{reason}");
            }
            other => panic!("{backend:?}: expected a refusal, got {other:?}"),
        }
        assert!(matches!(m.get(&fresh).await, Err(Error::NotFound { .. })));
        assert_eq!(
            m.get(&first[5]).await.expect("get").expose_secret(),
            key("a", 5).expose_secret(),
            "{backend:?}: the old value is intact"
        );

        // Refused before anything is touched: a bad key, a duplicate identity.
        let bad = vec![
            (fresh.clone(), key("c", 0)),
            (first[6].clone(), ApiKey::new(" ".into())),
        ];
        match m
            .store_many(&bad, BatchMode::Upsert, &WriteOptions::default())
            .await
        {
            Err(Error::InvalidInput { reason, .. }) => {
                assert!(reason.contains(&first[6].to_string()), "{reason}");
            }
            other => panic!("{backend:?}: expected a refusal, got {other:?}"),
        }
        let twice = vec![(fresh.clone(), key("c", 1)), (fresh.clone(), key("c", 2))];
        assert!(matches!(
            m.store_many(&twice, BatchMode::Upsert, &WriteOptions::default())
                .await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(m.get(&fresh).await, Err(Error::NotFound { .. })));
        assert_eq!(
            stored_rows(&m).await,
            300,
            "{backend:?}: refusals store nothing"
        );

        // Upsert: existing identities get a new version, new ones are created.
        let upsert = vec![
            (first[5].clone(), key("d", 5)),
            (fresh.clone(), key("d", 0)),
        ];
        let outcomes = m
            .store_many(&upsert, BatchMode::Upsert, &WriteOptions::default())
            .await
            .expect("upsert");
        assert_eq!((outcomes[0].version, outcomes[0].created), (2, false));
        assert_eq!((outcomes[1].version, outcomes[1].created), (1, true));
        assert_eq!(
            m.get(&first[5]).await.expect("get").expose_secret(),
            key("d", 5).expose_secret()
        );
        assert_eq!(
            m.get_previous(&first[5])
                .await
                .expect("previous")
                .expose_secret(),
            key("a", 5).expose_secret()
        );
        assert_eq!(stored_rows(&m).await, 302);
        m.verify_audit().await.expect("the chain verifies");

        // Another manager (a cold cache) reads the batch: it is sealed like single stores.
        let other = manager(&db, &dir).await;
        let got = other.get_many(&first[..50], 8).await;
        for ((id, got), i) in got.into_iter().zip(0..) {
            let want = if i == 5 { key("d", 5) } else { key("a", i) };
            assert_eq!(
                got.expect("get").expose_secret(),
                want.expose_secret(),
                "{id}"
            );
        }
        m.shutdown().await.expect("shutdown");
        other.shutdown().await.expect("shutdown");
    }
}
