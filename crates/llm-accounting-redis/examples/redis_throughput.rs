//! Throughput of one hot limit on the Redis engine: `--processes` processes of `--workers`
//! tasks each reserve against one global requests limit (database: one SQLite file shared
//! by the processes).
//!
//! ```text
//! cargo run --release -p llm-accounting-redis --example redis_throughput -- \
//!     --processes 4 --workers 4 --mode commit --max 20000
//! cargo run --release -p llm-accounting-redis --example redis_throughput -- \
//!     --processes 4 --workers 4 --mode release --seconds 5
//! ```
//!
//! `commit`: every reservation is committed (an event in the database) until the limit of
//! `--max` refuses; prints the rate and checks that exactly `--max` events were recorded
//! (zero overshoot). `release`: every reservation is released (Redis only), for `--seconds`;
//! prints the rate. Redis at `LLM_ACCOUNTING_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), logical database 12, a key prefix of its own.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use llm_accounting_redis::{RedisOptions, RedisUsageStore};
use llm_accounting_store::{SeaOrmUsageStore, StoreOptions};
use llm_accounting_usage::{
    LimitKind, NewLimit, QuotaRequest, ReserveOutcome, Scope, UsageEvent, UsageStore, Window,
    WindowUnit,
};

struct Args {
    processes: usize,
    workers: usize,
    mode: String,
    max: u64,
    seconds: u64,
    child: Option<(String, String, u128)>,
}

fn args() -> Args {
    let mut a = Args {
        processes: 4,
        workers: 4,
        mode: "commit".into(),
        max: 20_000,
        seconds: 5,
        child: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--processes" => a.processes = next.parse().expect("--processes N"),
            "--workers" => a.workers = next.parse().expect("--workers N"),
            "--mode" => a.mode = next,
            "--max" => a.max = next.parse().expect("--max N"),
            "--seconds" => a.seconds = next.parse().expect("--seconds N"),
            "--child" => {
                let parts: Vec<&str> = next.splitn(3, ',').collect();
                a.child = Some((
                    parts[0].to_owned(),
                    parts[1].to_owned(),
                    parts[2].parse().expect("start"),
                ));
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn redis_url() -> String {
    let url = std::env::var("LLM_ACCOUNTING_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    format!("{}/12", url.trim_end_matches('/'))
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

async fn open(db: &str, prefix: &str) -> (Arc<dyn UsageStore>, Arc<RedisUsageStore>) {
    let database: Arc<dyn UsageStore> = Arc::new(
        SeaOrmUsageStore::connect(
            db,
            &StoreOptions {
                create_if_missing: true,
                max_connections: 4,
                busy_timeout: Duration::from_secs(30),
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let store = RedisUsageStore::connect(
        &redis_url(),
        Arc::clone(&database),
        RedisOptions {
            prefix: prefix.to_owned(),
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap();
    (database, Arc::new(store))
}

/// One process: `workers` tasks from `start` (unix ms); prints `COUNT END_MS`.
async fn child(a: &Args, db: &str, prefix: &str, start: u128) {
    let (_database, store) = open(db, prefix).await;
    // Everyone starts together (after the slowest process has opened its connections).
    let wait = start.saturating_sub(unix_ms());
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = start + u128::from(a.seconds) * 1000;
    let mut tasks = Vec::new();
    for _ in 0..a.workers {
        let (store, count, mode) = (Arc::clone(&store), Arc::clone(&count), a.mode.clone());
        tasks.push(tokio::spawn(async move {
            let req = QuotaRequest::new("hot");
            loop {
                if mode == "release" && unix_ms() >= deadline {
                    return;
                }
                match store
                    .reserve(&req, Duration::from_secs(60), Utc::now())
                    .await
                {
                    Ok(ReserveOutcome::Reserved(r)) => {
                        if mode == "commit" {
                            store
                                .commit(r.id, &UsageEvent::new("hot", Utc::now()))
                                .await
                                .unwrap();
                        } else {
                            store.release(r.id).await.unwrap();
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(ReserveOutcome::Denied(_)) => return,
                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("{} {}", count.load(Ordering::Relaxed), unix_ms());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if let Some((db, prefix, start)) = &a.child {
        child(&a, db, prefix, *start).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("throughput.db").display());
    let prefix = format!("{{lla-throughput-{}}}", uuid::Uuid::new_v4().simple());
    let (database, _store) = open(&db, &prefix).await;
    let max = if a.mode == "commit" {
        a.max
    } else {
        1_000_000_000_000
    };
    let limit = database
        .add_limit(&NewLimit {
            scope: Scope::global(),
            kind: LimitKind::Requests,
            max,
            window: Window::fixed(WindowUnit::Day, 1).unwrap(),
        })
        .await
        .unwrap();
    let start = unix_ms() + 1_500;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..a.processes)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--workers",
                    &a.workers.to_string(),
                    "--mode",
                    &a.mode,
                    "--seconds",
                    &a.seconds.to_string(),
                    "--child",
                    &format!("{db},{prefix},{start}"),
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0u64;
    let mut end = start;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "a process failed");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts = text.split_whitespace();
        total += parts.next().unwrap().parse::<u64>().unwrap();
        end = end.max(parts.next().unwrap().parse().unwrap());
    }
    let secs = (end - start) as f64 / 1000.0;
    println!(
        "mode {}: {} processes x {} workers: {total} reservations in {secs:.2} s = {:.0}/s",
        a.mode,
        a.processes,
        a.workers,
        total as f64 / secs
    );
    if a.mode == "commit" {
        let now = Utc::now();
        let (since, until) = limit.window.bounds(now);
        let recorded = database
            .usage(&limit.scope, since, until, now)
            .await
            .unwrap()
            .amounts
            .requests;
        println!(
            "limit {max}: granted {total}, recorded {recorded}, overshoot {}",
            recorded.saturating_sub(max)
        );
        assert_eq!(recorded, max, "exactly the limit");
        assert_eq!(total, max);
    }
}
