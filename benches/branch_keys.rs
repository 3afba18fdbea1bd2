//! Branch keys against moto on loopback: `scripts/bench-branch-keys` starts moto, runs
//! `cargo bench --bench branch_keys --features kms-aws`, and stops moto. Without a moto URL
//! (`LLM_ACCOUNTING_TEST_MOTO_URL`) it prints why and measures nothing.
//!
//! 1,000 keys of one service in SQLite, read cold (one by one) by a fresh manager (a new
//! [`Stack`]: provider and its SDK client, layers, branch layer, cache and connection), with
//! `kms.hierarchy = service` and with `off`:
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
use llm_accounting::layers::KmsMetrics;
use llm_accounting::{
    ApiKey, KeyIdentity, KmsHierarchy, KmsProviderKind, SecureKeyManager, Settings, Stack,
};
use llm_accounting_kms_aws::test_support::{self, create_key};
use llm_accounting_testkit::moto_url;
use tokio::runtime::Runtime;

const N: usize = 1000;

/// One SQLite store holding N keys of service `openai`, written with one hierarchy.
struct Store {
    _dir: tempfile::TempDir,
    /// The settings of a manager on it: the database, AWS KMS in moto, the hierarchy, no audit
    /// trail (what is measured is the branch layer, not the trail).
    settings: Settings,
}

/// A manager as a fresh process has it, and the counter of its KMS calls.
struct Fresh {
    manager: SecureKeyManager,
    metrics: Arc<KmsMetrics>,
}

impl Store {
    fn new(rt: &Runtime, url: &str, arn: &str, hierarchy: KmsHierarchy) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.database_url = Some(format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        ));
        settings.kms.provider = KmsProviderKind::Aws;
        settings.kms.key_id = Some(arn.to_owned());
        settings.kms.endpoint = Some(url.to_owned());
        settings.kms.aws.region = Some(test_support::TEST_REGION.to_owned());
        settings.kms.hierarchy = hierarchy;
        settings.kms.branch_key_ttl_secs = 600;
        settings.audit.enabled = false;
        let store = Store {
            _dir: dir,
            settings,
        };
        let f = store.fresh(rt, true);
        rt.block_on(store_all(&f.manager, &ids("user", 0, N)));
        rt.block_on(f.manager.shutdown()).unwrap();
        store
    }

    /// A fresh stack on the store (`create`: the database file is made).
    fn fresh(&self, rt: &Runtime, create: bool) -> Fresh {
        let mut settings = self.settings.clone();
        settings.create_if_missing = create;
        let stack = rt
            .block_on(Stack::builder(&settings).accounting(false).build())
            .unwrap();
        Fresh {
            manager: stack.manager().clone(),
            metrics: Arc::clone(stack.metrics()),
        }
    }

    fn hierarchy(&self) -> KmsHierarchy {
        self.settings.kms.hierarchy
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
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        eprintln!(
            "benches/branch_keys.rs: no AWS_ACCESS_KEY_ID in the environment; run \
             scripts/bench-branch-keys, which sets dummy credentials for moto. Skipped."
        );
        return;
    }
    let rt = Runtime::new().unwrap();
    let client = test_support::client(&url);
    let (_, arn) = rt.block_on(create_key(&client, "llm-accounting branch bench"));
    let service = Store::new(&rt, &url, &arn, KmsHierarchy::Service);
    let off = Store::new(&rt, &url, &arn, KmsHierarchy::Off);
    let cold = ids("user", 0, N);

    let mut took = Vec::new();
    for store in [&service, &off] {
        let f = store.fresh(&rt, false);
        let what = format!(
            "cold get of {N} keys, one by one, hierarchy {}",
            store.hierarchy()
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
