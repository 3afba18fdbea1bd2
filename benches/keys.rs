//! Benchmarks on the embedded default: a SQLite file and the local provider.
//!
//! `cargo bench --bench keys` — goals: cache hit median < 200 ns, cold get < 100 µs,
//! store > 1,000 keys/s, list of 10,000 keys < 1 s.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use llm_accounting::{
    ApiKey, KeyFilter, KeyIdentity, LocalKmsProvider, SeaOrmKeyRepository, SecureKeyManager,
    StoreOptions,
};
use tokio::runtime::Runtime;

struct Env {
    _dir: tempfile::TempDir,
    manager: SecureKeyManager,
}

/// Store options that create the benchmark's database file.
fn creating() -> StoreOptions {
    StoreOptions {
        create_if_missing: true,
        ..StoreOptions::default()
    }
}

fn env(rt: &Runtime) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let provider = LocalKmsProvider::open_or_create(dir.path().join("master.key")).unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let repo = rt
        .block_on(SeaOrmKeyRepository::connect(&url, &creating()))
        .unwrap();
    let manager = SecureKeyManager::new(Arc::new(provider), Arc::new(repo));
    Env { _dir: dir, manager }
}

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-bench-FAKE-{i:08}-0123456789abcdef"))
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let e = env(&rt);
    let id = KeyIdentity::from_parts("openai", Some("alice"), Some("bench")).unwrap();
    rt.block_on(e.manager.store(&id, &key(0))).unwrap();
    rt.block_on(e.manager.get(&id)).unwrap();

    c.bench_function("get/cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(e.manager.get(&id).await.unwrap()) })
    });

    c.bench_function("get/cold_sqlite_local", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let m = e.manager.clone();
            let id = id.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    m.clear_cache();
                    let start = Instant::now();
                    black_box(m.get(&id).await.unwrap());
                    total += start.elapsed();
                }
                total
            }
        })
    });

    // The same on a current-thread runtime (one thread polls everything, as in the CLI).
    let ct = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e_ct = env(&ct);
    ct.block_on(e_ct.manager.store(&id, &key(0))).unwrap();
    c.bench_function("get/cold_sqlite_local_current_thread", |b| {
        b.to_async(&ct).iter_custom(|iters| {
            let m = e_ct.manager.clone();
            let id = id.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    m.clear_cache();
                    let start = Instant::now();
                    black_box(m.get(&id).await.unwrap());
                    total += start.elapsed();
                }
                total
            }
        })
    });

    let mut n = 0usize;
    let mut group = c.benchmark_group("store");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("new_key_sqlite_local", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let m = e.manager.clone();
            let start_n = n;
            n += iters as usize;
            async move {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let id = KeyIdentity::from_parts(
                        "store-bench",
                        Some(&format!("u{}", start_n + i)),
                        None,
                    )
                    .unwrap();
                    m.store(&id, &key(i)).await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    group.finish();

    let big = env(&rt);
    rt.block_on(async {
        for i in 0..10_000 {
            let id =
                KeyIdentity::from_parts("list-bench", Some(&format!("user-{i:05}")), None).unwrap();
            big.manager.store(&id, &key(i)).await.unwrap();
        }
    });
    let mut group = c.benchmark_group("list");
    group.sample_size(10);
    group.bench_function("10000_keys", |b| {
        b.to_async(&rt).iter(|| async {
            let all = big.manager.list(&KeyFilter::default()).await.unwrap().keys;
            assert_eq!(all.len(), 10_000);
            black_box(all)
        })
    });
    group.finish();
}

/// Rewrap of 2,000 keys from master key v1 to v2 of a local key file (SQLite file), measured
/// as versions per second; each sample starts from fresh keys under v1.
fn rewrap(c: &mut Criterion) {
    const N: usize = 2000;
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("rewrap");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(N as u64));
    group.bench_function("local_2000_keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let e = env(&rt);
                rt.block_on(async {
                    for i in 0..N {
                        let id = KeyIdentity::from_parts("rewrap", Some(&format!("u{i}")), None)
                            .unwrap();
                        e.manager.store(&id, &key(i)).await.unwrap();
                    }
                });
                let mk = e._dir.path().join("master.key");
                LocalKmsProvider::add_master_key_version(&mk).unwrap();
                let provider = LocalKmsProvider::open(&mk).unwrap();
                let url = format!("sqlite://{}", e._dir.path().join("bench.db").display());
                let repo = rt
                    .block_on(SeaOrmKeyRepository::connect(&url, &creating()))
                    .unwrap();
                let m = SecureKeyManager::new(Arc::new(provider), Arc::new(repo));
                let start = Instant::now();
                let report = rt
                    .block_on(m.rewrap(&llm_accounting::RewrapOptions::default(), |_| {}))
                    .unwrap();
                total += start.elapsed();
                assert_eq!(report.done, N as u64);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(keys, benches, rewrap);
criterion_main!(keys);
