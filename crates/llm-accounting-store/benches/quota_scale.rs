//! Strict quotas at volume (issue 21's figures), printed as a table:
//!
//! - `flat`: one global limit (requests per day); the latency of a strict reservation plus
//!   its commit (p50, p99) with 0 events in today's window, then with `QUOTA_SCALE_EVENTS`
//!   (default 10,000,000) events inserted in bulk into it, on SQLite and PostgreSQL (and
//!   MySQL/MariaDB with `QUOTA_SCALE_MYSQL=1`). The ratio of the two p50s shows whether a
//!   check costs the same whatever the window holds.
//! - `stats`: `usage stats` over a month of `QUOTA_SCALE_EVENTS` events on SQLite (total,
//!   by model, by user), read from the hourly rollups; then the month's usage report
//!   (`usage report`: gathered and drawn) and the size of its page. `QUOTA_SCALE_ONLY=stats`
//!   runs this part alone.
//! - `race`: one hot global limit; 4 processes × 4 workers reserve and commit until it is
//!   spent; the reservations per second, and the overshoot (must be 0). On PostgreSQL the
//!   same run measures `pgbench -c 16` with a transaction that updates one row and inserts
//!   one (the physical limit of a reservation: it must write at least that).
//!
//! `cargo bench -p llm-accounting-store --features postgres,mysql --bench quota_scale`
//! (servers at `LLM_ACCOUNTING_TEST_POSTGRES_URL` / `_MYSQL_URL`, as the tests). Smoke test in
//! a debug build with fewer events: `QUOTA_SCALE_EVENTS=10000 cargo test -p
//! llm-accounting-store --all-features --bench quota_scale`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use llm_accounting_store::{SeaOrmKeyRepository, SeaOrmUsageStore, StoreOptions};
use llm_accounting_testkit::{Backend, TestDatabase};
use llm_accounting_usage::{
    GroupBy, LimitKind, NewLimit, QuotaRequest, ReserveOutcome, Scope, StatsQuery, UsageEvent,
    UsageStore, Window, WindowUnit,
};
use sea_orm::ConnectionTrait;

/// Reservations measured per latency figure.
const SAMPLES: usize = 2_000;

/// Past the settling time of a new limit (its counters are stored from then on).
fn later() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(15)
}

fn events_wanted() -> u64 {
    std::env::var("QUOTA_SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

async fn open(url: &str, options: &StoreOptions) -> SeaOrmUsageStore {
    SeaOrmUsageStore::connect(url, options)
        .await
        .expect("connect")
}

async fn global_limit(store: &SeaOrmUsageStore, max: u64) {
    store
        .add_limit(&NewLimit {
            scope: Scope::global(),
            kind: LimitKind::Requests,
            max,
            window: Window::fixed(WindowUnit::Day, 1).expect("window"),
        })
        .await
        .expect("limit");
}

/// One strict reservation and its commit; whether it was granted.
async fn reserve_commit(store: &SeaOrmUsageStore, now: DateTime<Utc>) -> bool {
    let request = QuotaRequest::new("gpt-4o")
        .user(Some("alice"))
        .tokens(100, 20);
    match store
        .reserve(&request, Duration::from_secs(60), now)
        .await
        .expect("reserve")
    {
        ReserveOutcome::Reserved(r) => {
            let e = UsageEvent::new("gpt-4o", now).user("alice").tokens(100, 20);
            store.commit(r.id, &e).await.expect("commit");
            true
        }
        ReserveOutcome::Denied(_) => false,
    }
}

/// p50 and p99 of `SAMPLES` reservations with commits.
async fn latencies(store: &SeaOrmUsageStore) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let now = later();
        let started = Instant::now();
        assert!(reserve_commit(store, now).await, "the limit has room");
        took.push(started.elapsed());
    }
    took.sort();
    (took[SAMPLES / 2], took[SAMPLES * 99 / 100])
}

/// Inserts `n` events in today's window (before now).
async fn fill(repo: &SeaOrmKeyRepository, backend: Backend, n: u64) {
    let now = Utc::now();
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    fill_span(repo, backend, n, today, now).await;
}

/// Inserts `n` events spread over `[from, to)`, with one statement per million: models and
/// users vary (4 models, 100 users).
async fn fill_span(
    repo: &SeaOrmKeyRepository,
    backend: Backend,
    n: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    if n == 0 {
        return;
    }
    let db = repo.connection();
    let start = from.timestamp_micros();
    let span = (to.timestamp_micros() - start).max(1);
    let columns = "at_us, model, service, user_id, project, caller, session, key_identity, \
                   key_version, prompt_tokens, completion_tokens, cached_tokens, \
                   reasoning_tokens, cost_micros, execution_us";
    let (concat, model) = match backend {
        Backend::MySql => (
            "CONCAT('user', x % 100)".to_owned(),
            "ELT(1 + x % 4, 'gpt-4o', 'gpt-4o-mini', 'claude', 'o3')".to_owned(),
        ),
        _ => (
            "'user' || (x % 100)".to_owned(),
            "CASE x % 4 WHEN 0 THEN 'gpt-4o' WHEN 1 THEN 'gpt-4o-mini' WHEN 2 THEN 'claude' \
             ELSE 'o3' END"
                .to_owned(),
        ),
    };
    if backend == Backend::MySql {
        db.execute_unprepared("SET SESSION cte_max_recursion_depth = 100000000")
            .await
            .ok();
    }
    let chunk = 1_000_000u64;
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        let values = format!(
            "{start} + (({done} + x) * {span}) / {n}, {model}, 'openai', {concat}, NULL, NULL, \
             NULL, NULL, NULL, 100, 20, 0, 0, 1000, NULL"
        );
        let sql = match backend {
            Backend::Postgres => format!(
                "INSERT INTO usage_events ({columns}) SELECT {values} \
                 FROM generate_series(0::bigint, {}) AS g(x)",
                k - 1
            ),
            _ => format!(
                "INSERT INTO usage_events ({columns}) WITH RECURSIVE c(x) AS \
                 (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < {}) SELECT {values} FROM c",
                k - 1
            ),
        };
        db.execute_unprepared(&sql).await.expect("bulk insert");
        done += k;
    }
}

/// A fresh database with one global limit and `n` events in today's window (inserted
/// before the limit's counters exist: the first reservation builds them).
async fn with_events(backend: Backend, n: u64) -> Option<(TestDatabase, SeaOrmUsageStore)> {
    let db = TestDatabase::create(backend).await?;
    let repo = SeaOrmKeyRepository::connect(db.url(), &db.options())
        .await
        .expect("open");
    let store = repo.usage_store().await.expect("usage store");
    global_limit(&store, 1_000_000_000_000).await;
    fill(&repo, backend, n).await;
    Some((db, store))
}

async fn flat(backend: Backend, n: u64) {
    let Some((_empty_db, empty)) = with_events(backend, 0).await else {
        return;
    };
    assert!(reserve_commit(&empty, later()).await);
    let (empty50, empty99) = latencies(&empty).await;
    let started = Instant::now();
    let Some((_full_db, full)) = with_events(backend, n).await else {
        return;
    };
    let filled = started.elapsed();
    let started = Instant::now();
    assert!(reserve_commit(&full, later()).await);
    let first = started.elapsed();
    let (full50, full99) = latencies(&full).await;
    println!(
        "flat {backend:<8} reserve+commit p50 {:>7.3} ms p99 {:>7.3} ms at 0 events; \
         p50 {:>7.3} ms p99 {:>7.3} ms at {n} events ({:.2}x); counters built once in {:.2?} \
         (bulk insert {:.1?})",
        ms(empty50),
        ms(empty99),
        ms(full50),
        ms(full99),
        full50.as_secs_f64() / empty50.as_secs_f64(),
        first,
        filled,
    );
}

/// `usage stats` for a month holding `n` events (spread over the month), grouped by
/// nothing, model and user: the median of 20 runs, after the rollups of events written
/// before them were built (that one-off cost is printed too).
async fn stats(backend: Backend, n: u64) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let repo = SeaOrmKeyRepository::connect(db.url(), &db.options())
        .await
        .expect("open");
    let month = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("june");
    let next = Utc
        .with_ymd_and_hms(2026, 7, 1, 0, 0, 0)
        .single()
        .expect("july");
    fill_span(&repo, backend, n, month, next).await;
    // As a database upgraded from a release without rollups: they are built at open.
    repo.connection()
        .execute_unprepared("DELETE FROM usage_counter_marks WHERE name = 'usage_rollups'")
        .await
        .expect("unmark");
    repo.connection()
        .execute_unprepared("DELETE FROM usage_rollups")
        .await
        .expect("forget");
    let started = Instant::now();
    let store = repo.usage_store().await.expect("usage store");
    let built = started.elapsed();
    let mut line = format!("stats    {backend:<8} a month of {n} events:");
    for (name, by) in [
        ("total", GroupBy::Nothing),
        ("by model", GroupBy::Model),
        ("by user", GroupBy::User),
    ] {
        let q = StatsQuery {
            since: Some(month),
            until: Some(next),
            by,
            top: None,
        };
        let mut took = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let rows = store.stats(&q).await.expect("stats");
            took.push(started.elapsed());
            assert!(!rows.is_empty());
        }
        took.sort();
        line.push_str(&format!(" {name} {:.2} ms;", ms(took[10])));
    }
    println!("{line} rollups built once in {built:.1?}");
    // The usage report of that month (issue 25): gathered and drawn, median of 5.
    let query = llm_accounting_report::ReportQuery {
        since: month,
        until: next,
        by: GroupBy::Model,
        now: next,
    };
    let mut took = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let report = llm_accounting_report::gather(&store, None, &query)
            .await
            .expect("report");
        let page = llm_accounting_report::page(&report, &Default::default());
        took.push(started.elapsed());
        assert_eq!(report.totals.requests, n);
        bytes = page.len();
    }
    took.sort();
    println!(
        "report   {backend:<8} a month of {n} events: gathered and drawn in {:.1} ms (median of \
         5); the page is {} KiB",
        ms(took[2]),
        bytes.div_ceil(1024)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// The worker side of `race`: `workers` tasks reserve and commit until denied; prints how
/// many were granted.
fn worker(url: &str, workers: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let granted = rt.block_on(async {
        let options = StoreOptions {
            max_connections: u32::try_from(workers).unwrap_or(4),
            ..StoreOptions::default()
        };
        let store = Arc::new(open(url, &options).await);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let mut n = 0u64;
                while reserve_commit(&store, later()).await {
                    n += 1;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(n) = tasks.join_next().await {
            total += n.expect("worker");
        }
        total
    });
    println!("{granted}");
}

async fn race(backend: Backend, max: u64) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open(db.url(), &db.options()).await;
    global_limit(&store, max).await;
    // Past the limit's settling time, as the workers' clocks are.
    assert!(reserve_commit(&store, later()).await);
    let exe = std::env::current_exe().expect("this bench");
    let started = Instant::now();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args(["--quota-scale-worker", db.url(), "4"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("worker process")
        })
        .collect();
    let mut granted = 1u64;
    for c in children {
        let out = c.wait_with_output().expect("worker");
        assert!(out.status.success(), "a worker failed");
        granted += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .expect("a count");
    }
    let elapsed = started.elapsed();
    let rate = (granted - 1) as f64 / elapsed.as_secs_f64();
    let peer = if backend == Backend::Postgres {
        pgbench(db.url())
            .map(|tps| {
                format!(
                    "; pgbench -c 16 (update 1 row + insert 1): {tps:.0} tx/s, ratio {:.2}",
                    rate / tps
                )
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    println!(
        "race {backend:<8} 4 processes x 4 workers: {granted} granted of {max} (overshoot {}), \
         {rate:.0} reservations/s{peer}",
        granted.saturating_sub(max)
    );
    assert_eq!(granted, max, "every unit granted, none more");
}

/// Transactions per second of `pgbench -c 16 -j 2 -T 10` running a transaction that updates
/// one row and inserts one, on the database of `url`.
fn pgbench(url: &str) -> Option<f64> {
    let script = std::env::temp_dir().join(format!("quota-scale-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "BEGIN;\nUPDATE pgbench_peer SET n = n + 1 WHERE id = 1;\n\
         INSERT INTO pgbench_peer_log (at) VALUES (now());\nCOMMIT;\n",
    )
    .ok()?;
    let psql = |sql: &str| {
        Command::new("psql")
            .args([url, "-q", "-c", sql])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !psql(
        "CREATE TABLE IF NOT EXISTS pgbench_peer (id int primary key, n bigint); \
         INSERT INTO pgbench_peer VALUES (1, 0) ON CONFLICT DO NOTHING; \
         CREATE TABLE IF NOT EXISTS pgbench_peer_log (id bigserial primary key, at timestamptz)",
    ) {
        return None;
    }
    let out = Command::new("pgbench")
        .args(["-n", "-c", "16", "-j", "2", "-T", "10", "-f"])
        .arg(&script)
        .arg(url)
        .output()
        .ok()?;
    std::fs::remove_file(&script).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--quota-scale-worker") {
        worker(&args[i + 1], args[i + 2].parse().expect("workers"));
        return;
    }
    // `cargo test --bench` runs this too: keep that run small.
    let smoke = !args.iter().any(|a| a == "--bench");
    let n = if smoke { 10_000 } else { events_wanted() };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // `QUOTA_SCALE_ONLY=stats`: the statistics and the report alone.
    if std::env::var("QUOTA_SCALE_ONLY").is_ok_and(|v| v == "stats") {
        rt.block_on(stats(Backend::Sqlite, n));
        return;
    }
    let mut backends = vec![Backend::Sqlite, Backend::Postgres];
    if std::env::var_os("QUOTA_SCALE_MYSQL").is_some() {
        backends.push(Backend::MySql);
    }
    for backend in backends.iter().copied() {
        if Backend::all().contains(&backend) {
            rt.block_on(flat(backend, n));
        }
    }
    for backend in backends.iter().copied() {
        if Backend::all().contains(&backend) {
            rt.block_on(race(backend, if smoke { 200 } else { 5_000 }));
        }
    }
    rt.block_on(stats(Backend::Sqlite, n));
}
