//! Local enforcement across processes: 4 processes race one limit on a shared SQLite file,
//! each at `RATE` calls per second (default 500), checking its own counters and
//! synchronising every `SYNC_MS` (default 100); prints how far they passed the limit
//! together (the bound is (processes − 1) × rate × interval).
//!
//! `cargo bench -p llm-accounting-store --bench local_overshoot`
//! (`RATE=0`: as fast as they can.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use llm_accounting_store::{SeaOrmUsageStore, StoreOptions};
use llm_accounting_usage::{
    GroupBy, LimitKind, LocalQuota, NewLimit, QuotaRequest, RecorderOptions, Scope, StatsQuery,
    UsageEvent, UsageRecorder, UsageStore, Window, WindowUnit,
};

const PROCESSES: usize = 4;
const LIMIT: u64 = 1_000;
const WORKER: &str = "LLM_ACCOUNTING_BENCH_WORKER_DB";

async fn open(url: &str) -> Arc<dyn UsageStore> {
    let options = StoreOptions {
        create_if_missing: true,
        ..StoreOptions::default()
    };
    Arc::new(
        SeaOrmUsageStore::connect(url, &options)
            .await
            .expect("open"),
    )
}

/// One process: reserve and commit at `rate` per second (0: as fast as it can) for 3 s;
/// prints its count.
async fn worker(url: &str, sync: Duration, rate: u64) {
    let store = open(url).await;
    let recorder = UsageRecorder::start(Arc::clone(&store), RecorderOptions::default());
    let quota = LocalQuota::start(store, recorder, sync)
        .await
        .expect("start");
    let request = QuotaRequest::new("race");
    let started = Instant::now();
    let mut allowed = 0u64;
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        calls += 1;
        if let Some(due) = (calls * 1_000_000)
            .checked_div(rate)
            .map(Duration::from_micros)
            && let Some(wait) = due.checked_sub(started.elapsed())
        {
            tokio::time::sleep(wait).await;
        }
        match quota.reserve(&request) {
            Ok(r) => {
                quota
                    .commit(r, UsageEvent::new("race", Utc::now()))
                    .await
                    .expect("commit");
                allowed += 1;
            }
            Err(_) if rate == 0 => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(_) => {}
        }
    }
    quota.shutdown().await.expect("flush");
    println!("{allowed}");
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sync = Duration::from_millis(
        std::env::var("SYNC_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100),
    );
    let rate: u64 = std::env::var("RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    if let Ok(url) = std::env::var(WORKER) {
        rt.block_on(worker(&url, sync, rate));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("race.db").display());
    let store = rt.block_on(open(&url));
    rt.block_on(store.add_limit(&NewLimit {
        scope: Scope::global(),
        kind: LimitKind::Requests,
        max: LIMIT,
        window: Window::fixed(WindowUnit::Day, 1).expect("window"),
    }))
    .expect("limit");
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(&exe)
                .env(WORKER, &url)
                .env("SYNC_MS", sync.as_millis().to_string())
                .env("RATE", rate.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let per: Vec<u64> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    let rows = rt
        .block_on(store.stats(&StatsQuery {
            since: None,
            until: None,
            by: GroupBy::Nothing,
            top: None,
        }))
        .expect("stats");
    let total = rows.first().map_or(0, |r| r.requests);
    println!(
        "local enforcement, {PROCESSES} processes at {rate}/s each, sync every {} ms, limit \
         {LIMIT} requests: allowed {per:?} = {total} in the database; overshoot {} ({:.1}%), \
         bound (processes - 1) x rate x interval = {}",
        sync.as_millis(),
        total.saturating_sub(LIMIT),
        total.saturating_sub(LIMIT) as f64 * 100.0 / LIMIT as f64,
        (PROCESSES as u64 - 1) * rate * u64::try_from(sync.as_millis()).unwrap_or(0) / 1000
    );
}
