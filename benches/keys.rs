//! Benchmarks on the embedded default: a SQLite file and the local provider.
//!
//! `cargo bench --bench keys` — goals: cache hit median < 200 ns, cold get < 100 µs,
//! store > 1,000 keys/s, list of 10,000 keys < 1 s; with the facade's default settings, a cache
//! hit with the audit trail on within 2x of one with it off, and a burst of 100,000 gets
//! (then `shutdown()`) fully written.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use llm_accounting::{
    ApiKey, AuditFilter, KeyFilter, KeyIdentity, LocalKmsProvider, SecureKeyManager, Settings,
    Stack,
};
use tokio::runtime::Runtime;

struct Env {
    dir: tempfile::TempDir,
    manager: SecureKeyManager,
}

/// A manager on a new SQLite file with the local provider, built like the facade builds it
/// but without the audit trail: it measures the manager itself, not the trail (see `audit`
/// for the trail's cost).
fn env(rt: &Runtime) -> Env {
    let (dir, manager) = facade(rt, without_trail);
    Env { dir, manager }
}

/// No audit trail (`audit.enabled = false`).
fn without_trail(s: &mut Settings) {
    s.audit.enabled = false;
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

/// A benchmark's name and how its settings differ from the defaults.
type Variant = (&'static str, fn(&mut Settings));

/// The default settings (audit trail on, fail-open, cache hits aggregated) with the database
/// and the master key file in `dir` (a new SQLite file and local key file), changed by `tune`.
fn settings_in(dir: &Path, tune: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = Settings::default();
    settings.data_dir = Some(dir.to_owned());
    tune(&mut settings);
    settings
}

/// The manager of the stack `settings` name (no accounting).
fn manager(rt: &Runtime, settings: &Settings) -> SecureKeyManager {
    let stack = rt
        .block_on(Stack::builder(settings).accounting(false).build())
        .unwrap();
    stack.manager().clone()
}

/// A manager built like the facade builds it: default settings (audit trail on, fail-open,
/// cache hits aggregated) on a SQLite file, changed by `tune`.
fn facade(rt: &Runtime, tune: impl FnOnce(&mut Settings)) -> (tempfile::TempDir, SecureKeyManager) {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(rt, &settings_in(dir.path(), tune));
    (dir, m)
}

/// A cache hit with the facade's default settings, audit trail off and on (aggregated hits,
/// one row per hit, fail-closed).
fn audit(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let id = KeyIdentity::from_parts("openai", Some("alice"), Some("bench")).unwrap();
    let variants: [Variant; 4] = [
        ("off", |s| s.audit.enabled = false),
        ("on", |_| {}),
        ("on_every_hit", |s| s.audit.every_hit = true),
        ("on_fail_closed", |s| s.audit.fail_closed = true),
    ];
    let mut group = c.benchmark_group("get/cache_hit_audit");
    for (name, tune) in variants {
        let (_dir, m) = facade(&rt, tune);
        rt.block_on(m.store(&id, &key(0))).unwrap();
        rt.block_on(m.get(&id)).unwrap();
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(m.get(&id).await.unwrap()) })
        });
        rt.block_on(m.shutdown()).unwrap();
    }
    group.finish();
}

/// 100,000 gets of 50 keys from 8 tasks, then `shutdown()` (every row written), with the
/// facade's default settings; the same with one row per hit. Each sample is a fresh
/// database. Reported as gets per second, the shutdown included.
fn burst(c: &mut Criterion) {
    const KEYS: usize = 50;
    const TASKS: usize = 8;
    const GETS: usize = 100_000;
    let rt = Runtime::new().unwrap();
    let ids: Vec<KeyIdentity> = (0..KEYS)
        .map(|i| KeyIdentity::from_parts("burst", Some(&format!("u{i}")), None).unwrap())
        .collect();
    let variants: [Variant; 2] = [
        ("100000_gets_then_shutdown", |_| {}),
        ("100000_gets_then_shutdown_every_hit", |s| {
            s.audit.every_hit = true;
            s.audit.max_pending = 200_000;
        }),
    ];
    let mut group = c.benchmark_group("burst");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(GETS as u64));
    for (name, tune) in variants {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_dir, m) = facade(&rt, tune);
                    rt.block_on(async {
                        for (i, id) in ids.iter().enumerate() {
                            m.store(id, &key(i)).await.unwrap();
                        }
                        m.flush().await.unwrap();
                    });
                    let start = Instant::now();
                    rt.block_on(async {
                        let mut tasks = tokio::task::JoinSet::new();
                        for t in 0..TASKS {
                            let (m, ids) = (m.clone(), ids.clone());
                            tasks.spawn(async move {
                                for i in 0..GETS / TASKS {
                                    black_box(m.get(&ids[(t + i) % KEYS]).await.unwrap());
                                }
                            });
                        }
                        while let Some(done) = tasks.join_next().await {
                            done.unwrap();
                        }
                        m.shutdown().await.unwrap();
                    });
                    total += start.elapsed();
                    let rows = rt
                        .block_on(m.audit_records(&AuditFilter::default()))
                        .unwrap();
                    let gets: u64 = rows
                        .iter()
                        .filter(|r| r.event.operation == "get")
                        .map(|r| r.event.count)
                        .sum();
                    assert_eq!(gets, GETS as u64, "every get accounted for");
                }
                total
            })
        });
    }
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
                // Master key v2 is added to the file, then a new stack on the same files
                // (without the trail, like `env`) wraps under it.
                LocalKmsProvider::add_master_key_version(e.dir.path().join("master.key")).unwrap();
                rt.block_on(e.manager.shutdown()).unwrap();
                let m = manager(&rt, &settings_in(e.dir.path(), without_trail));
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

criterion_group!(keys, benches, audit, burst, rewrap);
criterion_main!(keys);
