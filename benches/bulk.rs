//! Bulk paths and instant revocation.
//!
//! `cargo bench --bench bulk --features postgres` — goals: `store_many` of batches of 1,000 on
//! SQLite with the local provider ≥ 5,000 keys/s; `get_many` of 1,000 cold keys against the
//! same 1,000 gets one by one; on PostgreSQL, the time from one manager's change to another
//! manager's cached entry being dropped through the notification ≤ 100 ms (measured from the
//! start of the changing call, its transaction included: an upper bound of commit-to-drop).
//! `bulk/sqlite-audited` repeats the cold reads with the default audit trail on (and its
//! rollback check) over a trail of about 100,000 rows.
//! PostgreSQL is found as in the tests (`LLM_ACCOUNTING_TEST_POSTGRES_URL`); unreachable, that
//! benchmark is skipped with a message.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_accounting::{
    ApiKey, BatchMode, KeyIdentity, SecureKeyManager, Settings, Stack, WriteOptions,
};
use tokio::runtime::Runtime;

const BATCH: usize = 1_000;

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-bench-FAKE-{i:08}-0123456789abcdef"))
}

fn id(prefix: &str, i: usize) -> KeyIdentity {
    KeyIdentity::from_parts("bench", Some(&format!("{prefix}-{i:08}")), None).unwrap()
}

/// The settings of a new SQLite file with the local provider in `dir`, without cache refresh
/// and without the audit trail: the benchmarks measure the manager's bulk paths, not the
/// trail.
fn sqlite_settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.database_url = Some(format!("sqlite://{}", dir.join("bench.db").display()));
    s.kms.local.master_key_file = Some(dir.join("master.key"));
    s.create_if_missing = true;
    s.cache.refresh_interval_ms = 0;
    s.audit.enabled = false;
    s
}

/// The manager of the stack `settings` name (no accounting).
fn manager(rt: &Runtime, settings: &Settings) -> SecureKeyManager {
    let stack = rt
        .block_on(Stack::builder(settings).accounting(false).build())
        .unwrap();
    stack.manager().clone()
}

fn store_many(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&rt, &sqlite_settings(dir.path()));
    let next = AtomicUsize::new(0);
    let mut group = c.benchmark_group("bulk/sqlite");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("store_many/1000", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let m = m.clone();
            let batches: Vec<Vec<(KeyIdentity, ApiKey)>> = (0..iters)
                .map(|_| {
                    (0..BATCH)
                        .map(|_| {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            (id("batch", n), key(n))
                        })
                        .collect()
                })
                .collect();
            async move {
                let start = Instant::now();
                for batch in &batches {
                    m.store_many(batch, BatchMode::CreateOnly, &WriteOptions::default())
                        .await
                        .unwrap();
                }
                start.elapsed()
            }
        })
    });

    // 1,000 stored keys, read cold (cache cleared before each round).
    let ids: Vec<KeyIdentity> = (0..BATCH).map(|i| id("cold", i)).collect();
    let items: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), key(i)))
        .collect();
    rt.block_on(m.store_many(&items, BatchMode::CreateOnly, &WriteOptions::default()))
        .unwrap();
    cold_reads(&mut group, &rt, &m, &ids);
    group.finish();
}

#[cfg(feature = "postgres")]
mod notify {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use criterion::Criterion;
    use llm_accounting::{Change, ChangeSubscriber, Settings};
    use llm_accounting_testkit::{Backend, TestDatabase};
    use tokio::runtime::Runtime;
    use tokio::sync::mpsc;

    use super::{id, key};

    /// Tells the bench when the listener has dropped a key.
    #[derive(Debug)]
    struct Dropped(mpsc::UnboundedSender<Instant>);

    impl ChangeSubscriber for Dropped {
        fn changed(&self, change: &Change) {
            if matches!(change, Change::Key(_)) {
                let _ = self.0.send(Instant::now());
            }
        }
    }

    pub(super) fn latency(c: &mut Criterion) {
        let rt = Runtime::new().unwrap();
        let Some(db) = rt.block_on(TestDatabase::create(Backend::Postgres)) else {
            return;
        };
        // Two processes' stacks on one database: `a` changes keys, `b` caches them and drops
        // its entry when the notification arrives (each stack on PostgreSQL listens to the
        // change feed). Cache refresh is one hour, so that only the notification drops it; no
        // audit trail, which is not what is measured.
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.database_url = Some(db.url().to_owned());
        settings.kms.local.master_key_file = Some(dir.path().join("master.key"));
        settings.create_if_missing = true;
        settings.cache.refresh_interval_ms = 3_600_000;
        settings.audit.enabled = false;
        let a = super::manager(&rt, &settings);
        let b = super::manager(&rt, &settings);
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        b.subscribe_changes(Arc::new(Dropped(tx)));
        let target = id("notify", 0);
        rt.block_on(async {
            a.store(&target, &key(0)).await.unwrap();
            b.get(&target).await.unwrap();
            while !b.change_feed_live() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while rx.lock().await.try_recv().is_ok() {}
        });
        let mut group = c.benchmark_group("bulk/postgres");
        group.sample_size(20);
        group.bench_function("notify/change_to_drop", |bench| {
            bench.to_async(&rt).iter_custom(|iters| {
                let (a, b, target) = (a.clone(), b.clone(), target.clone());
                let rx = Arc::clone(&rx);
                async move {
                    let mut rx = rx.lock().await;
                    let mut took = Duration::ZERO;
                    for i in 0..iters {
                        b.get(&target).await.unwrap();
                        let start = Instant::now();
                        let n = usize::try_from(i).unwrap() + 1;
                        a.rotate(&target, &key(n)).await.unwrap();
                        let dropped = rx.recv().await.unwrap();
                        took += dropped - start;
                        assert_eq!(b.cached_keys(), 0, "the entry was dropped");
                    }
                    took
                }
            })
        });
        group.finish();
        rt.block_on(async {
            a.shutdown().await.unwrap();
            b.shutdown().await.unwrap();
        });
    }
}

#[cfg(feature = "postgres")]
fn notify_latency(c: &mut Criterion) {
    notify::latency(c);
}

#[cfg(not(feature = "postgres"))]
fn notify_latency(_: &mut Criterion) {
    eprintln!("bulk/postgres/notify: built without feature postgres; skipped");
}

/// `get_many` of `ids` and the same gets one by one, each round from a cleared cache.
fn cold_reads(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    m: &SecureKeyManager,
    ids: &[KeyIdentity],
) {
    group.bench_function("get_many/1000_cold", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let m = m.clone();
            let ids = ids.to_vec();
            async move {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    m.clear_cache();
                    let start = Instant::now();
                    let got = m.get_many(&ids, 16).await;
                    took += start.elapsed();
                    assert!(got.iter().all(|(_, k)| k.is_ok()));
                    black_box(got);
                }
                took
            }
        })
    });
    group.bench_function("get_one_by_one/1000_cold", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let m = m.clone();
            let ids = ids.to_vec();
            async move {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    m.clear_cache();
                    let start = Instant::now();
                    for id in &ids {
                        black_box(m.get(id).await.unwrap());
                    }
                    took += start.elapsed();
                }
                took
            }
        })
    });
}

/// Cold reads with the facade's default audit trail on, which also checks every record read
/// from the store against the latest revision the trail records for it (rollback
/// resistance): one indexed lookup per `get`, one per 500 keys of a `get_many`. The trail is
/// first grown to about 100,000 rows, so that the lookup is measured on a trail of some size.
/// Compare with `bulk/sqlite` (no trail).
fn cold_reads_audited(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = sqlite_settings(dir.path());
    settings.audit.enabled = true;
    let m = manager(&rt, &settings);
    let ids: Vec<KeyIdentity> = (0..BATCH).map(|i| id("audited", i)).collect();
    let items: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), key(i)))
        .collect();
    rt.block_on(async {
        m.store_many(&items, BatchMode::CreateOnly, &WriteOptions::default())
            .await
            .unwrap();
        // Each cold read writes one row per key.
        for _ in 0..100 {
            m.clear_cache();
            black_box(m.get_many(&ids, 16).await);
        }
        m.flush().await.unwrap();
    });
    let mut group = c.benchmark_group("bulk/sqlite-audited");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    cold_reads(&mut group, &rt, &m, &ids);
    group.finish();
}

criterion_group!(bulk, store_many, cold_reads_audited, notify_latency);
criterion_main!(bulk);
