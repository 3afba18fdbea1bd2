//! In-process quota checks (`accounting.enforcement = "local"`) with 100 limits configured.
//!
//! `cargo bench -p llm-accounting-usage --bench quota`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use llm_accounting_usage::{
    LimitKind, LocalQuota, MemoryUsageStore, NewLimit, QuotaRequest, RecorderOptions, Scope,
    UsageRecorder, UsageStore, Window, WindowUnit,
};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let quota = rt.block_on(async {
        let store: Arc<dyn UsageStore> = Arc::new(MemoryUsageStore::new());
        // 100 limits: per user, per model, per project, a few global ones.
        for i in 0..100u64 {
            let scope = match i % 4 {
                0 => Scope {
                    user: Some(format!("user{i}")),
                    ..Scope::global()
                },
                1 => Scope {
                    model: Some(format!("model{i}")),
                    ..Scope::global()
                },
                2 => Scope {
                    project: Some(format!("project{i}")),
                    model: Some("gpt-4o".into()),
                    ..Scope::global()
                },
                _ => Scope::global(),
            };
            store
                .add_limit(&NewLimit {
                    scope,
                    kind: LimitKind::ALL[usize::try_from(i % 5).expect("small")],
                    max: 1_000_000_000,
                    window: Window::fixed(
                        WindowUnit::ALL[usize::try_from(i % 6).expect("small")],
                        1,
                    )
                    .expect("window"),
                })
                .await
                .expect("limit");
        }
        let recorder = UsageRecorder::start(Arc::clone(&store), RecorderOptions::default());
        LocalQuota::start(store, recorder, Duration::from_secs(3600))
            .await
            .expect("start")
    });
    let request = QuotaRequest::new("gpt-4o")
        .user(Some("user8"))
        .project(Some("project2"))
        .tokens(500, 200);
    let mut group = c.benchmark_group("quota");
    group.bench_function("local check, 100 limits", |b| {
        b.iter(|| std::hint::black_box(quota.check(std::hint::black_box(&request))));
    });
    // What `Accounting::check` adds before a local check.
    group.bench_function("request validation", |b| {
        b.iter(|| std::hint::black_box(std::hint::black_box(&request).validate()));
    });
    group.bench_function("local reserve+release, 100 limits", |b| {
        b.iter(|| {
            let r = quota.reserve(&request).expect("room");
            quota.release(r);
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
