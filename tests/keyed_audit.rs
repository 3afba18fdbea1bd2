//! The audit trail of a sealed store cannot be rewritten without the KMS, and a head kept
//! elsewhere catches a trail cut short or replaced: each attack is a SQL edit on SQLite,
//! PostgreSQL and MariaDB, then the refusal.

use std::path::Path;
use std::sync::Arc;

use llm_accounting::{
    ApiKey, AuditFilter, AuditHead, Error, KeyIdentity, LocalKmsProvider, SecureKeyManager,
    record_hash,
};
use llm_accounting_testkit::TestDatabase;
use sea_orm::{ConnectionTrait, Statement, Value};

const KEY: &str = "sk-test-FAKE-keyed-audit-000000000000001";

async fn manager(db: &TestDatabase, master_key: &Path) -> SecureKeyManager {
    let provider = LocalKmsProvider::open_or_create(master_key).expect("master key");
    let repo = Arc::new(db.repository().await);
    SecureKeyManager::builder(Arc::new(provider), repo.clone())
        .audit(repo, false)
        .build()
}

/// Writes a few operations, flushed; returns the trail's head.
async fn some_operations(m: &SecureKeyManager) -> AuditHead {
    let alice = KeyIdentity::from_parts("openai", Some("alice"), None).expect("id");
    m.store(&alice, &ApiKey::new(KEY.into()))
        .await
        .expect("store");
    for _ in 0..3 {
        m.get(&alice).await.expect("get");
    }
    m.disable(&alice).await.expect("disable");
    m.enable(&alice).await.expect("enable");
    m.flush().await.expect("flush");
    m.verify_audit_head(None).await.expect("intact").1
}

#[track_caller]
fn broken<T: std::fmt::Debug>(what: &str, r: llm_accounting::Result<T>) {
    assert!(
        matches!(r, Err(Error::AuditChainBroken { .. })),
        "{what}: expected a broken chain, got {r:?}"
    );
}

#[tokio::test]
async fn a_rewritten_middle_row_is_caught_even_with_every_hash_recomputed() {
    for db in TestDatabase::create_all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = manager(&db, &dir.path().join("mk")).await;
        some_operations(&m).await;
        let records = m
            .audit_records(&AuditFilter::default())
            .await
            .expect("rows");
        assert!(records.len() >= 4, "{}", db.backend());

        // The attacker turns row 2's outcome into a refusal and recomputes the SHA-256 chain
        // from there, as `keys audit --verify` accepted before the chain was keyed.
        let repo = db.repository().await;
        let conn = repo.connection();
        let backend = conn.get_database_backend();
        let mark = |n: usize| {
            if backend == sea_orm::DbBackend::Postgres {
                format!("${n}")
            } else {
                "?".to_owned()
            }
        };
        let mut prev = records[0].hash.clone();
        for r in &records[1..] {
            let mut e = r.event.clone();
            if r.seq == 2 {
                e.outcome = "forbidden".into();
            }
            let hash = record_hash(r.seq, &prev, &e);
            let sql = format!(
                "UPDATE api_key_audit SET outcome = {}, prev_hash = {}, hash = {} WHERE seq = {}",
                mark(1),
                mark(2),
                mark(3),
                mark(4)
            );
            conn.execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [
                    Value::from(e.outcome.clone()),
                    Value::from(prev.clone()),
                    Value::from(hash.clone()),
                    Value::from(i64::try_from(r.seq).expect("seq")),
                ],
            ))
            .await
            .expect("rewrite");
            prev = hash;
        }
        broken(
            &format!("{}: recomputed without the key", db.backend()),
            m.verify_audit().await,
        );
        // A fresh manager (it unwraps the state key from the store) agrees.
        let fresh = manager(&db, &dir.path().join("mk")).await;
        broken(
            &format!("{}: fresh manager", db.backend()),
            fresh.verify_audit().await,
        );
    }
}

#[tokio::test]
async fn a_head_kept_elsewhere_catches_a_cut_or_a_replaced_trail() {
    for db in TestDatabase::create_all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = manager(&db, &dir.path().join("mk")).await;
        let head = some_operations(&m).await;
        assert!(head.seq >= 4, "{}", db.backend());
        let printed: AuditHead = head.to_string().parse().expect("SEQ:MAC parses");
        m.verify_audit_head(Some(&printed))
            .await
            .expect("holds the head");
        // More operations later: the old head is still held.
        some_operations(&m).await;
        m.verify_audit_head(Some(&printed))
            .await
            .expect("an older head");

        let repo = db.repository().await;
        // Cut back to before the head: the rest verifies, the head does not.
        repo.connection()
            .execute_unprepared(&format!(
                "DELETE FROM api_key_audit WHERE seq >= {}",
                head.seq
            ))
            .await
            .expect("truncate");
        m.verify_audit()
            .await
            .expect("what is left is a valid chain");
        broken(
            &format!("{}: cut short", db.backend()),
            m.verify_audit_head(Some(&printed)).await,
        );
        // Replaced as a whole: the trail emptied and new operations written.
        repo.connection()
            .execute_unprepared("DELETE FROM api_key_audit")
            .await
            .expect("empty");
        some_operations(&m).await;
        some_operations(&m).await;
        m.verify_audit().await.expect("a valid new chain");
        broken(
            &format!("{}: replaced", db.backend()),
            m.verify_audit_head(Some(&printed)).await,
        );
    }
}
