//! The gateway's own cost, measured against a fake upstream in this process, on SQLite and on
//! PostgreSQL, with a strict quota (a requests limit of user `bench`) governing every call:
//!
//! - `overhead`: latency through the gateway minus latency straight to the fake (p50 and p99
//!   of each run; the difference of the two runs' percentiles), non-streamed chat
//!   completions at an open-loop 1,000 requests/s, and the distribution of the gateway's own
//!   `x-llm-accounting-gateway-ms` header.
//! - `ramp`: the highest rate (1,000, 1,500, 2,000, 3,000, ... requests/s; 750, 500, 300, ...
//!   when 1,000 fails) at which the gateway still achieves 95% of the target rate, with at
//!   most 1% errors and a p99 overhead of at most 5 ms; and, for reference, the highest rate
//!   the same generator reaches straight to the fake. Between runs the gateway is left to
//!   write the usage of every call answered, so that one run's commits do not load the next.
//! - `pacing`: the gaps between the chunks of 20 streams sending one every 10 ms, straight
//!   and through the gateway (nothing in the gateway should hold chunks back).
//! - `memory`: RSS idle, and with 1,000 `slow-stream` streams open at once (one chunk every
//!   100 ms for 10 s), through the gateway and straight to the fake, each in a fresh process
//!   (this binary again, with `--memory-worker`), so that the per-stream figure is not hidden
//!   by memory an earlier run freed. The generator's connections are in the same process:
//!   the gateway's own memory per stream is the gateway run's minus the direct run's.
//!
//! Setups: `sqlite` and `postgres` (strict enforcement, the figures asked for), and `local`
//! for reference (SQLite, `accounting.enforcement = "local"`: the quota checked in memory and
//! the usage written in batches, i.e. the gateway without a database write on its path).
//!
//! Latency is taken from when the generator hands a request to the runtime to the last byte
//! of its body, on one Tokio runtime shared by the generator, the gateway and the fake (so
//! the gateway's CPU time shows as latency, as it would on a busy host).
//!
//! ```text
//! cargo bench -p llm-accounting-gateway --bench overhead
//! ```
//!
//! `LLM_ACCOUNTING_BENCH_SECS` sets the seconds of each run (default 10);
//! `LLM_ACCOUNTING_BENCH_STREAMS` the open streams (default 1,000);
//! `LLM_ACCOUNTING_BENCH_SKIP_PG=1` skips PostgreSQL; `LLM_ACCOUNTING_BENCH_ONLY` (comma
//! separated: `sqlite`, `postgres`, `local`, `memory`, `direct`) runs only those parts;
//! `LLM_ACCOUNTING_BENCH_MAX_CONNECTIONS` sets `store.max_connections`. PostgreSQL is the
//! server of `LLM_ACCOUNTING_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, a throwaway database on it); unreachable, it is
//! skipped loudly, or fails with `LLM_ACCOUNTING_REQUIRE_SERVICES=1`. Run as a test (`cargo
//! test --bench overhead`, or the binary without `--bench`) it is a smoke run of a few
//! seconds.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use futures_util::StreamExt;
use llm_accounting::usage::{
    Enforcement, GroupBy, LimitKind, NewLimit, Scope, StatsQuery, Window, WindowUnit,
};
use llm_accounting::{Settings, Stack};
use llm_accounting_core::{ApiKey, KeyIdentity};
use llm_accounting_gateway::proxy::GATEWAY_TIME_HEADER;
use llm_accounting_gateway::{Gateway, GatewayConfig, NewVirtualKey, VirtualKeys};
use llm_accounting_testkit::{Backend, TestDatabase};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Target rates of the ramp, requests per second.
const RATES: &[u32] = &[
    1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_000, 16_000, 20_000, 24_000,
    32_000, 40_000, 48_000, 64_000,
];

/// Rates tried, going down, when the gateway fails the first of [`RATES`].
const LOWER_RATES: &[u32] = &[750, 500, 300, 200, 100, 50];

/// The most p99 overhead a ramp step may show.
const MAX_P99_OVERHEAD: Duration = Duration::from_millis(5);

/// The share of the target rate a ramp step must achieve.
const MIN_ACHIEVED: f64 = 0.95;

/// The share of failed requests a ramp step may have.
const MAX_ERRORS: f64 = 0.01;

/// The argument that makes this binary a memory worker.
const MEMORY_WORKER: &str = "--memory-worker";

/// The user of the virtual key and of the limit.
const USER: &str = "bench";

/// A new limit's counters are stored (and read) only this long after it was made; before,
/// each check sums the window's events. The measured runs start after it.
const LIMIT_SETTLE: Duration = Duration::from_secs(11);

/// Every non-streamed request: a priced model, so that no cost-limit lookup is needed.
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}"#;

/// Every slow stream.
const SLOW_STREAM: &str = r#"{"model":"slow-stream","stream":true,"messages":[{"role":"user","content":"Count slowly."}],"max_tokens":100}"#;

/// A short stream (warm-up of the streaming path).
const SHORT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi."}],"max_tokens":16}"#;

// ---------------------------------------------------------------------------------------------
// What a run does.

/// Durations and sizes of the whole run.
#[derive(Debug, Clone)]
struct Plan {
    /// A short run as a test (`cargo test --bench`): sizes cut down, no settling wait.
    smoke: bool,
    /// Each measured run.
    secs: Duration,
    /// Each warm-up.
    warm_up: Duration,
    /// Open streams of the memory figure.
    streams: usize,
    /// Target rates of the ramp.
    rates: Vec<u32>,
    /// The gateways measured.
    setups: Vec<Setup>,
    /// Whether to measure memory.
    memory: bool,
    /// Whether to find the generator's own highest rate.
    direct: bool,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        let secs = env_u64("LLM_ACCOUNTING_BENCH_SECS").unwrap_or(if smoke { 1 } else { 10 });
        let only = std::env::var("LLM_ACCOUNTING_BENCH_ONLY").unwrap_or_default();
        let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
        let mut setups: Vec<Setup> = SETUPS.iter().copied().filter(|s| wanted(s.name)).collect();
        if std::env::var("LLM_ACCOUNTING_BENCH_SKIP_PG").is_ok_and(|v| v == "1") {
            eprintln!("\n*** SKIPPED PostgreSQL: LLM_ACCOUNTING_BENCH_SKIP_PG=1 ***\n");
            setups.retain(|s| s.backend != Backend::Postgres);
        }
        Plan {
            smoke,
            secs: Duration::from_secs(secs.max(1)),
            warm_up: if smoke {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            },
            streams: env_u64("LLM_ACCOUNTING_BENCH_STREAMS")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(if smoke { 20 } else { 1_000 }),
            rates: if smoke {
                vec![200, 400]
            } else {
                RATES.to_vec()
            },
            setups,
            memory: wanted("memory"),
            direct: wanted("direct"),
        }
    }
}

/// A gateway configuration measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Setup {
    name: &'static str,
    backend: Backend,
    enforcement: Enforcement,
}

/// What is measured: strict quotas on each backend, and for reference `local` enforcement
/// (checked in memory, events written in batches: the gateway without a database write on
/// its path).
const SETUPS: &[Setup] = &[
    Setup {
        name: "sqlite",
        backend: Backend::Sqlite,
        enforcement: Enforcement::Strict,
    },
    Setup {
        name: "postgres",
        backend: Backend::Postgres,
        enforcement: Enforcement::Strict,
    },
    Setup {
        name: "local",
        backend: Backend::Sqlite,
        enforcement: Enforcement::Local,
    },
];

impl Setup {
    fn named(name: &str) -> Setup {
        *SETUPS
            .iter()
            .find(|s| s.name == name)
            .expect("a known setup")
    }

    /// Whether its quota is strict (the figures asked for); `local` is a reference.
    fn strict(&self) -> bool {
        self.enforcement == Enforcement::Strict
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The fake upstream.

/// The fake's non-streamed answer.
const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;

/// One content event of a stream.
const CHUNK_EVENT: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"slow-stream\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tick \"},\"finish_reason\":null}]}\n\n";

/// The usage event that ends a stream.
const USAGE_EVENT: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"slow-stream\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":100,\"total_tokens\":112}}\n\n";

/// Content events of a slow stream, and the time between events.
const SLOW_CHUNKS: u32 = 100;
const SLOW_EVERY: Duration = Duration::from_millis(100);

/// Content events of a fast stream (a fast model's tokens), and the time between events.
const FAST_CHUNKS: u32 = 100;
const FAST_EVERY: Duration = Duration::from_millis(10);

/// Every fast stream.
const FAST_STREAM: &str = r#"{"model":"fast-stream","stream":true,"messages":[{"role":"user","content":"Count quickly."}],"max_tokens":100}"#;

/// Fast streams open at once for the pacing figure.
const FAST_STREAMS: usize = 20;

/// `POST /v1/chat/completions` of the fake: the fixed completion, or a stream when asked
/// (`slow-stream`: [`SLOW_CHUNKS`] events [`SLOW_EVERY`] apart; `fast-stream`:
/// [`FAST_CHUNKS`] events [`FAST_EVERY`] apart; else three at once), ended by a usage event
/// and `data: [DONE]`.
async fn fake_chat(body: Bytes) -> Response {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    if !json["stream"].as_bool().unwrap_or(false) {
        return ([(header::CONTENT_TYPE, "application/json")], COMPLETION).into_response();
    }
    let (chunks, every) = match json["model"].as_str() {
        Some("slow-stream") => (SLOW_CHUNKS, SLOW_EVERY),
        Some("fast-stream") => (FAST_CHUNKS, FAST_EVERY),
        _ => (3, Duration::ZERO),
    };
    let events = futures_util::stream::unfold(0u32, move |i| async move {
        if i > chunks + 1 {
            return None;
        }
        if (1..=chunks).contains(&i) && !every.is_zero() {
            tokio::time::sleep(every).await;
        }
        let event = match i {
            i if i < chunks => CHUNK_EVENT,
            i if i == chunks => USAGE_EVENT,
            _ => "data: [DONE]\n\n",
        };
        Some((
            Ok::<_, Infallible>(Bytes::from_static(event.as_bytes())),
            i + 1,
        ))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

/// Starts the fake on 127.0.0.1 (a free port), Nagle off as providers' servers have it.
async fn start_fake() -> SocketAddr {
    let app = Router::new().route("/v1/chat/completions", post(fake_chat));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake upstream");
    let address = listener.local_addr().expect("the fake's address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("the fake upstream serves");
    });
    address
}

// ---------------------------------------------------------------------------------------------
// The gateway.

/// A gateway serving on 127.0.0.1, and what stops it.
struct RunningGateway {
    url: String,
    token: String,
    /// When the limit was made (measured runs wait for [`LIMIT_SETTLE`] after it).
    limit_made: Instant,
    stack: Arc<Stack>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<Result<(), llm_accounting_gateway::Error>>,
    // Dropped after the gateway has stopped.
    _dir: tempfile::TempDir,
    _db: Option<TestDatabase>,
}

/// Settings on the embedded defaults, but: the data directory (SQLite database and local
/// master key) in `dir`, the database at `database_url` if given, the enforcement of
/// `setup`, and upstream `openai` at the fake.
fn settings(
    setup: Setup,
    dir: &std::path::Path,
    database_url: Option<&str>,
    fake: SocketAddr,
) -> Settings {
    let mut s = Settings::default();
    s.data_dir = Some(dir.to_owned());
    s.database_url = database_url.map(str::to_owned);
    s.accounting.enforcement = setup.enforcement;
    if let Some(n) = env_u64("LLM_ACCOUNTING_BENCH_MAX_CONNECTIONS") {
        s.store.max_connections = u32::try_from(n).expect("a connection count");
    }
    s.gateway.listen = "127.0.0.1:0".to_owned();
    s.gateway
        .upstreams
        .get_mut("openai")
        .expect("an openai upstream in the defaults")
        .base_url = format!("http://{fake}/v1");
    s
}

/// Stores the provider key of `openai`, makes a virtual key for [`USER`] (its token is
/// returned) and a requests limit for [`USER`] that every call meets and none exceeds.
async fn provision(stack: &Stack) -> String {
    stack
        .manager()
        .store(
            &KeyIdentity::new("openai").expect("identity"),
            &ApiKey::new("sk-bench-FAKE-0000".to_owned()),
        )
        .await
        .expect("store the provider key");
    let (_, token) = VirtualKeys::open(Arc::clone(stack.repository()), stack.manager())
        .await
        .expect("open the virtual keys")
        .create(&NewVirtualKey::for_user(USER))
        .await
        .expect("make a virtual key");
    stack
        .accounting()
        .expect("the stack has accounting")
        .store()
        .add_limit(&NewLimit {
            scope: Scope {
                user: Some(USER.to_owned()),
                ..Scope::default()
            },
            kind: LimitKind::Requests,
            max: 1_000_000_000,
            window: Window::fixed(WindowUnit::Day, 1).expect("a window"),
        })
        .await
        .expect("add the limit");
    token.expose_secret().to_owned()
}

/// A gateway of `setup` in front of the fake, or `None` when PostgreSQL cannot be reached
/// (said loudly by the testkit; a failure with `LLM_ACCOUNTING_REQUIRE_SERVICES=1`).
async fn start_gateway(setup: Setup, fake: SocketAddr) -> Option<RunningGateway> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = match setup.backend {
        Backend::Sqlite => None,
        other => Some(TestDatabase::create(other).await?),
    };
    let settings = settings(setup, dir.path(), db.as_ref().map(TestDatabase::url), fake);
    let config = GatewayConfig::from_settings(&settings.gateway).expect("gateway settings");
    let stack = Arc::new(
        Stack::builder(&settings)
            .build()
            .await
            .expect("build the stack"),
    );
    let token = provision(&stack).await;
    let limit_made = Instant::now();
    let gateway = Gateway::new(config, Arc::clone(&stack))
        .await
        .expect("start the gateway");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the gateway");
    let address = listener.local_addr().expect("the gateway's address");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(llm_accounting_gateway::serve(gateway, listener, async {
        let _ = stopped.await;
    }));
    Some(RunningGateway {
        url: format!("http://{address}/v1/chat/completions"),
        token,
        limit_made,
        stack,
        stop,
        served,
        _dir: dir,
        _db: db,
    })
}

impl RunningGateway {
    /// The gateway as a target of the generator.
    fn target(&self) -> Target {
        Target::new("gateway", self.url.clone(), &self.token)
    }

    /// Waits until the limit's counters are in use.
    async fn settled(&self) {
        let ready = self.limit_made + LIMIT_SETTLE;
        tokio::time::sleep_until(ready.into()).await;
    }

    /// Calls accounted so far (committed usage events).
    async fn accounted(&self) -> u64 {
        let rows = self
            .stack
            .accounting()
            .expect("accounting")
            .store()
            .stats(&StatsQuery {
                since: None,
                until: None,
                by: GroupBy::Nothing,
                top: None,
            })
            .await
            .expect("usage statistics");
        rows.iter().map(|r| r.requests).sum()
    }

    /// Waits until the usage of every call answered has been written (no count changes for
    /// half a second), so that one run's commits do not load the next; the calls accounted.
    async fn quiesce(&self) -> u64 {
        let mut last = self.accounted().await;
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.accounted().await;
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    /// Stops the gateway (its usage written) and drops its database.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.served
            .await
            .expect("the gateway task")
            .expect("the gateway stops cleanly");
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator.

/// Where the generator sends requests.
#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    authorization: HeaderValue,
}

impl Target {
    fn new(name: &'static str, url: String, token: &str) -> Target {
        Target {
            name,
            url,
            authorization: HeaderValue::from_str(&format!("Bearer {token}"))
                .expect("a header value"),
        }
    }

    /// The fake itself.
    fn direct(fake: SocketAddr) -> Target {
        Target::new(
            "direct",
            format!("http://{fake}/v1/chat/completions"),
            "sk-bench-FAKE-0000",
        )
    }
}

/// The generator's client: keep-alive pool without a bound per host, Nagle off, HTTP/1.1
/// (as SDKs speak to a plain-HTTP gateway).
fn client(timeout: Option<Duration>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tcp_nodelay(true)
        .http1_only()
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().expect("the generator's client")
}

/// One request's outcome.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From hand-off to the runtime to the body's last byte.
    latency: Duration,
    /// The gateway's own time, from its header.
    gateway_ms: Option<f64>,
    ok: bool,
}

/// Sends `body` to `target` and reads the whole answer; the latency counts from `queued`.
async fn one(client: &reqwest::Client, target: &Target, body: Bytes, queued: Instant) -> Sample {
    let sent = client
        .post(&target.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, target.authorization.clone())
        .body(body)
        .send()
        .await;
    let Ok(response) = sent else {
        return Sample {
            latency: queued.elapsed(),
            gateway_ms: None,
            ok: false,
        };
    };
    let status = response.status();
    let gateway_ms = response
        .headers()
        .get(GATEWAY_TIME_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let read = response.bytes().await;
    Sample {
        latency: queued.elapsed(),
        gateway_ms,
        ok: status.is_success() && read.is_ok(),
    }
}

/// Percentiles of a run.
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// Of `values` (milliseconds; sorted here). Nearest rank.
    fn of(values: &mut [f64]) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = (q * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// What one open-loop run measured.
#[derive(Debug, Clone, Copy)]
struct RunStats {
    rate: u32,
    sent: usize,
    ok: usize,
    /// Successful requests per second, over the time to the last answer.
    achieved: f64,
    /// Latency of the successful requests, milliseconds.
    latency: Percentiles,
    /// The gateway's header, milliseconds (zeros for the fake).
    own: Percentiles,
}

impl RunStats {
    fn errors(&self) -> usize {
        self.sent - self.ok
    }

    /// Whether the run kept up: at least [`MIN_ACHIEVED`] of the target rate, at most
    /// [`MAX_ERRORS`] failed.
    fn kept_up(&self) -> bool {
        self.achieved >= MIN_ACHIEVED * f64::from(self.rate)
            && (self.errors() as f64) <= MAX_ERRORS * self.sent as f64
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<18} {:>6}/s achieved {:>8.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  \
             max {:>8.3} ms  errors {:>5}/{:<6}  header p50 {:>6.3} p99 {:>6.3} ms",
            self.rate,
            self.achieved,
            self.latency.p50,
            self.latency.p99,
            self.latency.max,
            self.errors(),
            self.sent,
            self.own.p50,
            self.own.p99,
        )
    }
}

/// Sends `body` to `target` at `rate` per second for `duration`, open loop: each request is
/// handed to the runtime at its time whether or not earlier ones were answered.
async fn open_loop(
    client: &reqwest::Client,
    target: &Target,
    body: &'static str,
    rate: u32,
    duration: Duration,
) -> RunStats {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let period = 1.0 / f64::from(rate);
    let body = Bytes::from_static(body.as_bytes());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 * period);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let (client, target, body) = (client.clone(), target.clone(), body.clone());
        let queued = Instant::now();
        tasks.push(tokio::spawn(async move {
            one(&client, &target, body, queued).await
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for t in tasks {
        samples.push(t.await.expect("a request task"));
    }
    let elapsed = start.elapsed();
    stats(rate, &samples, elapsed)
}

fn stats(rate: u32, samples: &[Sample], elapsed: Duration) -> RunStats {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
    let mut latency: Vec<f64> = ok.iter().map(|s| ms(s.latency)).collect();
    let mut own: Vec<f64> = ok.iter().filter_map(|s| s.gateway_ms).collect();
    RunStats {
        rate,
        sent: samples.len(),
        ok: ok.len(),
        achieved: ok.len() as f64 / elapsed.as_secs_f64(),
        latency: Percentiles::of(&mut latency),
        own: Percentiles::of(&mut own),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// One request to `target` must be answered with the fake's completion (a setup error
/// otherwise: the gateway's refusal is shown).
async fn check_answer(client: &reqwest::Client, target: &Target) {
    let r = client
        .post(&target.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, target.authorization.clone())
        .body(CHAT)
        .send()
        .await
        .expect("a first request");
    let status = r.status();
    let text = r.text().await.expect("a first answer");
    assert!(
        status.is_success() && text.contains("chatcmpl-bench"),
        "{}: {status} {text}",
        target.name
    );
}

/// One rate straight to the fake, then through the gateway; then waits until the gateway
/// has written the usage of every call, so that its commits do not load the next run.
async fn pair(
    client: &reqwest::Client,
    direct: &Target,
    gw: &RunningGateway,
    rate: u32,
    duration: Duration,
) -> Pair {
    let d = open_loop(client, direct, CHAT, rate, duration).await;
    println!("{}", d.line("  direct"));
    let g = open_loop(client, &gw.target(), CHAT, rate, duration).await;
    let quiet = Instant::now();
    let accounted = gw.quiesce().await;
    println!(
        "{}  (usage written {:.1} s later; {accounted} calls accounted in all)",
        g.line("  gateway"),
        quiet.elapsed().as_secs_f64()
    );
    Pair {
        direct: d,
        gateway: g,
    }
}

/// The same rate straight to the fake and through the gateway.
#[derive(Debug, Clone, Copy)]
struct Pair {
    direct: RunStats,
    gateway: RunStats,
}

impl Pair {
    fn overhead_p50(&self) -> f64 {
        self.gateway.latency.p50 - self.direct.latency.p50
    }

    fn overhead_p99(&self) -> f64 {
        self.gateway.latency.p99 - self.direct.latency.p99
    }

    /// Whether the gateway passed this rate.
    fn passed(&self) -> bool {
        self.gateway.kept_up() && self.overhead_p99() <= ms(MAX_P99_OVERHEAD)
    }

    fn rate(&self) -> u32 {
        self.gateway.rate
    }
}

// ---------------------------------------------------------------------------------------------
// One gateway setup.

/// What was measured of one setup.
#[derive(Debug, Clone)]
struct SetupReport {
    setup: Setup,
    /// At the first rate of the plan (1,000/s).
    base: Pair,
    /// Every rate tried, in the order tried.
    ramp: Vec<Pair>,
    /// The highest rate passed.
    max_rate: Option<u32>,
    /// Why no higher rate passed.
    stopped: String,
    /// Gaps between the chunks of fast streams, straight and through the gateway.
    pacing: (Percentiles, Percentiles),
}

/// The overhead at the first rate, and the ramp, of `setup`; `None` when it is skipped.
async fn measure_setup(
    plan: &Plan,
    setup: Setup,
    fake: SocketAddr,
    directs: &mut BTreeMap<u32, RunStats>,
) -> Option<SetupReport> {
    println!("\n== {} ==", setup.name);
    let gw = start_gateway(setup, fake).await?;
    let client = client(Some(Duration::from_secs(15)));
    let direct = Target::direct(fake);
    check_answer(&client, &direct).await;
    check_answer(&client, &gw.target()).await;
    let pacing = (
        stream_gaps(&client, &direct).await,
        stream_gaps(&client, &gw.target()).await,
    );
    println!(
        "gaps between chunks {} ms apart, {FAST_STREAMS} streams: direct p50 {:.2} p99 {:.2} \
         max {:.2} ms; gateway p50 {:.2} p99 {:.2} max {:.2} ms",
        FAST_EVERY.as_millis(),
        pacing.0.p50,
        pacing.0.p99,
        pacing.0.max,
        pacing.1.p50,
        pacing.1.p99,
        pacing.1.max
    );
    if !plan.smoke {
        gw.settled().await;
    }
    let base = plan.rates[0];
    open_loop(&client, &direct, CHAT, base, plan.warm_up).await;
    open_loop(&client, &gw.target(), CHAT, base, plan.warm_up).await;
    gw.quiesce().await;
    println!("overhead at {base}/s:");
    let first = pair(&client, &direct, &gw, base, plan.secs).await;
    println!("ramp:");
    let mut ramp = vec![first];
    if first.passed() {
        for &rate in &plan.rates[1..] {
            let p = pair(&client, &direct, &gw, rate, plan.secs).await;
            ramp.push(p);
            if !p.passed() {
                break;
            }
        }
    } else {
        for &rate in LOWER_RATES.iter().filter(|r| **r < base) {
            let p = pair(&client, &direct, &gw, rate, plan.secs).await;
            ramp.push(p);
            if p.passed() {
                break;
            }
        }
    }
    for p in &ramp {
        directs.entry(p.direct.rate).or_insert(p.direct);
    }
    gw.stop().await;
    let max_rate = ramp.iter().filter(|p| p.passed()).map(Pair::rate).max();
    let stopped = ramp
        .iter()
        .filter(|p| !p.passed() && max_rate.is_none_or(|m| p.rate() > m))
        .min_by_key(|p| p.rate())
        .map_or_else(|| "every rate passed".to_owned(), why_failed);
    Some(SetupReport {
        setup,
        base: first,
        ramp,
        max_rate,
        stopped,
        pacing,
    })
}

fn why_failed(p: &Pair) -> String {
    let g = &p.gateway;
    if !p.direct.kept_up() {
        format!(
            "at {}/s the generator and fake alone no longer keep up ({:.0}/s)",
            g.rate, p.direct.achieved
        )
    } else if !g.kept_up() {
        format!(
            "at {}/s the gateway achieved {:.0}/s with {} errors",
            g.rate,
            g.achieved,
            g.errors()
        )
    } else {
        format!(
            "at {}/s the p99 overhead was {:.2} ms",
            g.rate,
            p.overhead_p99()
        )
    }
}

/// The highest rate the generator reaches straight to the fake (runs already made reused).
async fn direct_max(
    plan: &Plan,
    fake: SocketAddr,
    known: &mut BTreeMap<u32, RunStats>,
) -> Option<u32> {
    println!("\n== direct (no gateway) ==");
    let client = client(Some(Duration::from_secs(15)));
    let direct = Target::direct(fake);
    let mut best = None;
    for &rate in &plan.rates {
        let s = match known.get(&rate) {
            Some(s) => *s,
            None => {
                let s = open_loop(&client, &direct, CHAT, rate, plan.secs).await;
                println!("{}", s.line("  direct"));
                known.insert(rate, s);
                s
            }
        };
        if !s.kept_up() {
            break;
        }
        best = Some(rate);
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Stream pacing.

/// Opens [`FAST_STREAMS`] fast streams to `target` at once and returns the gaps between the
/// chunks each received (milliseconds): [`FAST_EVERY`] if nothing holds chunks back.
async fn stream_gaps(client: &reqwest::Client, target: &Target) -> Percentiles {
    let tasks: Vec<JoinHandle<Vec<f64>>> = (0..FAST_STREAMS)
        .map(|_| {
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move { chunk_gaps(&client, &target).await })
        })
        .collect();
    let mut gaps = Vec::new();
    for t in tasks {
        gaps.extend(t.await.expect("a stream task"));
    }
    Percentiles::of(&mut gaps)
}

/// The gaps between the chunks of one fast stream, after its first.
async fn chunk_gaps(client: &reqwest::Client, target: &Target) -> Vec<f64> {
    let response = client
        .post(&target.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, target.authorization.clone())
        .body(FAST_STREAM)
        .send()
        .await
        .expect("a fast stream");
    assert!(response.status().is_success(), "{}", response.status());
    let mut body = response.bytes_stream();
    let mut gaps = Vec::new();
    let mut last: Option<Instant> = None;
    while let Some(chunk) = body.next().await {
        chunk.expect("a chunk");
        let now = Instant::now();
        if let Some(l) = last {
            gaps.push(ms(now - l));
        }
        last = Some(now);
    }
    gaps
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// What a memory worker measured.
#[derive(Debug, Clone, Copy)]
struct Memory {
    idle_kib: u64,
    open_kib: u64,
    opened: usize,
    completed: usize,
}

impl Memory {
    fn per_stream_kib(&self) -> f64 {
        (self.open_kib.saturating_sub(self.idle_kib)) as f64 / self.opened.max(1) as f64
    }
}

/// Opens `n` slow streams to `target` at once; when each has its first chunk (or failed),
/// waits a second and reads the RSS; then reads every stream to its end. `idle_kib` is the
/// RSS before.
async fn open_streams(
    client: &reqwest::Client,
    target: &Target,
    n: usize,
    idle_kib: u64,
) -> Memory {
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<JoinHandle<bool>> = (0..n)
        .map(|_| {
            let (client, target) = (client.clone(), target.clone());
            let (opened, failed) = (Arc::clone(&opened), Arc::clone(&failed));
            tokio::spawn(async move {
                let done = read_stream(&client, &target, &opened).await;
                if !done {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                done
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open_kib = rss_kib();
    let opened = opened.load(Ordering::SeqCst);
    let mut completed = 0;
    for t in tasks {
        if t.await.expect("a stream task") {
            completed += 1;
        }
    }
    Memory {
        idle_kib,
        open_kib,
        opened,
        completed,
    }
}

/// Reads one slow stream to its end (`opened` counted at its first chunk); whether it ended
/// with `data: [DONE]`.
async fn read_stream(client: &reqwest::Client, target: &Target, opened: &AtomicUsize) -> bool {
    let sent = client
        .post(&target.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, target.authorization.clone())
        .body(SLOW_STREAM)
        .send()
        .await;
    let Ok(response) = sent else { return false };
    if !response.status().is_success() {
        return false;
    }
    let mut body = response.bytes_stream();
    let mut first = true;
    let mut done = false;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { return false };
        if first {
            opened.fetch_add(1, Ordering::SeqCst);
            first = false;
        }
        done |= chunk.windows(6).any(|w| w == b"[DONE]");
    }
    done
}

/// A fresh process's memory figure: a fake and a gateway of `setup`, warmed up, its idle
/// RSS, then `n` slow streams through `via` (`gateway` or `direct`). Printed as one line for
/// [`memory`] to read.
fn memory_worker(setup: Setup, via: &str, n: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let fake = start_fake().await;
        let Some(gw) = start_gateway(setup, fake).await else {
            println!("MEMORY skipped");
            return;
        };
        let client = client(None);
        let (direct, gateway) = (Target::direct(fake), gw.target());
        for target in [&direct, &gateway] {
            for body in [CHAT, SHORT_STREAM] {
                for _ in 0..100 {
                    one(
                        &client,
                        target,
                        Bytes::from_static(body.as_bytes()),
                        Instant::now(),
                    )
                    .await;
                }
            }
        }
        gw.quiesce().await;
        let idle_kib = rss_kib();
        let target = if via == "gateway" { &gateway } else { &direct };
        let m = open_streams(&client, target, n, idle_kib).await;
        println!(
            "MEMORY {} {} {} {}",
            m.idle_kib, m.open_kib, m.opened, m.completed
        );
        gw.stop().await;
    });
}

/// Runs a memory worker for `setup` through `via`, in a fresh process.
fn memory(setup: Setup, via: &str, n: usize) -> Option<Memory> {
    let exe = std::env::current_exe().expect("this bench");
    let out = Command::new(exe)
        .args([MEMORY_WORKER, setup.name, via, &n.to_string()])
        .output()
        .expect("a memory worker");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the memory worker failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("MEMORY "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let [idle_kib, open_kib, opened, completed] = v[..] else {
        return None;
    };
    let m = Memory {
        idle_kib,
        open_kib,
        opened: usize::try_from(opened).unwrap_or(0),
        completed: usize::try_from(completed).unwrap_or(0),
    };
    println!(
        "memory {:<8} {via:<7}: idle {:.1} MiB, {} streams open {:.1} MiB \
         ({:.1} KiB/stream), {} completed",
        setup.name,
        mib(m.idle_kib),
        m.opened,
        mib(m.open_kib),
        m.per_stream_kib(),
        m.completed
    );
    Some(m)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// The summary.

/// Everything measured.
struct Results {
    setups: Vec<SetupReport>,
    direct_max: Option<u32>,
    /// Direct, then per strict setup.
    direct_memory: Option<Memory>,
    memories: Vec<(Setup, Memory)>,
}

fn rate_text(rate: Option<u32>, base: u32) -> String {
    rate.map_or_else(
        || format!("< {}", LOWER_RATES.last().copied().unwrap_or(base)),
        |v| format!("{v}/s"),
    )
}

fn print_overhead_table(plan: &Plan, r: &Results) {
    println!(
        "\noverhead at {}/s (ms):\n{:<9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>10} {:>10}",
        plan.rates[0],
        "setup",
        "direct50",
        "direct99",
        "gw50",
        "gw99",
        "overhead50",
        "overhead99",
        "header50",
        "header99"
    );
    for s in &r.setups {
        let p = &s.base;
        println!(
            "{:<9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>11.3} {:>11.3} {:>10.3} {:>10.3}",
            s.setup.name,
            p.direct.latency.p50,
            p.direct.latency.p99,
            p.gateway.latency.p50,
            p.gateway.latency.p99,
            p.overhead_p50(),
            p.overhead_p99(),
            p.gateway.own.p50,
            p.gateway.own.p99,
        );
    }
}

fn print_pacing_table(r: &Results) {
    println!(
        "\ngaps between stream chunks sent {} ms apart ({FAST_STREAMS} streams at once, ms):\n\
         {:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        FAST_EVERY.as_millis(),
        "setup",
        "direct50",
        "direct99",
        "directmax",
        "gw50",
        "gw99",
        "gwmax"
    );
    for s in &r.setups {
        let (d, g) = &s.pacing;
        println!(
            "{:<9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            s.setup.name, d.p50, d.p99, d.max, g.p50, g.p99, g.max
        );
    }
}

fn print_ramp_table(plan: &Plan, r: &Results) {
    println!(
        "\nramp (pass: gateway achieves >= {:.0}% of the rate, <= {:.0}% errors, p99 overhead \
         <= {} ms):",
        MIN_ACHIEVED * 100.0,
        MAX_ERRORS * 100.0,
        MAX_P99_OVERHEAD.as_millis()
    );
    println!(
        "{:<9} {:>7} {:>10} {:>10} {:>9} {:>9} {:>11} {:>10} {:>7} {:>5}",
        "setup",
        "rate/s",
        "direct/s",
        "gw/s",
        "gw50",
        "gw99",
        "overhead99",
        "header99",
        "errors",
        "pass"
    );
    for s in &r.setups {
        for p in &s.ramp {
            println!(
                "{:<9} {:>7} {:>10.0} {:>10.0} {:>9.3} {:>9.3} {:>11.3} {:>10.3} {:>7} {:>5}",
                s.setup.name,
                p.rate(),
                p.direct.achieved,
                p.gateway.achieved,
                p.gateway.latency.p50,
                p.gateway.latency.p99,
                p.overhead_p99(),
                p.gateway.own.p99,
                p.gateway.errors(),
                if p.passed() { "yes" } else { "NO" }
            );
        }
    }
    println!(
        "\nhighest rate with p99 overhead <= {} ms:",
        MAX_P99_OVERHEAD.as_millis()
    );
    let base = plan.rates[0];
    for s in &r.setups {
        let note = if s.setup.strict() {
            ""
        } else {
            " [reference: local enforcement]"
        };
        println!(
            "  {:<9} {:>8}  ({}){note}",
            s.setup.name,
            rate_text(s.max_rate, base),
            s.stopped
        );
    }
    if plan.direct {
        println!(
            "  {:<9} {:>8}  (the generator straight to the fake, for reference)",
            "direct",
            rate_text(r.direct_max, base)
        );
    }
}

fn print_memory_table(plan: &Plan, r: &Results) {
    if !plan.memory {
        return;
    }
    println!(
        "\nmemory with {} slow streams open (RSS, a fresh process each):",
        plan.streams
    );
    if let Some(d) = r.direct_memory {
        println!(
            "  {:<9} idle {:>6.1} MiB  open {:>6.1} MiB  {:>6.1} KiB/stream (client + fake)",
            "direct",
            mib(d.idle_kib),
            mib(d.open_kib),
            d.per_stream_kib()
        );
    }
    for (setup, m) in &r.memories {
        let own = r
            .direct_memory
            .map(|d| m.per_stream_kib() - d.per_stream_kib());
        println!(
            "  {:<9} idle {:>6.1} MiB  open {:>6.1} MiB  {:>6.1} KiB/stream; the gateway's own \
             {} ({} opened, {} completed)",
            setup.name,
            mib(m.idle_kib),
            mib(m.open_kib),
            m.per_stream_kib(),
            own.map_or_else(|| "?".to_owned(), |v| format!("{v:.1} KiB/stream")),
            m.opened,
            m.completed
        );
    }
}

fn print_summary(plan: &Plan, r: &Results) {
    println!("\n================ summary ================");
    println!(
        "runs of {} s, open loop, latency to the last body byte; overhead = gateway percentile \
         - direct percentile; header = x-llm-accounting-gateway-ms; a requests limit governs \
         every call",
        plan.secs.as_secs()
    );
    print_overhead_table(plan, r);
    print_ramp_table(plan, r);
    print_pacing_table(r);
    print_memory_table(plan, r);
}

/// The memory figures, each in a fresh process: direct, then through each strict setup.
fn measure_memory(plan: &Plan) -> (Option<Memory>, Vec<(Setup, Memory)>) {
    if !plan.memory {
        return (None, Vec::new());
    }
    println!("\n== memory ==");
    let direct = memory(Setup::named("sqlite"), "direct", plan.streams);
    let through = plan
        .setups
        .iter()
        .filter(|s| s.strict())
        .filter_map(|s| memory(*s, "gateway", plan.streams).map(|m| (*s, m)))
        .collect();
    (direct, through)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == MEMORY_WORKER) {
        let n = args[i + 3].parse().expect("a stream count");
        memory_worker(Setup::named(&args[i + 1]), &args[i + 2], n);
        return;
    }
    // `cargo test --bench` runs this too: keep that run small.
    let plan = Plan::new(!args.iter().any(|a| a == "--bench"));
    println!("{plan:?}");
    let (direct_memory, memories) = measure_memory(&plan);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (setups, direct_max) = rt.block_on(async {
        let fake = start_fake().await;
        let mut directs = BTreeMap::new();
        let mut reports = Vec::new();
        for setup in plan.setups.iter().copied() {
            if let Some(r) = measure_setup(&plan, setup, fake, &mut directs).await {
                reports.push(r);
            }
        }
        let best = if plan.direct {
            direct_max(&plan, fake, &mut directs).await
        } else {
            None
        };
        (reports, best)
    });
    print_summary(
        &plan,
        &Results {
            setups,
            direct_max,
            direct_memory,
            memories,
        },
    );
}
