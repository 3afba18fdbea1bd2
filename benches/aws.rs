//! AWS KMS benchmarks against moto on loopback: `scripts/bench-aws` starts moto, runs
//! `cargo bench --bench aws --features kms-aws`, and stops moto. Without a moto URL
//! (`LLM_ACCOUNTING_TEST_MOTO_URL`) it prints why and measures nothing.
//!
//! - `aws/store_500`: store 500 new keys (one GenerateDataKey each) into SQLite;
//! - `aws/cold_get_500_sequential`: 500 cold gets one by one (one Decrypt each, waited for in turn);
//! - `aws/cold_get_many_500`: the same 500 cold keys through `get_many` (32 at a time).
//!
//! Before each benchmark one pass is run on its own and its KMS call count (from the metrics
//! layer) and rate are printed. moto is a Python server: absolute rates say more about moto than
//! about AWS; the call counts and the sequential/bulk ratio are the point.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_accounting::layers::{self, KmsMetrics, LayerOptions};
use llm_accounting::{
    ApiKey, AwsKmsProvider, KeyIdentity, SeaOrmKeyRepository, SecureKeyManager, StoreOptions,
};
use llm_accounting_kms_aws::test_support::{self, create_key, moto_url};
use tokio::runtime::Runtime;

const N: usize = 500;
const CONCURRENCY: usize = 32;

struct Env {
    _dir: tempfile::TempDir,
    manager: SecureKeyManager,
    metrics: Arc<KmsMetrics>,
}

fn env(rt: &Runtime, url: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let client = test_support::client(url);
    let (_, arn) = rt.block_on(create_key(&client, "llm-accounting bench"));
    let metrics = Arc::new(KmsMetrics::new());
    let provider = layers::stack(
        Arc::new(AwsKmsProvider::from_client(&client, arn).unwrap()),
        &LayerOptions::default(),
        Arc::clone(&metrics),
    );
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let repo = rt
        .block_on(SeaOrmKeyRepository::connect(&db, &StoreOptions::default()))
        .unwrap();
    Env {
        _dir: dir,
        manager: SecureKeyManager::new(provider, Arc::new(repo)),
        metrics,
    }
}

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-bench-FAKE-{i:08}-0123456789abcdef"))
}

fn ids(prefix: &str, from: usize, n: usize) -> Vec<KeyIdentity> {
    (from..from + n)
        .map(|i| KeyIdentity::from_parts(prefix, Some(&format!("user-{i:06}")), None).unwrap())
        .collect()
}

async fn store_all(m: &SecureKeyManager, ids: &[KeyIdentity]) {
    for (i, id) in ids.iter().enumerate() {
        m.store(id, &key(i)).await.unwrap();
    }
}

async fn get_each(m: &SecureKeyManager, ids: &[KeyIdentity]) {
    for id in ids {
        std::hint::black_box(m.get(id).await.unwrap());
    }
}

async fn get_many(m: &SecureKeyManager, ids: &[KeyIdentity]) {
    for (_, r) in m.get_many(ids, CONCURRENCY).await {
        std::hint::black_box(r.unwrap());
    }
}

/// Runs `pass` once, printing its KMS calls and rate.
fn report(rt: &Runtime, e: &Env, what: &str, pass: impl std::future::Future<Output = ()>) {
    let before = e.metrics.snapshot();
    let start = Instant::now();
    rt.block_on(pass);
    let took = start.elapsed();
    let m = e.metrics.snapshot().since(&before);
    println!(
        "{what}: {N} ops in {:.0} ms = {:.0} ops/s; KMS calls {} (GenerateDataKey {}, Encrypt {}, \
         Decrypt {}), failures {}, retries {}",
        took.as_secs_f64() * 1e3,
        N as f64 / took.as_secs_f64(),
        m.calls(),
        m.generates,
        m.wraps,
        m.unwraps,
        m.failures,
        m.retries
    );
}

fn benches(c: &mut Criterion) {
    let Some(url) = moto_url("benches/aws.rs") else {
        return;
    };
    let rt = Runtime::new().unwrap();
    let e = env(&rt, &url);

    // Store: fresh identities every pass.
    let mut next = 0usize;
    let fresh = |next: &mut usize| {
        let v = ids("store-bench", *next, N);
        *next += N;
        v
    };
    report(&rt, &e, "store 500 keys", {
        let batch = fresh(&mut next);
        let m = e.manager.clone();
        async move { store_all(&m, &batch).await }
    });
    let mut group = c.benchmark_group("aws");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("store_500", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let batches: Vec<Vec<KeyIdentity>> = (0..iters).map(|_| fresh(&mut next)).collect();
            let m = e.manager.clone();
            async move {
                let start = Instant::now();
                for batch in &batches {
                    store_all(&m, batch).await;
                }
                start.elapsed()
            }
        })
    });

    // Cold reads of one fixed set of 500 keys.
    let cold = ids("get-bench", 0, N);
    rt.block_on(store_all(&e.manager, &cold));
    rt.block_on(e.manager.clear_cache());
    report(&rt, &e, "cold get of 500 keys, one by one", {
        let m = e.manager.clone();
        let cold = cold.clone();
        async move { get_each(&m, &cold).await }
    });
    rt.block_on(e.manager.clear_cache());
    report(
        &rt,
        &e,
        &format!("cold get_many of 500 keys, concurrency {CONCURRENCY}"),
        {
            let m = e.manager.clone();
            let cold = cold.clone();
            async move { get_many(&m, &cold).await }
        },
    );

    group.bench_function("cold_get_500_sequential", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let m = e.manager.clone();
            let cold = cold.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    m.clear_cache().await;
                    let start = Instant::now();
                    get_each(&m, &cold).await;
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.bench_function("cold_get_many_500", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let m = e.manager.clone();
            let cold = cold.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    m.clear_cache().await;
                    let start = Instant::now();
                    get_many(&m, &cold).await;
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    rt.block_on(e.manager.shutdown()).unwrap();
}

criterion_group!(aws, benches);
criterion_main!(aws);
