//! Usage accounting on real databases:
//! - events/s written through the background recorder into SQLite and PostgreSQL;
//! - a month's statistics over 1,000,000 events on SQLite;
//! - one strict reservation (check every limit and hold, one transaction) plus its release.
//!
//! `cargo bench -p llm-accounting-store --features postgres,mysql --bench usage`
//! (servers at `LLM_ACCOUNTING_TEST_POSTGRES_URL` / `_MYSQL_URL`, as the tests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use llm_accounting_store::SeaOrmUsageStore;
use llm_accounting_testkit::{Backend, TestDatabase};
use llm_accounting_usage::{
    GroupBy, LimitKind, Money, NewLimit, QuotaRequest, RecorderOptions, ReserveOutcome, Scope,
    StatsQuery, UsageEvent, UsageRecorder, UsageStore, Window, WindowUnit,
};

const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude", "o3"];

/// Event `i`, `i` × `spacing_ms` after the start of June 2026.
fn event(i: u64, spacing_ms: u64) -> UsageEvent {
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("time");
    let at = start + chrono::Duration::milliseconds(i64::try_from(i * spacing_ms).expect("small"));
    let mut e = UsageEvent::new(MODELS[usize::try_from(i % 4).expect("small")], at)
        .service("openai")
        .user(format!("user{}", i % 100))
        .project(format!("project{}", i % 10))
        .caller("bench")
        .tokens(100 + i % 1000, 20 + i % 300)
        .cost(Money::from_micros(1_000 + i % 5_000));
    e.session = Some("s".into());
    e
}

async fn open(backend: Backend) -> Option<(TestDatabase, Arc<dyn UsageStore>)> {
    let db = TestDatabase::create(backend).await?;
    let store = SeaOrmUsageStore::connect(db.url(), &db.options())
        .await
        .expect("connect");
    Some((db, Arc::new(store)))
}

/// `n` events recorded and flushed; the time taken from the first record to the end of the
/// flush.
async fn record(store: &Arc<dyn UsageStore>, n: u64) -> Duration {
    let recorder = UsageRecorder::start(Arc::clone(store), RecorderOptions::default());
    let events: Vec<UsageEvent> = (0..n).map(|i| event(i, 1)).collect();
    let started = Instant::now();
    for e in events {
        recorder.record(e).await.expect("record");
    }
    recorder.shutdown().await.expect("flush");
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("usage");
    group.sample_size(10);

    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !Backend::all().contains(&backend) {
            continue;
        }
        let Some((_db, store)) = rt.block_on(open(backend)) else {
            continue;
        };
        group.throughput(criterion::Throughput::Elements(100_000));
        group.bench_function(format!("record 100,000 events, {backend}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rt.block_on(record(&store, 100_000));
                }
                total
            });
        });
    }
    group.throughput(criterion::Throughput::Elements(1));

    // A month's statistics over 1,000,000 events 2.5 s apart (June 2026 holds 1,036,800
    // such; the last ones spill into July).
    if let Some((_db, store)) = rt.block_on(open(Backend::Sqlite)) {
        rt.block_on(async {
            let all: Vec<u64> = (0..1_000_000).collect();
            for chunk in all.chunks(50_000) {
                let events: Vec<UsageEvent> = chunk.iter().map(|i| event(*i, 2_500)).collect();
                store.insert_events(&events).await.expect("insert");
            }
        });
        let june = |by| StatsQuery {
            since: Some(
                Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
                    .single()
                    .expect("t"),
            ),
            until: Some(
                Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0)
                    .single()
                    .expect("t"),
            ),
            by,
            top: None,
        };
        for (name, by) in [
            ("total", GroupBy::Nothing),
            ("by model", GroupBy::Model),
            ("by user", GroupBy::User),
        ] {
            group.bench_function(
                format!("stats for a month of 1,000,000 events, {name}, sqlite"),
                |b| {
                    b.iter(|| rt.block_on(store.stats(&june(by))).expect("stats"));
                },
            );
        }
    }

    // A strict reservation and its release with 100 limits (10 of which apply).
    for backend in Backend::all() {
        let Some((_db, store)) = rt.block_on(open(backend)) else {
            continue;
        };
        rt.block_on(async {
            for i in 0..100u32 {
                let user = if i < 10 {
                    "alice".to_owned()
                } else {
                    format!("user{i}")
                };
                store
                    .add_limit(&NewLimit {
                        scope: Scope {
                            user: Some(user),
                            ..Scope::global()
                        },
                        kind: LimitKind::Requests,
                        max: 1_000_000_000,
                        window: Window::fixed(WindowUnit::Day, 1).expect("window"),
                    })
                    .await
                    .expect("limit");
            }
        });
        let request = QuotaRequest::new("gpt-4o").user(Some("alice"));
        group.bench_function(
            format!("strict reserve + release, 100 limits, {backend}"),
            |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let ReserveOutcome::Reserved(r) = store
                            .reserve(&request, Duration::from_secs(60), Utc::now())
                            .await
                            .expect("reserve")
                        else {
                            panic!("room");
                        };
                        store.release(r.id).await.expect("release");
                    });
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
