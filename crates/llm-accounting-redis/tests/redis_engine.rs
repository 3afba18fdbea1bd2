//! The Redis engine against a real Redis and a real database: the usage conformance suite,
//! racing reservations, a race through a loss of Redis's data, an unreachable Redis.
//!
//! Each test uses its own key prefix (tests run in parallel in one logical database); the
//! test that flushes owns logical database 9 and is the only one to use it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use llm_accounting_core::ErrorKind;
use llm_accounting_redis::{RedisOptions, RedisUsageStore};
use llm_accounting_store::SeaOrmUsageStore;
use llm_accounting_testkit::services::redis_url;
use llm_accounting_testkit::{Backend, TestDatabase};
use llm_accounting_usage::{
    LimitKind, NewLimit, QuotaRequest, ReserveOutcome, Scope, UsageEvent, UsageStore, Window,
    WindowUnit, conformance,
};
use tokio::sync::RwLock;

/// `base` (the test server's URL) on logical database `n`.
fn on_db(base: &str, n: u8) -> String {
    let trimmed = base.trim_end_matches('/');
    let host_end = trimmed.find("://").map_or(0, |i| i + 3);
    let without_db = match trimmed[host_end..].find('/') {
        Some(i) => &trimmed[..host_end + i],
        None => trimmed,
    };
    format!("{without_db}/{n}")
}

fn options() -> RedisOptions {
    RedisOptions {
        prefix: format!("{{lla-test-{}}}", uuid::Uuid::new_v4().simple()),
        ..RedisOptions::default()
    }
}

async fn database(backend: Backend) -> Option<(TestDatabase, Arc<dyn UsageStore>)> {
    let db = TestDatabase::create(backend).await?;
    let mut options = db.options();
    options.max_connections = 16;
    let store = SeaOrmUsageStore::connect(db.url(), &options)
        .await
        .expect("connect");
    Some((db, Arc::new(store)))
}

/// A Redis engine over a fresh `backend` database, on logical database 8 with a prefix of
/// its own.
async fn engine(
    backend: Backend,
    test: &str,
) -> Option<(TestDatabase, Arc<dyn UsageStore>, Arc<RedisUsageStore>)> {
    let url = redis_url(test)?;
    let (db, database) = database(backend).await?;
    let store = RedisUsageStore::connect(&on_db(&url, 8), Arc::clone(&database), options())
        .await
        .expect("connect");
    Some((db, database, Arc::new(store)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_over_sqlite_conforms() {
    let Some((_db, _database, store)) = engine(Backend::Sqlite, "redis_over_sqlite_conforms").await
    else {
        return;
    };
    conformance::run(store).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_over_postgres_conforms() {
    let Some((_db, _database, store)) =
        engine(Backend::Postgres, "redis_over_postgres_conforms").await
    else {
        return;
    };
    conformance::run(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_reservations_race_without_overshoot() {
    let Some((_db, _database, store)) =
        engine(Backend::Sqlite, "redis_reservations_race_without_overshoot").await
    else {
        return;
    };
    for _ in 0..3 {
        conformance::racing_reservations_never_overshoot(
            Arc::clone(&store) as Arc<dyn UsageStore>,
            64,
        )
        .await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_over_postgres_reservations_race_without_overshoot() {
    let Some((_db, _database, store)) = engine(
        Backend::Postgres,
        "redis_over_postgres_reservations_race_without_overshoot",
    )
    .await
    else {
        return;
    };
    for _ in 0..3 {
        conformance::racing_reservations_never_overshoot(
            Arc::clone(&store) as Arc<dyn UsageStore>,
            64,
        )
        .await;
    }
}

/// Tasks reserve and commit until a limit refuses them, while Redis is flushed twice in the
/// middle: the limit is passed by at most the reservations in flight at each flush (the
/// documented bound), and afterwards the counters equal the database's sums.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flush_in_the_middle_of_a_race_is_bounded_and_rebuilt() {
    let test = "a_flush_in_the_middle_of_a_race_is_bounded_and_rebuilt";
    let Some(url) = redis_url(test) else {
        return;
    };
    let url = on_db(&url, 9);
    let Some((_db, database)) = database(Backend::Sqlite).await else {
        return;
    };
    let store = Arc::new(
        RedisUsageStore::connect(&url, Arc::clone(&database), options())
            .await
            .expect("connect"),
    );
    const MAX: u64 = 150;
    let limit = store
        .add_limit(&NewLimit {
            scope: Scope {
                model: Some("flush".into()),
                ..Scope::global()
            },
            kind: LimitKind::Requests,
            max: MAX,
            window: Window::fixed(WindowUnit::Day, 1).unwrap(),
        })
        .await
        .unwrap();
    let committed = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Reservations are granted under the read side; a flush takes the write side, so that
    // `in_flight` is exact at the flush.
    let gate = Arc::new(RwLock::new(()));
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let (store, committed, in_flight, gate) = (
            Arc::clone(&store),
            Arc::clone(&committed),
            Arc::clone(&in_flight),
            Arc::clone(&gate),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let held = {
                    let _g = gate.read().await;
                    match store
                        .reserve(
                            &QuotaRequest::new("flush"),
                            Duration::from_secs(600),
                            Utc::now(),
                        )
                        .await
                    {
                        Ok(ReserveOutcome::Reserved(r)) => {
                            in_flight.fetch_add(1, Ordering::SeqCst);
                            r
                        }
                        Ok(ReserveOutcome::Denied(_)) => return,
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => panic!("reserve: {e}"),
                    }
                };
                // The call takes a moment.
                tokio::time::sleep(Duration::from_millis(1 + i % 5)).await;
                store
                    .commit(held.id, &UsageEvent::new("flush", Utc::now()))
                    .await
                    .expect("commit");
                committed.fetch_add(1, Ordering::SeqCst);
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut bound = 0usize;
    for at in [40usize, 90] {
        while committed.load(Ordering::SeqCst) < at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _g = gate.write().await;
        let lost = in_flight.load(Ordering::SeqCst);
        redis::cmd("FLUSHDB")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        bound += lost;
        eprintln!("flushed with {lost} reservations in flight");
    }
    for t in tasks {
        t.await.unwrap();
    }
    let now = Utc::now();
    let (since, until) = limit.window.bounds(now);
    let in_db = database
        .usage(&limit.scope, since, until, now)
        .await
        .unwrap()
        .amounts
        .requests;
    assert!(in_db >= MAX, "the limit was reached ({in_db})");
    assert!(
        in_db <= MAX + bound as u64,
        "overshoot {} beyond the {bound} reservations in flight at the flushes",
        in_db - MAX
    );
    let counted = store.counted(&limit, now).await.unwrap();
    assert_eq!(
        counted.requests, in_db,
        "the rebuilt counters equal the database"
    );
    // And once more from nothing.
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.counted(&limit, now).await.unwrap().requests, in_db);
}

/// Unreachable Redis: calls fail with the unavailable kind (nothing recorded, no password
/// in any message); with the fallback the database engine answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_unavailable_or_falls_back() {
    let Some((_db, database)) = database(Backend::Sqlite).await else {
        return;
    };
    let url = "redis://:pa55word-never-shown@127.0.0.1:1/0";
    let store = RedisUsageStore::connect(url, Arc::clone(&database), options())
        .await
        .expect("lazy");
    assert!(!format!("{store:?}").contains("pa55word"));
    database
        .add_limit(&NewLimit {
            scope: Scope::global(),
            kind: LimitKind::Requests,
            max: 5,
            window: Window::fixed(WindowUnit::Day, 1).unwrap(),
        })
        .await
        .unwrap();
    let req = QuotaRequest::new("m");
    let e = store
        .reserve(&req, Duration::from_secs(60), Utc::now())
        .await
        .expect_err("Redis is down");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    let chain = llm_accounting_testkit::error_chain(&e);
    assert!(chain.contains("Redis"), "{chain}");
    assert!(!chain.contains("pa55word"), "{chain}");
    assert!(
        store
            .check(&req, Utc::now())
            .await
            .is_err_and(|e| e.kind() == ErrorKind::Unavailable)
    );
    assert!(
        database.tail(10).await.unwrap().is_empty(),
        "nothing recorded"
    );

    let fallback = RedisUsageStore::connect(
        url,
        Arc::clone(&database),
        RedisOptions {
            fallback: true,
            ..options()
        },
    )
    .await
    .unwrap();
    let ReserveOutcome::Reserved(r) = fallback
        .reserve(&req, Duration::from_secs(60), Utc::now())
        .await
        .unwrap()
    else {
        panic!("the database has room");
    };
    assert!(fallback.release(r.id).await.unwrap(), "released there");
    let ReserveOutcome::Reserved(r) = fallback
        .reserve(&req, Duration::from_secs(60), Utc::now())
        .await
        .unwrap()
    else {
        panic!("the database has room");
    };
    fallback
        .commit(r.id, &UsageEvent::new("m", Utc::now()))
        .await
        .unwrap();
    assert_eq!(database.tail(10).await.unwrap().len(), 1);
    assert!(
        !database.release(r.id).await.unwrap(),
        "the commit cleaned up the reservation the fallback made"
    );
}

/// A malformed URL is a configuration error that does not show the password.
#[tokio::test]
async fn a_bad_url_is_a_config_error_without_the_password() {
    let Some((_db, database)) = database(Backend::Sqlite).await else {
        return;
    };
    let e = RedisUsageStore::connect("rediss://:pa55word@host:6379", database, options())
        .await
        .expect_err("no TLS in this build");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!llm_accounting_testkit::error_chain(&e).contains("pa55word"));
}

/// A TCP proxy to Redis that can be cut and restored, to make Redis unreachable for a while.
struct Proxy {
    port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    upstream: String,
}

impl Proxy {
    async fn start(upstream: &str, port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let port = listener.local_addr().unwrap().port();
        let up = upstream.to_owned();
        let conns = Arc::new(std::sync::Mutex::new(
            Vec::<tokio::task::JoinHandle<()>>::new(),
        ));
        let accept = {
            let conns = Arc::clone(&conns);
            tokio::spawn(async move {
                let _conns = ConnsGuard(Arc::clone(&conns));
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let up = up.clone();
                    let h = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&up).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(h);
                }
            })
        };
        Proxy {
            port,
            tasks: vec![accept],
            upstream: upstream.to_owned(),
        }
    }

    /// Closes the listener and every connection through it.
    fn cut(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Aborts the proxied connections when the accept loop ends.
struct ConnsGuard(Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Drop for ConnsGuard {
    fn drop(&mut self) {
        for h in self.0.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// Usage recorded (through the fallback) while Redis could not be reached is counted once
/// Redis answers again: the counters that missed it are rebuilt from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_recorded_while_redis_was_away_counts_when_it_is_back() {
    let test = "usage_recorded_while_redis_was_away_counts_when_it_is_back";
    let Some(url) = redis_url(test) else {
        return;
    };
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.rsplit('@').next())
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let Some((_db, database)) = database(Backend::Sqlite).await else {
        return;
    };
    let mut proxy = Proxy::start(&host, 0).await;
    let port = proxy.port;
    let store = RedisUsageStore::connect(
        &format!("redis://127.0.0.1:{port}/8"),
        Arc::clone(&database),
        RedisOptions {
            fallback: true,
            ..options()
        },
    )
    .await
    .unwrap();
    let limit = store
        .add_limit(&NewLimit {
            scope: Scope::global(),
            kind: LimitKind::Requests,
            max: 3,
            window: Window::fixed(WindowUnit::Day, 1).unwrap(),
        })
        .await
        .unwrap();
    assert!(call(&store).await, "through Redis");
    proxy.cut();
    // Let the aborted connections close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        call(&store).await,
        "through the fallback while Redis is away"
    );
    let upstream = proxy.upstream.clone();
    let _back = Proxy::start(&upstream, port).await;
    // The reconnecting client may need a moment.
    let mut counted = Err(String::new());
    for _ in 0..100 {
        match store.counted(&limit, Utc::now()).await {
            Ok(c) => {
                counted = Ok(c.requests);
                break;
            }
            Err(e) => {
                counted = Err(llm_accounting_testkit::error_chain(&e));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(counted, Ok(2), "the missed commit counts");
    assert!(call(&store).await, "the third fits");
    assert!(!call(&store).await, "the fourth does not");
    assert_eq!(database.tail(10).await.unwrap().len(), 3);
}

/// One call: reserve, then commit; whether it was allowed.
async fn call(store: &RedisUsageStore) -> bool {
    match store
        .reserve(&QuotaRequest::new("m"), Duration::from_secs(60), Utc::now())
        .await
        .unwrap()
    {
        ReserveOutcome::Reserved(r) => {
            store
                .commit(r.id, &UsageEvent::new("m", Utc::now()))
                .await
                .unwrap();
            true
        }
        ReserveOutcome::Denied(_) => false,
    }
}
