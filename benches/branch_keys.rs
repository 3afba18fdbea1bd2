//! Branch keys against moto on loopback: `scripts/bench-branch-keys` starts moto, runs
//! `cargo bench --bench branch_keys --features kms-aws`, and stops moto. Without a moto URL
//! (`LLM_ACCOUNTING_TEST_MOTO_URL`) it prints why and measures nothing.
//!
//! 1,000 keys of one service in SQLite, read cold (one by one) by a fresh manager (new
//! provider stack, branch layer, cache and connection), with `kms.hierarchy = service` and
//! with `off`:
//!
//! - `branch_keys/cold_get_1000_service` and `branch_keys/cold_get_1000_off`;
//! - `branch_keys/store_1000_warm_service`: storing 1,000 new keys of the service once its
//!   branch key is cached.
//!
//! Before the benchmarks one pass of each is run on its own and its KMS call count (from the
//! metrics layer, which sits below the branch layer) and rate are printed.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_accounting::branch::{BranchKeyProvider, BranchKeyStore, Hierarchy};
use llm_accounting::layers::{self, KmsMetrics, LayerOptions};
use llm_accounting::{
    ApiKey, AwsKmsProvider, KeyIdentity, KmsProvider, SeaOrmKeyRepository, SecureKeyManager,
    StoreOptions,
};
use llm_accounting_kms_aws::aws_sdk_kms::Client;
use llm_accounting_kms_aws::test_support::{self, create_key};
use llm_accounting_testkit::moto_url;
use tokio::runtime::Runtime;

const N: usize = 1000;

/// One SQLite store holding N keys of service `openai`, written with one hierarchy.
struct Store {
    _dir: tempfile::TempDir,
    url: String,
    hierarchy: Hierarchy,
    client: Client,
    arn: String,
}

/// A manager as a fresh process has it, and the counter of its KMS calls.
struct Fresh {
    manager: SecureKeyManager,
    metrics: Arc<KmsMetrics>,
}

impl Store {
    fn new(rt: &Runtime, client: &Client, arn: &str, hierarchy: Hierarchy) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store {
            _dir: dir,
            url,
            hierarchy,
            client: client.clone(),
            arn: arn.to_owned(),
        };
        let f = store.fresh(rt, true);
        rt.block_on(store_all(&f.manager, &ids("user", 0, N)));
        rt.block_on(f.manager.shutdown()).unwrap();
        store
    }

    fn fresh(&self, rt: &Runtime, create: bool) -> Fresh {
        let metrics = Arc::new(KmsMetrics::new());
        let aws = layers::stack(
            Arc::new(AwsKmsProvider::from_client(&self.client, &self.arn).unwrap()),
            &LayerOptions::default(),
            Arc::clone(&metrics),
        );
        let options = StoreOptions {
            create_if_missing: create,
            ..StoreOptions::default()
        };
        let repo = Arc::new(
            rt.block_on(SeaOrmKeyRepository::connect(&self.url, &options))
                .unwrap(),
        );
        let branch = BranchKeyProvider::new(
            aws,
            Arc::clone(&repo) as Arc<dyn BranchKeyStore>,
            self.hierarchy,
            Duration::from_secs(600),
        );
        let manager = SecureKeyManager::new(Arc::new(branch) as Arc<dyn KmsProvider>, repo);
        Fresh { manager, metrics }
    }
}

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-bench-FAKE-{i:08}-0123456789abcdef"))
}

fn ids(prefix: &str, from: usize, n: usize) -> Vec<KeyIdentity> {
    (from..from + n)
        .map(|i| {
            KeyIdentity::from_parts("openai", Some(&format!("{prefix}-{i:06}")), None).unwrap()
        })
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

/// Runs `pass` on `f` once, printing its time and KMS calls; returns the time.
fn report(
    rt: &Runtime,
    f: &Fresh,
    what: &str,
    pass: impl std::future::Future<Output = ()>,
) -> Duration {
    let before = f.metrics.snapshot();
    let start = Instant::now();
    rt.block_on(pass);
    let took = start.elapsed();
    let m = f.metrics.snapshot().since(&before);
    println!(
        "{what}: {N} ops in {:.1} ms = {:.0} ops/s; KMS calls {} (GenerateDataKey {}, Encrypt {}, \
         Decrypt {}), retries {}",
        took.as_secs_f64() * 1e3,
        N as f64 / took.as_secs_f64(),
        m.calls(),
        m.generates,
        m.wraps,
        m.unwraps,
        m.retries
    );
    took
}

fn benches(c: &mut Criterion) {
    let Some(url) = moto_url("benches/branch_keys.rs") else {
        return;
    };
    let rt = Runtime::new().unwrap();
    let client = test_support::client(&url);
    let (_, arn) = rt.block_on(create_key(&client, "llm-accounting branch bench"));
    let service = Store::new(&rt, &client, &arn, Hierarchy::Service);
    let off = Store::new(&rt, &client, &arn, Hierarchy::Off);
    let cold = ids("user", 0, N);

    let mut took = Vec::new();
    for store in [&service, &off] {
        let f = store.fresh(&rt, false);
        let what = format!(
            "cold get of {N} keys, one by one, hierarchy {}",
            store.hierarchy
        );
        let m = f.manager.clone();
        let cold = cold.clone();
        took.push(report(
            &rt,
            &f,
            &what,
            async move { get_each(&m, &cold).await },
        ));
        rt.block_on(f.manager.shutdown()).unwrap();
    }
    println!(
        "hierarchy service is {:.1}x faster than off on a cold read",
        took[1].as_secs_f64() / took[0].as_secs_f64()
    );
    {
        let f = service.fresh(&rt, false);
        rt.block_on(f.manager.get(&cold[0])).unwrap();
        let m = f.manager.clone();
        let batch = ids("warm-report", 0, N);
        report(&rt, &f, "store with a warm branch key", async move {
            store_all(&m, &batch).await
        });
        rt.block_on(f.manager.shutdown()).unwrap();
    }

    let mut group = c.benchmark_group("branch_keys");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(N as u64));
    for (name, store) in [
        ("cold_get_1000_service", &service),
        ("cold_get_1000_off", &off),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let f = store.fresh(&rt, false);
                    let start = Instant::now();
                    rt.block_on(get_each(&f.manager, &cold));
                    total += start.elapsed();
                    rt.block_on(f.manager.shutdown()).unwrap();
                }
                total
            })
        });
    }
    let f = service.fresh(&rt, false);
    rt.block_on(f.manager.get(&cold[0])).unwrap();
    let mut next = 0usize;
    group.bench_function("store_1000_warm_service", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<_> = (0..iters)
                .map(|_| {
                    next += N;
                    ids("warm", next, N)
                })
                .collect();
            let start = Instant::now();
            for batch in &batches {
                rt.block_on(store_all(&f.manager, batch));
            }
            start.elapsed()
        })
    });
    group.finish();
    rt.block_on(f.manager.shutdown()).unwrap();
}

criterion_group!(branch_keys, benches);
criterion_main!(branch_keys);
