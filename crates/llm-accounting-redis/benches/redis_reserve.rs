//! Strict reserve + commit (and reserve + release, the Redis part alone) on the Redis engine (database: SQLite), one global limit, with 0
//! and with many events already in the window: the time should not depend on the events.
//!
//! ```text
//! cargo bench -p llm-accounting-redis --bench redis_reserve -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! Redis at `LLM_ACCOUNTING_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`, logical
//! database 12, a key prefix of its own). `LLM_ACCOUNTING_BENCH_EVENTS` sets the number of
//! events of the full window (default 1,000,000; 1,000 when run as a test).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use llm_accounting_redis::{RedisOptions, RedisUsageStore};
use llm_accounting_store::{SeaOrmUsageStore, StoreOptions};
use llm_accounting_usage::{
    Limit, LimitKind, NewLimit, QuotaRequest, ReserveOutcome, Scope, UsageEvent, UsageStore,
    Window, WindowUnit,
};

fn redis_url() -> Option<String> {
    let url = std::env::var("LLM_ACCOUNTING_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let host = url.split("://").nth(1)?.split('/').next()?.to_owned();
    std::net::TcpStream::connect(host).ok()?;
    Some(format!("{}/12", url.trim_end_matches('/')))
}

async fn setup(
    dir: &std::path::Path,
    events: u64,
) -> (Arc<RedisUsageStore>, Arc<dyn UsageStore>, Limit) {
    let path = dir.join(format!("bench-{events}.db"));
    let options = StoreOptions {
        create_if_missing: true,
        max_connections: 8,
        ..StoreOptions::default()
    };
    let database: Arc<dyn UsageStore> = Arc::new(
        SeaOrmUsageStore::connect(&format!("sqlite://{}", path.display()), &options)
            .await
            .unwrap(),
    );
    let limit = database
        .add_limit(&NewLimit {
            scope: Scope::global(),
            kind: LimitKind::Requests,
            max: 100_000_000_000,
            window: Window::fixed(WindowUnit::Day, 1).unwrap(),
        })
        .await
        .unwrap();
    // Today's window, filled in bulk through the database (as other writers would).
    let now = Utc::now();
    let (day_start, _) = limit.window.bounds(now);
    let span = (now - day_start).num_milliseconds().max(1);
    let mut left = events;
    let mut i: i64 = 0;
    while left > 0 {
        let n = left.min(50_000);
        let batch: Vec<UsageEvent> = (0..n)
            .map(|_| {
                i += 1;
                UsageEvent::new(
                    "gpt-4o",
                    day_start + chrono::Duration::milliseconds(i % span),
                )
                .user("alice")
                .tokens(100, 20)
            })
            .collect();
        database.insert_events(&batch).await.unwrap();
        left -= n;
    }
    let store = RedisUsageStore::connect(
        &redis_url().unwrap(),
        Arc::clone(&database),
        RedisOptions {
            prefix: format!("{{lla-bench-{}}}", uuid::Uuid::new_v4().simple()),
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap();
    (Arc::new(store), database, limit)
}

async fn reserve_commit(store: &RedisUsageStore) {
    let req = QuotaRequest::new("gpt-4o")
        .user(Some("alice"))
        .tokens(100, 20);
    let ReserveOutcome::Reserved(r) = store
        .reserve(&req, Duration::from_secs(60), Utc::now())
        .await
        .unwrap()
    else {
        panic!("room");
    };
    let event = UsageEvent::new("gpt-4o", Utc::now())
        .user("alice")
        .tokens(100, 20);
    store.commit(r.id, &event).await.unwrap();
}

/// The Redis part alone: reserve, then release (no database write).
async fn reserve_release(store: &RedisUsageStore) {
    let req = QuotaRequest::new("gpt-4o")
        .user(Some("alice"))
        .tokens(100, 20);
    let ReserveOutcome::Reserved(r) = store
        .reserve(&req, Duration::from_secs(60), Utc::now())
        .await
        .unwrap()
    else {
        panic!("room");
    };
    assert!(store.release(r.id).await.unwrap());
}

fn bench(c: &mut Criterion) {
    if redis_url().is_none() {
        eprintln!("*** SKIPPED redis_reserve: Redis is not reachable ***");
        return;
    }
    let full = if std::env::args().any(|a| a == "--bench") {
        std::env::var("LLM_ACCOUNTING_BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    } else {
        1_000
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("redis_reserve");
    for events in [0, full] {
        let (store, _database, _limit) = rt.block_on(setup(dir.path(), events));
        // The first call builds the counters from the database (once).
        let built = std::time::Instant::now();
        rt.block_on(reserve_commit(&store));
        eprintln!(
            "counters built from {events} events in {:?}",
            built.elapsed()
        );
        group.bench_function(format!("reserve+commit/events={events}"), |b| {
            b.to_async(&rt).iter(|| reserve_commit(&store));
        });
        group.bench_function(format!("reserve+release/events={events}"), |b| {
            b.to_async(&rt).iter(|| reserve_release(&store));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
