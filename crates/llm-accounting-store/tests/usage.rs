//! The usage-store conformance suite on SQLite, PostgreSQL and MySQL/MariaDB, and strict
//! reservations racing from many tasks on each.

use std::sync::Arc;

use llm_accounting_store::SeaOrmUsageStore;
use llm_accounting_testkit::{Backend, TestDatabase};
use llm_accounting_usage::{UsageStore, conformance};

async fn store(backend: Backend) -> Option<(TestDatabase, Arc<dyn UsageStore>)> {
    let db = TestDatabase::create(backend).await?;
    let mut options = db.options();
    options.max_connections = 16;
    let store = SeaOrmUsageStore::connect(db.url(), &options)
        .await
        .expect("connect");
    Some((db, Arc::new(store)))
}

async fn conforms(backend: Backend) {
    let Some((_db, store)) = store(backend).await else {
        return;
    };
    conformance::run(store).await;
}

async fn race(backend: Backend) {
    let Some((_db, store)) = store(backend).await else {
        return;
    };
    for _ in 0..3 {
        conformance::racing_reservations_never_overshoot(Arc::clone(&store), 64).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_usage_store_conforms() {
    conforms(Backend::Sqlite).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_usage_store_conforms() {
    conforms(Backend::Postgres).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_usage_store_conforms() {
    conforms(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_reservations_race_without_overshoot() {
    race(Backend::Sqlite).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_reservations_race_without_overshoot() {
    race(Backend::Postgres).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_reservations_race_without_overshoot() {
    race(Backend::MySql).await;
}

/// Events recorded from many tasks in the background are all written by `shutdown()`.
async fn recorder_loses_nothing(backend: Backend) {
    use llm_accounting_usage::{GroupBy, RecorderOptions, StatsQuery, UsageEvent, UsageRecorder};
    let Some((_db, store)) = store(backend).await else {
        return;
    };
    let recorder = UsageRecorder::start(
        Arc::clone(&store),
        RecorderOptions {
            max_pending: 500,
            max_batch: 1_500,
        },
    );
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let r = recorder.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..2_000u64 {
                let e = UsageEvent::new("m", chrono::Utc::now()).tokens(t, i);
                r.record(e).await.expect("queued");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    recorder.shutdown().await.expect("flushed");
    let rows = store
        .stats(&StatsQuery {
            since: None,
            until: None,
            by: GroupBy::Nothing,
            top: None,
        })
        .await
        .expect("stats");
    assert_eq!(rows[0].requests, 16_000, "{backend}");
    assert_eq!(
        rows[0].completion_tokens,
        8 * (1_999 * 2_000 / 2),
        "{backend}"
    );
    assert_eq!(recorder.failed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorder_loses_nothing_on_shutdown_on_every_database() {
    for backend in Backend::all() {
        recorder_loses_nothing(backend).await;
    }
}
