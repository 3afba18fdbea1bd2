//! The Redis quota engine through the binary (`LLM_ACCOUNTING_ACCOUNTING_ENGINE=redis`):
//! processes racing a nearly exhausted limit never pass it; quota checks, tracked usage and
//! gated `exec` use Redis's counters; an unreachable Redis exits 5 (or, with the fallback,
//! the database answers) and its password is never printed.
//!
//! Each test that keeps state in Redis owns a logical database (14, 15) and empties it first.

#![cfg(feature = "redis")]

use std::io::{Read, Write};
use std::net::TcpStream;

use llm_accounting_testkit::services::redis_url;
use llm_accounting_testkit::{Backend, Env, Run, TestDatabase};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");
/// An obviously fake key.
const KEY: &str = "sk-test-FAKE-0000000000000000000000000rds";
/// An obviously fake Redis password.
const PASSWORD: &str = "FAKE-redis-pw-41";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `host:port` of a Redis URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    rest.split('/').next().unwrap_or(rest)
}

/// Empties logical database `n` of the test Redis (owned by the calling test) and returns
/// its URL.
fn owned_redis(test: &str, n: u8) -> Option<String> {
    let url = redis_url(test)?;
    let host = host_of(&url).to_owned();
    let mut c = TcpStream::connect(&host).expect("connect to Redis");
    let db = n.to_string();
    write!(
        c,
        "*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n",
        db.len()
    )
    .expect("send");
    let mut buf = [0u8; 10];
    c.read_exact(&mut buf).expect("two replies");
    assert_eq!(&buf, b"+OK\r\n+OK\r\n", "SELECT and FLUSHDB");
    let scheme_host = url.split_once("://").map_or("redis", |(s, _)| s);
    Some(format!("{scheme_host}://{host}/{n}"))
}

/// An environment on a fresh SQLite database with the Redis engine at `redis`.
fn env_with_redis(db: &TestDatabase, redis: &str) -> Env {
    let mut env = Env::new(BIN).secrets(&[KEY, PASSWORD]);
    env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
    env.set("LLM_ACCOUNTING_ACCOUNTING_ENGINE", "redis");
    env.set("LLM_ACCOUNTING_ACCOUNTING_REDIS_URL", redis);
    env
}

fn sqlite() -> TestDatabase {
    runtime()
        .block_on(TestDatabase::create(Backend::Sqlite))
        .expect("SQLite is always there")
}

#[test]
fn processes_racing_a_limit_on_redis_never_pass_it() {
    let Some(redis) = owned_redis("processes_racing_a_limit_on_redis_never_pass_it", 14) else {
        return;
    };
    let db = sqlite();
    let env = env_with_redis(&db, &redis);
    env.run_stdin(&["-q", "keys", "store", "--service", "openai"], KEY)
        .ok();
    env.run(&[
        "-q", "limits", "set", "--type", "requests", "--max", "5", "--per", "day",
    ])
    .ok();
    env.run(&["-q", "usage", "track", "--model", "race"]).ok();
    let get = [
        "-q",
        "keys",
        "get",
        "--service",
        "openai",
        "--model",
        "race",
    ];
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10).map(|_| s.spawn(|| env.run(&get))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let handed_out = runs.iter().filter(|r| r.code == 0).count();
    let denied = runs.iter().filter(|r| r.code == 7).count();
    assert_eq!((handed_out, denied), (4, 6), "{runs:#?}");
    // The database has every hand-out (the source of truth), and a check agrees.
    let stats = env.run(&["usage", "stats", "--format", "json"]).ok().json();
    assert_eq!(stats[0]["requests"], 5, "{stats}");
    let r = env.run(&["quota", "check", "--model", "race"]).code(7);
    assert!(r.stderr.contains("usage 5/5"), "{r:#?}");
    let doctor = env.run(&["doctor"]);
    assert!(
        doctor.stdout.contains("redis at") && doctor.stdout.contains("answers"),
        "{doctor:#?}"
    );
}

#[test]
fn quota_checks_and_gated_exec_use_redis() {
    let Some(redis) = owned_redis("quota_checks_and_gated_exec_use_redis", 15) else {
        return;
    };
    let db = sqlite();
    let env = env_with_redis(&db, &redis);
    env.run_stdin(&["-q", "keys", "store", "--service", "openai"], KEY)
        .ok();
    env.run(&[
        "-q",
        "limits",
        "set",
        "--type",
        "total-tokens",
        "--max",
        "100",
        "--per",
        "day",
        "--user",
        "alice",
    ])
    .ok();
    env.run(&["quota", "check", "--model", "m", "--user", "alice"])
        .ok();
    env.run(&[
        "-q",
        "usage",
        "track",
        "--model",
        "m",
        "--user",
        "alice",
        "--prompt-tokens",
        "60",
        "--completion-tokens",
        "40",
    ])
    .ok();
    let r = env
        .run(&["quota", "check", "--model", "m", "--user", "alice"])
        .code(7);
    assert!(r.stderr.contains("usage 100/100"), "{r:#?}");
    // Bob has no limit.
    env.run(&["quota", "check", "--model", "m", "--user", "bob"])
        .ok();
    // A gated exec: one run fits, the next is refused before the command starts.
    env.run(&[
        "-q", "limits", "set", "--type", "requests", "--max", "1", "--per", "day", "--model",
        "gpt-x",
    ])
    .ok();
    let exec = [
        "-q", "exec", "--env", "K=openai", "--model", "gpt-x", "--", "true",
    ];
    env.run(&exec).ok();
    env.run(&exec).code(7);
}

#[test]
fn an_unreachable_redis_exits_5_unless_the_database_is_the_fallback() {
    let db = sqlite();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:1/0");
    let mut env = env_with_redis(&db, &url);
    env.run_stdin(&["-q", "keys", "store", "--service", "openai"], KEY)
        .ok();
    env.run(&[
        "-q", "limits", "set", "--type", "requests", "--max", "5", "--per", "day",
    ])
    .ok();
    let r = env.run(&["quota", "check", "--model", "m"]).code(5);
    assert!(r.stderr.contains("Redis"), "{r:#?}");
    let r = env
        .run(&["keys", "get", "--service", "openai", "--model", "m"])
        .code(5);
    assert!(!r.stdout.contains(KEY), "no key handed out");
    let stats = env.run(&["usage", "stats", "--format", "json"]).ok().json();
    assert!(
        stats
            .as_array()
            .is_none_or(|rows| rows.iter().all(|row| row["requests"] == 0)),
        "nothing recorded: {stats}"
    );
    let doctor = env.run(&["doctor"]);
    assert!(
        doctor.stdout.contains("app:[REDACTED]@127.0.0.1:1") && !doctor.stdout.contains(PASSWORD),
        "{doctor:#?}"
    );
    env.set("LLM_ACCOUNTING_ACCOUNTING_REDIS_FALLBACK", "database");
    env.run(&["quota", "check", "--model", "m"]).ok();
    let r = env
        .run(&["keys", "get", "--service", "openai", "--model", "m"])
        .ok();
    assert!(r.stdout.contains(KEY));
}

#[test]
fn the_redis_engine_needs_a_url_and_a_known_name() {
    let db = sqlite();
    let mut env = Env::new(BIN).secrets(&[KEY]);
    env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
    env.set("LLM_ACCOUNTING_ACCOUNTING_ENGINE", "redis");
    let r = env.run(&["quota", "check", "--model", "m"]).code(2);
    assert!(
        r.stderr.contains("LLM_ACCOUNTING_ACCOUNTING_REDIS_URL"),
        "{r:#?}"
    );
    env.set("LLM_ACCOUNTING_ACCOUNTING_ENGINE", "memcached");
    let r = env.run(&["quota", "check", "--model", "m"]).code(2);
    assert!(r.stderr.contains("database, redis"), "{r:#?}");
}
