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
