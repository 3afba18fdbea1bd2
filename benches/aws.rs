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
//! about AWS. On loopback there is no network latency for `get_many` to hide, so one more pass
//! of each read adds 10 ms per KMS call (a same-region AWS round trip is a few ms to tens of ms)
//! to show what bounded concurrency buys.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_accounting::layers::{KmsMetrics, Layer};
use llm_accounting::{
    ApiKey, DataKey, EncryptionContext, KeyIdentity, KmsProvider, KmsProviderKind, Result,
    RewrapTarget, SecureKeyManager, Settings, Stack, WrappedKey,
};
use llm_accounting_kms_aws::test_support::{self, create_key};
use llm_accounting_testkit::moto_url;
use tokio::runtime::Runtime;

const N: usize = 500;
const CONCURRENCY: usize = 32;

struct Env {
    _dir: tempfile::TempDir,
    manager: SecureKeyManager,
    metrics: Arc<KmsMetrics>,
}

/// Simulated network latency: waits before each call to the provider.
#[derive(Debug)]
struct Delayed<P>(P, Duration);

/// The layer that makes [`Delayed`] providers.
struct Latency(Duration);

impl Layer<Arc<dyn KmsProvider>> for Latency {
    type Layered = Delayed<Arc<dyn KmsProvider>>;
    fn layer(&self, inner: Arc<dyn KmsProvider>) -> Self::Layered {
        Delayed(inner, self.0)
    }
}

#[async_trait::async_trait]
impl<P: KmsProvider> KmsProvider for Delayed<P> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn master_key_ref(&self) -> String {
        self.0.master_key_ref()
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        tokio::time::sleep(self.1).await;
        self.0.wrap_key(key, context).await
    }
    async fn unwrap_key(&self, w: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        tokio::time::sleep(self.1).await;
        self.0.unwrap_key(w, context).await
    }
    async fn generate_data_key(&self, c: &EncryptionContext) -> Result<(DataKey, WrappedKey)> {
        tokio::time::sleep(self.1).await;
        self.0.generate_data_key(c).await
    }
}

/// Settings of a new SQLite file in `dir` whose keys are wrapped by AWS KMS key `key_id` in
/// moto at `url`, without the audit trail: the benchmarks measure the manager's KMS calls,
/// not the trail. Credentials come from the environment (dummy ones, set by
/// `scripts/bench-aws`), the region is moto's.
fn aws_settings(dir: &Path, url: &str, key_id: &str) -> Settings {
    let mut s = Settings::default();
    s.database_url = Some(format!("sqlite://{}", dir.join("bench.db").display()));
    s.create_if_missing = true;
    s.kms.provider = KmsProviderKind::Aws;
    s.kms.key_id = Some(key_id.to_owned());
    s.kms.endpoint = Some(url.to_owned());
    s.kms.aws.region = Some(test_support::TEST_REGION.to_owned());
    s.audit.enabled = false;
    s
}

/// The manager of the stack `settings` name (no accounting), and its KMS counters.
fn stack(rt: &Runtime, settings: &Settings) -> (SecureKeyManager, Arc<KmsMetrics>) {
    let stack = rt
        .block_on(Stack::builder(settings).accounting(false).build())
        .unwrap();
    (stack.manager().clone(), Arc::clone(stack.metrics()))
}

/// moto's URL, if moto runs and the environment has AWS credentials (dummy ones are fine);
/// else why not, and `None`.
fn moto(what: &str) -> Option<String> {
    let url = moto_url(what)?;
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        eprintln!(
            "{what}: no AWS_ACCESS_KEY_ID in the environment; run scripts/bench-aws, which \
             sets dummy credentials for moto. Skipped."
        );
        return None;
    }
    Some(url)
}

/// A manager on a new SQLite file over a new AWS KMS key in moto at `url`.
fn env(rt: &Runtime, url: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let client = test_support::client(url);
    let (_, arn) = rt.block_on(create_key(&client, "llm-accounting bench"));
    let (manager, metrics) = stack(rt, &aws_settings(dir.path(), url, &arn));
    Env {
        _dir: dir,
        manager,
        metrics,
    }
}

/// Like [`env`], with `latency` waited before each call to AWS KMS (a layer of the bench's
/// own, added to the stack).
fn env_with_latency(rt: &Runtime, url: &str, latency: Duration) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let client = test_support::client(url);
    let (_, arn) = rt.block_on(create_key(&client, "llm-accounting bench"));
    let stack = rt
        .block_on(
            Stack::builder(&aws_settings(dir.path(), url, &arn))
                .accounting(false)
                .layer(Latency(latency))
                .build(),
        )
        .unwrap();
    Env {
        _dir: dir,
        manager: stack.manager().clone(),
        metrics: Arc::clone(stack.metrics()),
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
    let Some(url) = moto("benches/aws.rs") else {
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
    group.measurement_time(Duration::from_secs(25));
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
    e.manager.clear_cache();
    report(&rt, &e, "cold get of 500 keys, one by one", {
        let m = e.manager.clone();
        let cold = cold.clone();
        async move { get_each(&m, &cold).await }
    });
    e.manager.clear_cache();
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
                    m.clear_cache();
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
                    m.clear_cache();
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

    // The same reads with 10 ms of simulated network latency per KMS call.
    let slow = env_with_latency(&rt, &url, Duration::from_millis(10));
    let cold = ids("latency-bench", 0, N);
    rt.block_on(store_all(&slow.manager, &cold));
    for (what, bulk) in [
        ("+10 ms latency: cold get of 500 keys, one by one", false),
        (
            "+10 ms latency: cold get_many of 500 keys, concurrency 32",
            true,
        ),
    ] {
        slow.manager.clear_cache();
        let m = slow.manager.clone();
        let cold = cold.clone();
        report(&rt, &slow, what, async move {
            if bulk {
                get_many(&m, &cold).await
            } else {
                get_each(&m, &cold).await
            }
        });
    }
    rt.block_on(slow.manager.shutdown()).unwrap();
}

/// Provider migration: 500 keys stored under the local provider, rewrapped to AWS KMS (one
/// Encrypt per version; the local unwrap is in process). Versions per second.
fn rewrap_local_to_aws(c: &mut Criterion) {
    let Some(url) = moto("benches/aws.rs rewrap") else {
        return;
    };
    let rt = Runtime::new().unwrap();
    let client = test_support::client(&url);
    let (_, arn) = rt.block_on(create_key(&client, "llm-accounting rewrap bench"));
    let mut group = c.benchmark_group("aws");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("rewrap_500_local_to_aws", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // The keys are stored under a new local master key file (no audit trail, as
                // in `aws_settings`), then a stack with AWS KMS as its rewrap target moves
                // them (the local provider kept to unwrap them).
                let dir = tempfile::tempdir().unwrap();
                let mut settings = aws_settings(dir.path(), &url, &arn);
                settings.kms.provider = KmsProviderKind::Local;
                settings.kms.key_id = None;
                settings.kms.local.master_key_file = Some(dir.path().join("mk"));
                let (before, _) = stack(&rt, &settings);
                rt.block_on(store_all(&before, &ids("rewrap", 0, N)));
                rt.block_on(before.shutdown()).unwrap();
                let to_aws = RewrapTarget::new(Some(KmsProviderKind::Aws), Some(arn.clone()));
                let rewrap = rt
                    .block_on(
                        Stack::builder(&settings)
                            .accounting(false)
                            .rewrap_to(to_aws)
                            .build(),
                    )
                    .unwrap();
                let (manager, metrics) = (rewrap.manager(), rewrap.metrics());
                let calls = metrics.snapshot();
                let start = Instant::now();
                let report = rt
                    .block_on(manager.rewrap(&llm_accounting::RewrapOptions::default(), |_| {}))
                    .unwrap();
                let took = start.elapsed();
                total += took;
                assert_eq!(report.done, N as u64);
                // The stack counts both providers' calls: the wraps are AWS KMS's (Encrypt),
                // the unwraps the local provider's (in process).
                let m = metrics.snapshot().since(&calls);
                println!(
                    "rewrap of {N} versions local -> aws: {:.0} versions/s, AWS KMS calls {} \
                     (Encrypt {}), local unwraps {}",
                    N as f64 / took.as_secs_f64(),
                    m.wraps + m.generates,
                    m.wraps,
                    m.unwraps
                );
                rt.block_on(rewrap.shutdown()).unwrap();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(aws, benches, rewrap_local_to_aws);
criterion_main!(aws);
