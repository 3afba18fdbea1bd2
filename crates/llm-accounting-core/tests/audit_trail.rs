//! The manager's audit trail under load, over the in-memory repository and log: cache hits
//! aggregated per identity and principal per interval, one row per hit when asked, every
//! operation written before answering when fail-closed, and a bounded queue that leaves a
//! counted gap (never a silent one) when it overflows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use llm_accounting_core::audit::{
    AuditChain, AuditEvent, AuditFilter, AuditLog, AuditRecord, DROPPED_OPERATION, verify_chain,
};
use llm_accounting_core::envelope::{aead_open, aead_seal};
use llm_accounting_core::{
    ApiKey, AuditOptions, DataKey, EncryptionContext, Error, KeyIdentity, KmsProvider,
    MemoryAuditLog, MemoryKeyRepository, Principal, Result, SecureKeyManager, WrappedKey,
};

const MK: [u8; 32] = [7; 32];

/// AES-GCM wrapping under a fixed key, at once.
#[derive(Debug)]
struct Kms;

#[async_trait]
impl KmsProvider for Kms {
    fn name(&self) -> &str {
        "test"
    }
    fn master_key_ref(&self) -> String {
        "test-mk".into()
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        let (nonce, ct) = aead_seal(&MK, &context.canonical_bytes(), key.expose_secret())?;
        Ok(WrappedKey {
            provider: "test".into(),
            master_key_ref: "test-mk".into(),
            ciphertext: [nonce.as_slice(), &ct].concat(),
        })
    }
    async fn unwrap_key(&self, w: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
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

/// An in-memory log that can be made unavailable.
#[derive(Debug, Default)]
struct FlakyLog {
    inner: MemoryAuditLog,
    down: AtomicBool,
}

#[async_trait]
impl AuditLog for FlakyLog {
    async fn append(&self, events: &[AuditEvent], chain: &AuditChain) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::DatabaseUnavailable {
                operation: "append audit rows",
                source: None,
            });
        }
        self.inner.append(events, chain).await
    }
    async fn records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.inner.records(filter).await
    }
}

impl FlakyLog {
    /// What is written so far (without flushing anything).
    async fn rows(&self) -> Vec<AuditRecord> {
        self.inner
            .records(&AuditFilter::default())
            .await
            .expect("records")
    }
}

fn user(u: &str) -> KeyIdentity {
    KeyIdentity::from_parts("openai", Some(u), None).expect("identity")
}

fn key(u: &str) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{u}-0123456789abcdef"))
}

/// A manager over a fresh repository, audited into `log` as `options` say, with `users`'
/// keys stored.
async fn manager(log: &Arc<FlakyLog>, options: AuditOptions, users: &[&str]) -> SecureKeyManager {
    let m = SecureKeyManager::builder(Arc::new(Kms), Arc::new(MemoryKeyRepository::new()))
        .audit_with(Arc::clone(log) as Arc<dyn AuditLog>, options)
        .build();
    for u in users {
        m.store(&user(u), &key(u)).await.expect("store");
    }
    m
}

/// Options that never close aggregates on their own during a test.
fn hour() -> AuditOptions {
    AuditOptions {
        aggregate_interval: Duration::from_secs(3600),
        ..AuditOptions::default()
    }
}

/// (user, principal, count, has a first time) of the cache-hit rows.
fn hit_rows(rows: &[AuditRecord]) -> Vec<(String, String, u64, bool)> {
    rows.iter()
        .filter(|r| r.event.detail.as_deref() == Some("cache hit"))
        .map(|r| {
            let e = &r.event;
            let u = e.identity.as_ref().and_then(KeyIdentity::user);
            (
                u.unwrap_or("-").to_owned(),
                e.principal.clone(),
                e.count,
                e.first_at.is_some(),
            )
        })
        .collect()
}

/// Sum of the counts of `operation` rows.
fn total(rows: &[AuditRecord], operation: &str) -> u64 {
    rows.iter()
        .filter(|r| r.event.operation == operation)
        .map(|r| r.event.count)
        .sum()
}

#[tokio::test]
async fn cache_hits_become_one_row_per_identity_and_principal() {
    let log = Arc::new(FlakyLog::default());
    let m = manager(&log, hour(), &["alice", "bob"]).await;
    for u in ["alice", "bob"] {
        m.get(&user(u)).await.expect("miss");
    }
    for _ in 0..5 {
        m.get(&user("alice")).await.expect("hit");
    }
    for _ in 0..2 {
        m.get(&user("bob")).await.expect("hit");
    }
    // Two handles bound to the same principal share its aggregate.
    for _ in 0..2 {
        let alice = m.bound_to(Principal::new(Some("alice"), None).expect("principal"));
        for _ in 0..2 {
            alice.get(&user("alice")).await.expect("hit as alice");
        }
    }
    assert!(
        hit_rows(&log.rows().await).is_empty(),
        "hits are counted, not written one by one"
    );
    m.flush().await.expect("flush");
    let rows = log.rows().await;
    // The store is sealed from its first write: the chain is keyed, and only the manager
    // (which holds the key) can verify it.
    assert_eq!(m.verify_audit().await.expect("verify"), rows.len() as u64);
    assert!(
        verify_chain(&rows).is_err(),
        "not recomputable without the key"
    );
    let mut hits = hit_rows(&rows);
    hits.sort();
    assert_eq!(
        hits,
        [
            ("alice".into(), "-".into(), 5, true),
            ("alice".into(), "user=alice project=-".into(), 4, true),
            ("bob".into(), "-".into(), 2, true),
        ]
    );
    for r in rows.iter().filter(|r| r.event.count > 1) {
        let first = r.event.first_at.expect("first time");
        assert!(first <= r.event.at, "first before last: {r:?}");
    }
    assert_eq!(
        rows.len(),
        2 * 2 + 2 + 3,
        "two stores (an intent row and an outcome row each: the log is not the key \
         store's own database), two misses, three aggregates"
    );
    assert!(!format!("{rows:?}").contains("sk-test-FAKE"), "no secret");
}

#[tokio::test]
async fn a_lone_hit_is_a_plain_row() {
    let log = Arc::new(FlakyLog::default());
    let m = manager(&log, hour(), &["alice"]).await;
    m.get(&user("alice")).await.expect("miss");
    m.get(&user("alice")).await.expect("hit");
    m.shutdown().await.expect("shutdown");
    let rows = log.rows().await;
    let hit = rows.last().expect("the hit's row");
    assert_eq!(hit.event.detail.as_deref(), Some("cache hit"));
    assert_eq!((hit.event.count, hit.event.first_at), (1, None));
    assert!(!hit.event.is_aggregate());
}

/// Aggregates are closed and written every interval, without a flush.
#[tokio::test(start_paused = true)]
async fn aggregates_are_written_every_interval_without_a_flush() {
    let log = Arc::new(FlakyLog::default());
    let options = AuditOptions {
        aggregate_interval: Duration::from_secs(1),
        ..AuditOptions::default()
    };
    let m = manager(&log, options, &["alice"]).await;
    m.get(&user("alice")).await.expect("miss");
    for _ in 0..3 {
        m.get(&user("alice")).await.expect("hit");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hit_rows(&log.rows().await),
        [("alice".into(), "-".into(), 3, true)]
    );
    for _ in 0..2 {
        m.get(&user("alice")).await.expect("hit");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hit_rows(&log.rows().await),
        [
            ("alice".into(), "-".into(), 3, true),
            ("alice".into(), "-".into(), 2, true)
        ],
        "one row per interval"
    );
}

/// A closer cut off with its runtime (aggregates open) is started again by the next hit on
/// another runtime: the trail does not stop for good.
#[test]
fn aggregates_outlive_the_runtime_that_opened_them() {
    let log = Arc::new(FlakyLog::default());
    let options = AuditOptions {
        aggregate_interval: Duration::from_secs(1),
        ..AuditOptions::default()
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    };
    let first = runtime();
    let m = first.block_on(async {
        let m = manager(&log, options, &["alice"]).await;
        m.get(&user("alice")).await.expect("miss");
        m.get(&user("alice")).await.expect("hit");
        m
    });
    drop(first);
    runtime().block_on(async {
        m.get(&user("alice")).await.expect("hit");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    });
    assert_eq!(
        hit_rows(&runtime().block_on(log.rows())),
        [("alice".into(), "-".into(), 2, true)],
        "written without a flush"
    );
}

#[tokio::test]
async fn every_hit_writes_one_row_per_hit() {
    let log = Arc::new(FlakyLog::default());
    let options = AuditOptions {
        every_hit: true,
        ..hour()
    };
    let m = manager(&log, options, &["alice"]).await;
    for _ in 0..6 {
        m.get(&user("alice")).await.expect("get");
    }
    m.flush().await.expect("flush");
    assert_eq!(
        hit_rows(&log.rows().await),
        vec![("alice".to_owned(), "-".to_owned(), 1, false); 5]
    );
}

/// Fail-closed: each cache hit is written before the key is returned; a hit whose row cannot
/// be written returns no key.
#[tokio::test]
async fn fail_closed_writes_every_hit_before_answering() {
    let log = Arc::new(FlakyLog::default());
    let options = AuditOptions {
        fail_closed: true,
        ..hour()
    };
    let m = manager(&log, options, &["alice"]).await;
    m.get(&user("alice")).await.expect("miss");
    for n in 1..=3 {
        m.get(&user("alice")).await.expect("hit");
        assert_eq!(
            hit_rows(&log.rows().await).len(),
            n,
            "written before the get returned"
        );
    }
    log.down.store(true, Ordering::SeqCst);
    match m.get(&user("alice")).await {
        Err(e @ Error::DatabaseUnavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("a cached key without its row: {other:?}"),
    }
    log.down.store(false, Ordering::SeqCst);
    m.get(&user("alice")).await.expect("served again");
    assert_eq!(
        hit_rows(&log.rows().await).len(),
        4,
        "the refused hit left no row"
    );
}

/// The attack: the log is down while gets keep coming (fail-open). The queue stops at
/// `max_pending`; the rest leave a counted gap; everything is accounted for once the log is
/// back, and nothing held up a get.
#[tokio::test]
async fn a_full_queue_leaves_a_counted_gap() {
    let log = Arc::new(FlakyLog::default());
    let options = AuditOptions {
        max_pending: 10,
        every_hit: true,
        ..hour()
    };
    let m = manager(&log, options, &["alice"]).await;
    m.flush().await.expect("the store's row");
    log.down.store(true, Ordering::SeqCst);
    for _ in 0..50 {
        m.get(&user("alice")).await.expect("fail-open: served");
    }
    assert!(m.flush().await.is_err(), "the log is down");
    log.down.store(false, Ordering::SeqCst);
    m.shutdown().await.expect("shutdown");
    let rows = log.rows().await;
    // The store is sealed from its first write: the chain is keyed, and only the manager
    // (which holds the key) can verify it.
    assert_eq!(m.verify_audit().await.expect("verify"), rows.len() as u64);
    assert!(
        verify_chain(&rows).is_err(),
        "not recomputable without the key"
    );
    let dropped: Vec<&AuditRecord> = rows
        .iter()
        .filter(|r| r.event.operation == DROPPED_OPERATION)
        .collect();
    assert_eq!(dropped.len(), 1, "one row counts the gap");
    let gap = &dropped[0].event;
    assert_eq!(gap.count, 40);
    assert_eq!(gap.detail.as_deref(), Some("40 events dropped"));
    assert!(gap.first_at.is_some_and(|first| first <= gap.at));
    assert_eq!(
        rows.last().map(|r| &r.event),
        Some(gap),
        "after the kept rows"
    );
    assert_eq!(
        total(&rows, "get") + gap.count,
        50,
        "every get accounted for"
    );
}

/// Aggregates are bounded too: hits on more identities than `max_pending` in one interval
/// are counted as dropped.
#[tokio::test]
async fn open_aggregates_are_bounded() {
    let log = Arc::new(FlakyLog::default());
    let options = AuditOptions {
        max_pending: 2,
        ..hour()
    };
    let users = ["u1", "u2", "u3", "u4"];
    let m = manager(&log, options, &[]).await;
    for u in users {
        m.store(&user(u), &key(u)).await.expect("store");
        m.flush().await.expect("flush");
        m.get(&user(u)).await.expect("miss");
        m.flush().await.expect("flush");
    }
    for _ in 0..3 {
        for u in users {
            m.get(&user(u)).await.expect("hit");
        }
    }
    m.shutdown().await.expect("shutdown");
    let rows = log.rows().await;
    let hits = hit_rows(&rows);
    assert!(
        (1..=2).contains(&hits.len()),
        "at most two aggregates: {hits:?}"
    );
    let dropped = total(&rows, DROPPED_OPERATION);
    assert!(dropped >= 6, "the other identities' hits: {dropped}");
    assert_eq!(
        hits.iter().map(|h| h.2).sum::<u64>() + dropped,
        12,
        "every hit accounted for"
    );
    // The store is sealed from its first write: the chain is keyed, and only the manager
    // (which holds the key) can verify it.
    assert_eq!(m.verify_audit().await.expect("verify"), rows.len() as u64);
    assert!(
        verify_chain(&rows).is_err(),
        "not recomputable without the key"
    );
}

/// 100,000 gets from 8 tasks: `shutdown()` succeeds and every get is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_000_gets_is_accounted_for() {
    let log = Arc::new(FlakyLog::default());
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let m = manager(&log, AuditOptions::default(), &names).await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let m = m.clone();
        let users = users.clone();
        tasks.spawn(async move {
            for i in 0..12_500 {
                m.get(&user(&users[(t + i) % users.len()]))
                    .await
                    .expect("get");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    m.shutdown().await.expect("shutdown");
    let rows = log.rows().await;
    assert_eq!(total(&rows, "get"), 100_000);
    assert_eq!(total(&rows, DROPPED_OPERATION), 0);
    assert!(rows.len() < 1_000, "aggregated: {} rows", rows.len());
    // The store is sealed from its first write: the chain is keyed, and only the manager
    // (which holds the key) can verify it.
    assert_eq!(m.verify_audit().await.expect("verify"), rows.len() as u64);
    assert!(
        verify_chain(&rows).is_err(),
        "not recomputable without the key"
    );
}
