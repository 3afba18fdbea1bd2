//! Store and cold get per second on every database, from one task and from 8 concurrent tasks,
//! with the local provider.
//!
//! `cargo bench --bench databases` (PostgreSQL and MySQL/MariaDB are found as in the tests:
//! `LLM_ACCOUNTING_TEST_POSTGRES_URL`, `LLM_ACCOUNTING_TEST_MYSQL_URL`; unreachable ones are
//! skipped with a message). "Cold" means no cache: every get reads the database, unwraps the
//! data key and decrypts.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_accounting::{ApiKey, KeyIdentity, Settings, Stack};
use llm_accounting_testkit::{Backend, TestDatabase};
use tokio::runtime::Runtime;

const TASKS: usize = 8;
const PRELOADED: usize = 1000;

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-bench-FAKE-{i:08}-0123456789abcdef"))
}

fn id(prefix: &str, i: usize) -> KeyIdentity {
    KeyIdentity::from_parts("bench", Some(&format!("{prefix}-{i:08}")), None).unwrap()
}

/// Runs `iters` operations spread over `tasks` tasks; returns the wall time.
async fn spread<F, Fut>(iters: u64, tasks: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let n = usize::try_from(iters).unwrap();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                op(i).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for backend in Backend::all() {
        let Some(db) = rt.block_on(TestDatabase::create(backend)) else {
            continue;
        };
        // One local master key file for every database. No cache (a key is served from
        // memory for 0 s, so every get reads the database, unwraps and decrypts), no cache
        // refresh, no audit trail: what is measured is the database under the manager.
        let mut settings = Settings::default();
        settings.database_url = Some(db.url().to_owned());
        settings.kms.local.master_key_file = Some(dir.path().join("master.key"));
        settings.create_if_missing = true;
        settings.cache.ttl_secs = 0;
        settings.cache.refresh_interval_ms = 0;
        settings.audit.enabled = false;
        let stack = rt
            .block_on(Stack::builder(&settings).accounting(false).build())
            .unwrap();
        let manager = stack.manager().clone();
        rt.block_on(async {
            for i in 0..PRELOADED {
                manager.store(&id("pre", i), &key(i)).await.unwrap();
            }
        });

        let mut group = c.benchmark_group(format!("db/{backend}"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(4));
        let stored = Arc::new(AtomicUsize::new(0));
        for tasks in [1, TASKS] {
            group.bench_function(format!("store/{tasks}_tasks"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let m = manager.clone();
                    let stored = Arc::clone(&stored);
                    spread(iters, tasks, move |_| {
                        let m = m.clone();
                        let n = stored.fetch_add(1, Ordering::Relaxed);
                        async move {
                            m.store(&id("new", n), &key(n)).await.unwrap();
                        }
                    })
                })
            });
            group.bench_function(format!("cold_get/{tasks}_tasks"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let m = manager.clone();
                    spread(iters, tasks, move |i| {
                        let m = m.clone();
                        async move {
                            black_box(m.get(&id("pre", i % PRELOADED)).await.unwrap());
                        }
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(databases, benches);
criterion_main!(databases);
