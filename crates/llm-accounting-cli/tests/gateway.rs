//! The gateway through the binary, with the official Python SDKs (`openai`, `anthropic`, in
//! a virtual environment `scripts/with-python-sdks` makes; `LLM_ACCOUNTING_TEST_SDK_PYTHON`
//! names its interpreter) as clients and a fake provider (`tests/python/fake_upstream.py` of
//! the gateway crate) that speaks the documented wire formats and records what it received.
//!
//! What is attacked: the upstream must see the stored provider key and never the virtual key;
//! usage must be accounted exactly, for streams too, and for a client that goes away; a quota
//! must hold against 20 concurrent clients; revoked, expired, edited and made-up tokens must be
//! refused; SIGTERM must let streams finish and lose no usage; bad requests get clear 4xx.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llm_accounting_testkit::{Backend, Env, TestDatabase, skip_or_fail};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");
const SDK_PYTHON: &str = "LLM_ACCOUNTING_TEST_SDK_PYTHON";
/// Obviously fake provider keys.
const OPENAI_KEY: &str = "sk-test-FAKE-openai-00000000000000000000gw1";
const ANTHROPIC_KEY: &str = "sk-ant-test-FAKE-0000000000000000000000gw2";
const ALICE_OPENAI_KEY: &str = "sk-test-FAKE-openai-alice-0000000000000gw3";

fn python() -> Option<PathBuf> {
    match std::env::var_os(SDK_PYTHON) {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            skip_or_fail(
                "gateway with the Python SDKs",
                &format!(
                    "{SDK_PYTHON} does not name an interpreter with the openai and anthropic \
                     packages (scripts/with-python-sdks makes one)"
                ),
            );
            None
        }
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../llm-accounting-gateway/tests/python")
        .join(name)
}

/// A plain HTTP/1.1 exchange (`Connection: close`): the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    // A server may answer before reading a large body and close: a failed write is fine.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// The fake provider; killed when dropped (and it exits by itself when its stdin closes).
struct Fake {
    child: Child,
    port: u16,
}

impl Fake {
    fn start(python: &Path) -> Fake {
        let mut child = Command::new(python)
            .arg(script("fake_upstream.py"))
            .args(["--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the fake upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("its port");
        let v: Value = serde_json::from_str(&line).expect("{\"port\": N}");
        let port = u16::try_from(v["port"].as_u64().expect("port")).expect("port");
        Fake { child, port }
    }

    fn get(&self, path: &str) -> Value {
        let (status, _, body) = http(self.port, "GET", path, &[], b"");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    }

    fn requests(&self) -> Vec<Value> {
        self.get("/_requests")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `gateway serve`; killed when dropped.
struct Served {
    child: Child,
    port: u16,
    stderr: mpsc::Receiver<String>,
}

impl Served {
    fn start(env: &Env) -> Served {
        let mut child = env
            .command(&["gateway", "serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the gateway says where it listens");
            if let Some(addr) = line.strip_prefix("gateway listening on http://") {
                break addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        };
        Served {
            child,
            port,
            stderr: rx,
        }
    }

    fn openai_base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn anthropic_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM; waits for the exit; everything it printed on stderr.
    fn terminate(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = self.child.wait().expect("wait");
        let mut out = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            out.push(l);
        }
        (status.code().unwrap_or(-1), out.join("\n"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sdk_client.py` with `args`; its last line as JSON.
fn sdk(python: &Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .arg(script("sdk_client.py"))
        .args(args)
        .output()
        .expect("run the SDK client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// An environment on `db` whose upstreams are the fake, with a provider key per service.
fn env_for(db: &TestDatabase, fake: &Fake) -> Env {
    let mut env = Env::new(BIN).secrets(&[OPENAI_KEY, ANTHROPIC_KEY, ALICE_OPENAI_KEY]);
    // SQLite: the environment's own file (which `Env::sql` edits).
    if db.backend() != Backend::Sqlite {
        env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
    }
    env.set(
        "LLM_ACCOUNTING_GATEWAY_UPSTREAMS_OPENAI_BASE_URL",
        &format!("http://127.0.0.1:{}/v1", fake.port),
    );
    env.set(
        "LLM_ACCOUNTING_GATEWAY_UPSTREAMS_ANTHROPIC_BASE_URL",
        &format!("http://127.0.0.1:{}", fake.port),
    );
    env.set("LLM_ACCOUNTING_GATEWAY_KEY_REFRESH_MS", "200");
    env.run_stdin(&["-q", "keys", "store", "--service", "openai"], OPENAI_KEY)
        .ok();
    env.run_stdin(
        &["-q", "keys", "store", "--service", "anthropic"],
        ANTHROPIC_KEY,
    )
    .ok();
    env
}

/// Makes a virtual key with `args`; its token.
fn token(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["gateway", "keys", "create"];
    all.extend_from_slice(args);
    let run = env.run(&all).ok();
    let token = run.stdout.trim().to_owned();
    assert!(token.starts_with("llmacc-"), "{run:#?}");
    assert_eq!(run.stdout.lines().count(), 1, "the token alone on stdout");
    assert!(!run.stderr.contains(&token), "the token only on stdout");
    token
}

/// The usage events, newest first.
fn events(env: &Env) -> Vec<Value> {
    let run = env
        .run(&["usage", "tail", "-n", "1000", "--format", "json"])
        .ok();
    serde_json::from_str::<Value>(&run.stdout)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `n` events are written (commits run after the response).
fn wait_events(env: &Env, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = events(env);
        if e.len() >= n || Instant::now() > deadline {
            return e;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sqlite() -> TestDatabase {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(TestDatabase::create(Backend::Sqlite))
        .expect("sqlite")
}

#[test]
fn sdks_call_models_through_the_gateway_which_uses_the_stored_key_and_accounts_usage() {
    let Some(py) = python() else { return };
    let fake = Fake::start(&py);
    let db = sqlite();
    let env = env_for(&db, &fake);
    // Alice has her own OpenAI key: it serves her calls; Bob gets the service's key.
    env.run_stdin(
        &[
            "-q",
            "keys",
            "store",
            "--service",
            "openai",
            "--user",
            "alice",
        ],
        ALICE_OPENAI_KEY,
    )
    .ok();
    let alice = token(&env, &["--user", "alice", "--caller", "app"]);
    let bob = token(&env, &["--user", "bob"]);
    let gw = Served::start(&env);
    let (oa, an) = (gw.openai_base(), gw.anthropic_base());

    let mut calls = 0;
    for (args, text) in [
        (
            vec![
                "openai-chat",
                "--base-url",
                &oa,
                "--key",
                &alice,
                "--model",
                "gpt-4o-mini",
            ],
            true,
        ),
        (
            vec![
                "openai-chat",
                "--stream",
                "--no-stream-usage",
                "--base-url",
                &oa,
                "--key",
                &alice,
                "--model",
                "gpt-4o-mini",
            ],
            true,
        ),
        (
            vec![
                "openai-completions",
                "--base-url",
                &oa,
                "--key",
                &bob,
                "--model",
                "gpt-4o-mini",
            ],
            true,
        ),
        (
            vec![
                "openai-responses",
                "--stream",
                "--base-url",
                &oa,
                "--key",
                &bob,
                "--model",
                "gpt-4o",
            ],
            true,
        ),
        (
            vec![
                "openai-embeddings",
                "--base-url",
                &oa,
                "--key",
                &bob,
                "--model",
                "text-embedding-3-small",
            ],
            false,
        ),
        (
            vec![
                "anthropic-messages",
                "--base-url",
                &an,
                "--key",
                &bob,
                "--model",
                "claude-sonnet-4-5",
            ],
            true,
        ),
        (
            vec![
                "anthropic-messages",
                "--stream",
                "--anthropic-auth",
                "x-api-key",
                "--header",
                "anthropic-version=2023-06-01",
                "--base-url",
                &an,
                "--key",
                &bob,
                "--model",
                "anthropic/claude-sonnet-4-5",
            ],
            true,
        ),
    ] {
        let r = sdk(&py, &args);
        assert_eq!(r["ok"], true, "{args:?}: {r}");
        if text {
            assert_eq!(r["text"], "hello from fake", "{args:?}: {r}");
        }
        let headers = r["headers"].as_object().expect("headers");
        assert!(headers.contains_key("x-llm-accounting-request-id"), "{r}");
        let ms: f64 = headers["x-llm-accounting-gateway-ms"]
            .as_str()
            .expect("gateway time")
            .parse()
            .expect("ms");
        assert!(ms >= 0.0);
        let all = r["headers"].to_string();
        for key in [OPENAI_KEY, ANTHROPIC_KEY, ALICE_OPENAI_KEY] {
            assert!(!all.contains(key), "a provider key in a response header");
        }
        calls += 1;
    }
    // The models list passes through.
    let models = sdk(&py, &["openai-models", "--base-url", &oa, "--key", &bob]);
    assert_eq!(models["ok"], true, "{models}");

    // The upstream saw the stored keys, the most specific one for Alice, never a token.
    let seen = fake.requests();
    assert_eq!(seen.len(), calls + 1);
    for r in &seen {
        let sent = format!("{} {}", r["authorization"], r["x_api_key"]);
        assert!(
            !sent.contains("llmacc-"),
            "a virtual key reached the upstream: {sent}"
        );
        let path = r["path"].as_str().expect("path");
        let expected = if path == "/v1/messages" {
            ANTHROPIC_KEY
        } else {
            ""
        };
        if !expected.is_empty() {
            assert_eq!(r["x_api_key"], expected, "{r}");
        }
    }
    assert_eq!(
        seen[0]["authorization"],
        format!("Bearer {ALICE_OPENAI_KEY}")
    );
    assert_eq!(seen[2]["authorization"], format!("Bearer {OPENAI_KEY}"));
    // The model reached the upstream bare, and a stream that did not ask for its usage was
    // made to (so that it is accounted exactly).
    assert_eq!(seen[6]["body"]["model"], "claude-sonnet-4-5");
    assert_eq!(seen[1]["body"]["stream_options"]["include_usage"], true);

    // One event per call, with the tokens the upstream reported and their price.
    let ev = wait_events(&env, calls);
    assert_eq!(ev.len(), calls, "{ev:#?}");
    let oldest = &ev[calls - 1];
    assert_eq!(oldest["user"], "alice");
    assert_eq!(oldest["project"], Value::Null);
    assert_eq!(oldest["caller"], "app");
    assert_eq!(oldest["service"], "openai");
    assert_eq!(oldest["model"], "gpt-4o-mini");
    assert_eq!(
        (
            oldest["prompt_tokens"].as_u64(),
            oldest["completion_tokens"].as_u64()
        ),
        (Some(12), Some(5))
    );
    // 12 x $0.15/M + 5 x $0.60/M = 4.8 micro-dollars, rounded up.
    assert_eq!(oldest["cost_micros"], 5);
    assert_eq!(
        oldest["key"], "service \"openai\", user \"alice\"",
        "{oldest}"
    );
    assert_eq!(oldest["key_version"], 1);
    assert_eq!(
        ev[calls - 2]["completion_tokens"],
        5,
        "the stream's usage event was read"
    );
    for e in &ev[..calls - 2] {
        assert_eq!(
            e["prompt_tokens"].as_u64(),
            Some(if e["model"] == "text-embedding-3-small" {
                8
            } else {
                12
            }),
            "{e}"
        );
        assert_eq!(e["user"], "bob", "{e}");
    }
    let claude = &ev[0];
    assert_eq!(claude["service"], "anthropic");
    assert_eq!(claude["completion_tokens"], 5);
    // 12 x $3/M + 5 x $15/M = 111 micro-dollars.
    assert_eq!(claude["cost_micros"], 111);

    // The metrics count them.
    let (status, _, text) = http(gw.port, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(text.contains("llm_accounting_gateway_requests_total{route=\"messages\",service=\"anthropic\",model=\"claude-sonnet-4-5\",status=\"200\"} 2"), "{text}");
    assert!(
        text.contains("llm_accounting_gateway_overhead_seconds_count"),
        "{text}"
    );
    let (status, _, body) = http(gw.port, "GET", "/healthz", &[], b"");
    assert_eq!((status, body.contains("ok")), (200, true));

    let (code, log) = gw.terminate();
    assert_eq!(code, 0, "{log}");
    for key in [OPENAI_KEY, ANTHROPIC_KEY, ALICE_OPENAI_KEY, &alice, &bob] {
        assert!(!log.contains(key), "a key in the gateway's output");
    }
}

#[test]
fn a_quota_is_the_sdks_rate_limit_error_and_twenty_racing_clients_get_exactly_five_through() {
    let Some(py) = python() else { return };
    let fake = Fake::start(&py);
    for db in tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(TestDatabase::create_all())
    {
        let env = env_for(&db, &fake);
        env.run(&[
            "-q", "limits", "set", "--type", "requests", "--max", "5", "--per", "day", "--user",
            "carol",
        ])
        .ok();
        let carol = token(&env, &["--user", "carol"]);
        // The dashboard, behind an admin token read from a private file.
        let admin = "admin-token-FAKE-0123456789";
        let token_file = env.dir().join("admin.token");
        std::fs::write(&token_file, format!("{admin}\n")).expect("token file");
        let mut env = env;
        env.set(
            "LLM_ACCOUNTING_GATEWAY_ADMIN_TOKEN_FILE",
            token_file.to_str().expect("utf-8"),
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Readable by others: refused, naming the fix.
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
            let r = env
                .run(&["gateway", "serve", "--listen", "127.0.0.1:0"])
                .code(2);
            assert!(r.stderr.contains("chmod 600"), "{r:#?}");
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
        let gw = Served::start(&env);
        for api in ["openai", "anthropic"] {
            let base = if api == "openai" {
                gw.openai_base()
            } else {
                gw.anthropic_base()
            };
            let model = if api == "openai" {
                "gpt-4o-mini"
            } else {
                "claude-sonnet-4-5"
            };
            let r = sdk(
                &py,
                &[
                    "race",
                    "--n",
                    "20",
                    "--api",
                    api,
                    "--base-url",
                    &base,
                    "--key",
                    &carol,
                    "--model",
                    model,
                ],
            );
            let expected = if api == "openai" { 5 } else { 0 };
            assert_eq!(r["ok"], expected, "{}: {api}: {r}", db.backend());
            assert_eq!(
                r["rate_limited"],
                20 - expected,
                "{}: {api}: {r}",
                db.backend()
            );
            assert_eq!(r["other"], serde_json::json!([]), "{r}");
        }
        let r = sdk(
            &py,
            &[
                "anthropic-messages",
                "--base-url",
                &gw.anthropic_base(),
                "--key",
                &carol,
                "--model",
                "claude-sonnet-4-5",
            ],
        );
        assert_eq!(r["error"], "RateLimitError", "{r}");
        assert_eq!(r["body"]["error"]["type"], "rate_limit_error", "{r}");
        let retry: i64 = r["retry_after"]
            .as_str()
            .expect("retry-after")
            .parse()
            .expect("secs");
        assert!((1..=86_400).contains(&retry), "{retry}");
        assert!(
            r["message"].as_str().expect("message").contains("limit #"),
            "{r}"
        );
        let ev = wait_events(&env, 5);
        assert_eq!(ev.len(), 5, "{}", db.backend());
        dashboard_shows_the_calls_and_the_denials(&gw, admin, 5, 36);
        drop(gw);
    }
}

/// The gateway's dashboard: 401 without the admin token (or with another); with it, the
/// page (reloading on its own) and its data, which count `requests` calls and `denials`
/// quota refusals today.
fn dashboard_shows_the_calls_and_the_denials(
    gw: &Served,
    admin: &str,
    requests: u64,
    denials: u64,
) {
    use base64::Engine;
    let (status, head, _) = http(gw.port, "GET", "/dashboard", &[], b"");
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    let wrong = format!("Bearer {admin}x");
    let (status, _, _) = http(
        gw.port,
        "GET",
        "/dashboard/api/report",
        &[("Authorization", &wrong)],
        b"",
    );
    assert_eq!(status, 401);
    let bearer = format!("Bearer {admin}");
    let (status, head, body) = http(
        gw.port,
        "GET",
        "/dashboard/api/report?days=2&by=user",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(status, 200, "{head}{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    let report: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["totals"]["requests"], requests, "{report}");
    assert_eq!(report["by"], "user");
    let refused: u64 = report["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .map(|d| d["denials"].as_u64().expect("denials"))
        .sum();
    assert_eq!(refused, denials, "{report}");
    // A browser: Basic authentication, any user name, the token as the password.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("me:{admin}"))
    );
    let (status, _, page) = http(
        gw.port,
        "GET",
        "/dashboard",
        &[("Authorization", &basic)],
        b"",
    );
    assert_eq!(status, 200);
    assert!(page.contains("<h1>LLM usage</h1>"), "{page}");
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    assert!(page.contains("class=\"mark denials\""), "{page}");
    let (status, _, _) = http(
        gw.port,
        "GET",
        "/dashboard?days=0",
        &[("Authorization", &basic)],
        b"",
    );
    assert_eq!(status, 400);
}

#[test]
fn revoked_expired_edited_and_made_up_tokens_are_refused_and_lists_restrict_calls() {
    let Some(py) = python() else { return };
    let fake = Fake::start(&py);
    let db = sqlite();
    let env = env_for(&db, &fake);
    let dave = token(
        &env,
        &[
            "--user",
            "dave",
            "--services",
            "openai",
            "--models",
            "gpt-4o-mini",
        ],
    );
    let erin = token(&env, &["--user", "erin"]);
    let short = token(&env, &["--user", "frank", "--expires-in", "2s"]);
    let gw = Served::start(&env);
    let oa = gw.openai_base();
    let call = |key: &str, model: &str| {
        sdk(
            &py,
            &[
                "openai-chat",
                "--base-url",
                &oa,
                "--key",
                key,
                "--model",
                model,
            ],
        )
    };

    assert_eq!(call(&dave, "gpt-4o-mini")["ok"], true);
    let r = call(&dave, "gpt-4o");
    assert_eq!(r["error"], "PermissionDeniedError", "{r}");
    let r = sdk(
        &py,
        &[
            "anthropic-messages",
            "--base-url",
            &gw.anthropic_base(),
            "--key",
            &dave,
            "--model",
            "claude-sonnet-4-5",
        ],
    );
    assert_eq!(r["error"], "PermissionDeniedError", "{r}");
    assert!(r["message"].as_str().expect("m").contains("service"), "{r}");

    // Made-up, truncated and missing tokens.
    let forged = format!(
        "{}{}",
        &erin[..erin.len() - 1],
        if erin.ends_with('A') { 'B' } else { 'A' }
    );
    for bad in [
        forged.as_str(),
        &erin[..erin.len() - 2],
        "sk-something",
        "llmacc-999-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = call(bad, "gpt-4o-mini");
        assert_eq!(r["error"], "AuthenticationError", "{bad}: {r}");
    }
    let (status, _, body) = http(
        gw.port,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(status, 401, "{body}");

    // Revoked: refused within the refresh interval (200 ms here).
    assert_eq!(call(&erin, "gpt-4o-mini")["ok"], true);
    let list = env
        .run(&["gateway", "keys", "list", "--format", "json"])
        .ok();
    let id = serde_json::from_str::<Value>(&list.stdout).expect("json")[1]["id"]
        .as_i64()
        .expect("id");
    assert!(!list.stdout.contains(&erin[8..]), "no token in the list");
    env.run(&["-q", "gateway", "keys", "revoke", "--id", &id.to_string()])
        .ok();
    std::thread::sleep(Duration::from_millis(800));
    let r = call(&erin, "gpt-4o-mini");
    assert_eq!(r["error"], "AuthenticationError", "{r}");
    assert!(r["message"].as_str().expect("m").contains("revoked"), "{r}");
    env.run(&["gateway", "keys", "revoke", "--id", "4242"])
        .code(3);

    // Expired.
    std::thread::sleep(Duration::from_secs(2));
    let r = call(&short, "gpt-4o-mini");
    assert_eq!(r["error"], "AuthenticationError", "{r}");
    assert!(r["message"].as_str().expect("m").contains("expired"), "{r}");

    // A database writer widens Dave's key (every model) or un-revokes Erin's: the rows fail
    // their MACs and both are refused, not widened.
    env.sql("UPDATE gateway_keys SET models = NULL WHERE user_id = 'dave'");
    env.sql("UPDATE gateway_keys SET revoked_us = NULL WHERE user_id = 'erin'");
    env.sql("UPDATE gateway_keys SET expires_us = NULL WHERE user_id = 'frank'");
    std::thread::sleep(Duration::from_millis(800));
    for (key, who) in [(&dave, "dave"), (&erin, "erin"), (&short, "frank")] {
        let r = call(key, "gpt-4o");
        assert_eq!(r["error"], "AuthenticationError", "{who}: {r}");
        assert!(
            r["message"].as_str().expect("m").contains("integrity"),
            "{who}: {r}"
        );
    }
    let list = env.run(&["gateway", "keys", "list"]).ok();
    assert_eq!(
        list.stdout.matches("TAMPERED").count(),
        3,
        "{}",
        list.stdout
    );
    // Nothing the refused calls did reached the upstream.
    assert_eq!(fake.requests().len(), 2);
}

#[test]
fn bad_requests_get_clear_errors_and_upstream_errors_pass_through() {
    let Some(py) = python() else { return };
    let fake = Fake::start(&py);
    let db = sqlite();
    let mut env = env_for(&db, &fake);
    env.set("LLM_ACCOUNTING_GATEWAY_MAX_BODY_BYTES", "4096");
    let gina = token(&env, &["--user", "gina"]);
    env.run(&[
        "-q", "limits", "set", "--type", "cost", "--max", "1", "--per", "day", "--user", "gina",
    ])
    .ok();
    let gw = Served::start(&env);
    let auth = format!("Bearer {gina}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let (status, _, body) = http(gw.port, "POST", "/v1/chat/completions", &h, b"{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not valid JSON"), "{body}");
    let (status, _, body) = http(
        gw.port,
        "POST",
        "/v1/chat/completions",
        &h,
        b"{\"messages\": []}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no model"), "{body}");
    let big = format!(
        "{{\"model\": \"gpt-4o-mini\", \"x\": \"{}\"}}",
        "a".repeat(5000)
    );
    let (status, _, body) = http(gw.port, "POST", "/v1/chat/completions", &h, big.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("gateway.max_body_bytes"), "{body}");
    let (status, _, body) = http(gw.port, "POST", "/v1/nothing", &h, b"{}");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/v1/chat/completions"), "{body}");
    // An OpenAI-style route to an Anthropic service.
    let (status, _, body) = http(
        gw.port,
        "POST",
        "/v1/chat/completions",
        &h,
        b"{\"model\": \"anthropic/claude-sonnet-4-5\"}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("/v1/messages"), "{body}");
    // A model without a price under a cost limit.
    let r = sdk(
        &py,
        &[
            "openai-chat",
            "--base-url",
            &gw.openai_base(),
            "--key",
            &gina,
            "--model",
            "unpriced-model",
        ],
    );
    assert_eq!(r["error"], "PermissionDeniedError", "{r}");
    assert!(
        r["message"].as_str().expect("m").contains("no price"),
        "{r}"
    );
    assert!(
        fake.requests().is_empty(),
        "nothing refused reached the upstream"
    );
    drop(gw);

    // With unpriced models allowed, the upstream's own errors pass through.
    env.set("LLM_ACCOUNTING_GATEWAY_UNPRICED", "allow");
    let gw = Served::start(&env);
    for (model, class, status) in [
        ("error-400", "BadRequestError", 400),
        ("error-500", "InternalServerError", 500),
    ] {
        let r = sdk(
            &py,
            &[
                "openai-chat",
                "--base-url",
                &gw.openai_base(),
                "--key",
                &gina,
                "--model",
                model,
            ],
        );
        assert_eq!(r["error"], class, "{model}: {r}");
        assert_eq!(r["status"], status, "{r}");
        assert!(
            r["body"]["error"]["message"].is_string(),
            "the upstream's body: {r}"
        );
    }
    let r = sdk(
        &py,
        &[
            "anthropic-messages",
            "--base-url",
            &gw.anthropic_base(),
            "--key",
            &gina,
            "--model",
            "error-400",
        ],
    );
    assert_eq!(r["error"], "BadRequestError", "{r}");
    assert_eq!(r["body"]["type"], "error", "{r}");
}

#[test]
fn a_client_that_goes_away_cancels_the_upstream_and_is_still_accounted() {
    let Some(py) = python() else { return };
    let fake = Fake::start(&py);
    let db = sqlite();
    let env = env_for(&db, &fake);
    let hank = token(&env, &["--user", "hank"]);
    let gw = Served::start(&env);
    for api in ["openai", "anthropic"] {
        let base = if api == "openai" {
            gw.openai_base()
        } else {
            gw.anthropic_base()
        };
        let r = sdk(
            &py,
            &[
                "disconnect",
                "--api",
                api,
                "--base-url",
                &base,
                "--key",
                &hank,
                "--max-tokens",
                "300",
            ],
        );
        assert_eq!(r["ok"], true, "{api}: {r}");
    }
    // The upstream saw both streams end early (the gateway dropped them).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = fake.get("/_stats");
        if stats["aborted_streams"] == 2 && stats["open_streams"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream streams were not cancelled: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ev = wait_events(&env, 2);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    // OpenAI reports usage only at the end: the estimate (300 completion tokens) is counted.
    // Anthropic reported its input at the start: that, and at least the first token.
    let openai = ev
        .iter()
        .find(|e| e["service"] == "openai")
        .expect("openai");
    assert_eq!(openai["completion_tokens"], 300, "{openai}");
    let anthropic = ev
        .iter()
        .find(|e| e["service"] == "anthropic")
        .expect("anthropic");
    assert_eq!(anthropic["prompt_tokens"], 12, "{anthropic}");
    assert!(
        anthropic["completion_tokens"].as_u64() >= Some(1),
        "{anthropic}"
    );
    let (_, _, text) = http(gw.port, "GET", "/metrics", &[], b"");
    assert!(
        text.contains("llm_accounting_gateway_client_disconnects_total 2"),
        "{text}"
    );
}

#[test]
fn sigterm_lets_streams_in_flight_finish_and_writes_their_usage() {
    let Some(py) = python() else { return };
    let fake = Fake::start(&py);
    let db = sqlite();
    let env = env_for(&db, &fake);
    let ivy = token(&env, &["--user", "ivy"]);
    let gw = Served::start(&env);
    let base = gw.openai_base();
    let port = gw.port;
    // A 5-second stream (50 chunks, 100 ms apart).
    let client = {
        let (py, base, ivy) = (py.clone(), base.clone(), ivy.clone());
        std::thread::spawn(move || {
            sdk(
                &py,
                &[
                    "openai-chat",
                    "--stream",
                    "--base-url",
                    &base,
                    "--key",
                    &ivy,
                    "--model",
                    "slow-stream",
                ],
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.get("/_stats")["open_streams"] != 1 {
        assert!(Instant::now() < deadline, "the stream did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = gw.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    // New connections are refused while the stream finishes.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting after SIGTERM"
    );
    let r = client.join().expect("client");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 5, "{r}");
    let (code, log) = gw.terminate();
    assert_eq!(code, 0, "{log}");
    // Written before the gateway exited: no waiting.
    let ev = events(&env);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(
        (
            ev[0]["prompt_tokens"].as_u64(),
            ev[0]["completion_tokens"].as_u64()
        ),
        (Some(12), Some(5))
    );
}

#[test]
fn on_postgresql_a_revocation_reaches_a_running_gateway_at_once() {
    let Some(py) = python() else { return };
    let Some(db) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(TestDatabase::create(Backend::Postgres))
    else {
        return;
    };
    let fake = Fake::start(&py);
    let mut env = env_for(&db, &fake);
    // Polling alone would take a minute.
    env.set("LLM_ACCOUNTING_GATEWAY_KEY_REFRESH_MS", "60000");
    let jack = token(&env, &["--user", "jack"]);
    let gw = Served::start(&env);
    let call = || {
        sdk(
            &py,
            &[
                "openai-chat",
                "--base-url",
                &gw.openai_base(),
                "--key",
                &jack,
                "--model",
                "gpt-4o-mini",
            ],
        )
    };
    assert_eq!(call()["ok"], true);
    env.run(&["-q", "gateway", "keys", "revoke", "--id", "1"])
        .ok();
    // The notification arrives within milliseconds; allow a little for the listener.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = call();
        if r["error"] == "AuthenticationError" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served after the revocation: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn provider_keys_go_from_most_to_least_specific_and_sessions_are_accounted() {
    let Some(py) = python() else { return };
    let fake = Fake::start(&py);
    let db = sqlite();
    let mut env = env_for(&db, &fake);
    const PROJECT_KEY: &str = "sk-test-FAKE-openai-project-p2-00000000gw4";
    const PAT_KEY: &str = "sk-test-FAKE-openai-pat-p2-000000000000gw5";
    env.run_stdin(
        &[
            "-q",
            "keys",
            "store",
            "--service",
            "openai",
            "--project",
            "p2",
        ],
        PROJECT_KEY,
    )
    .ok();
    env.run_stdin(
        &[
            "-q",
            "keys",
            "store",
            "--service",
            "openai",
            "--user",
            "pat",
            "--project",
            "p2",
        ],
        PAT_KEY,
    )
    .ok();
    let pat = token(&env, &["--user", "pat", "--project", "p2"]);
    let quinn = token(&env, &["--user", "quinn", "--project", "p2"]);
    let rita = token(&env, &["--user", "rita", "--project", "p3"]);
    // At debug the gateway (and everything under it) logs each call: still no key of any
    // kind in its output.
    env.set("RUST_LOG", "debug");
    let gw = Served::start(&env);
    let oa = gw.openai_base();
    for key in [&pat, &quinn, &rita] {
        let r = sdk(
            &py,
            &[
                "openai-chat",
                "--base-url",
                &oa,
                "--key",
                key,
                "--model",
                "gpt-4o-mini",
                "--header",
                "x-llm-accounting-session=s-42",
            ],
        );
        assert_eq!(r["ok"], true, "{r}");
    }
    let seen: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r["authorization"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        seen,
        [
            format!("Bearer {PAT_KEY}"),
            format!("Bearer {PROJECT_KEY}"),
            format!("Bearer {OPENAI_KEY}")
        ],
        "user and project, then project, then the service's key"
    );
    let ev = wait_events(&env, 3);
    assert!(ev.iter().all(|e| e["session"] == "s-42"), "{ev:#?}");
    assert_eq!(ev[0]["project"], "p3");
    assert_eq!(ev[0]["key"], "service \"openai\"");
    let (code, log) = gw.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("forwarded"),
        "the calls are logged at debug: {log}"
    );
    for secret in [OPENAI_KEY, PROJECT_KEY, PAT_KEY, &pat, &quinn, &rita] {
        assert!(!log.contains(secret), "a key in the log");
    }
    assert!(!log.contains("llmacc-"), "a token in the log");
}
