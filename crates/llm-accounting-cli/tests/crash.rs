//! Killed writers leave no unaudited change: `keys rotate` processes are SIGKILLed at random
//! moments; afterwards every version that exists has its audit row (the row commits with the
//! change when the trail is in the key database), or at least its intent row (the trail in
//! another database), and the chain verifies.

use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use llm_accounting_testkit::cli::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");
const RUNS: usize = 30;

fn value(i: usize) -> String {
    format!("sk-test-FAKE-crash-{i:04}-000000000000000000")
}

/// Starts `keys rotate` with `value` on stdin and the environment of `env` plus `extra`.
fn rotate(env: &Env, value: &str, extra: &[(&str, &str)]) -> std::process::Child {
    let mut child = env
        .command(&["keys", "rotate", "--service", "openai", "-q"])
        .envs(extra.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(value.as_bytes());
    drop(stdin);
    child
}

/// A pseudo-random fraction in [0, 1.3), different per run.
fn fraction(i: usize) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from((nanos ^ (i as u32).wrapping_mul(2_654_435_761)) % 1_300) / 1_000.0
}

/// Kills rotations at random points of their run; returns the versions that exist.
fn kill_rotations_at_random(env: &Env, extra: &[(&str, &str)]) -> Vec<i64> {
    // How long one rotation takes here.
    let started = Instant::now();
    let status = rotate(env, &value(9_999), extra).wait().expect("wait");
    assert!(status.success(), "a rotation runs");
    let typical = started.elapsed();
    for i in 0..RUNS {
        let mut child = rotate(env, &value(i), extra);
        std::thread::sleep(typical.mul_f64(fraction(i)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    env.query("SELECT version FROM api_key_versions ORDER BY version")
        .into_iter()
        .map(|r| r.try_get::<i64>("", "version").expect("version"))
        .collect()
}

fn audit_rows(env: &Env, extra: &[(&str, &str)]) -> serde_json::Value {
    let r = env
        .run_with(&["keys", "audit", "--format", "json"], None, extra)
        .ok();
    r.json()
}

#[test]
fn every_change_that_survived_a_kill_has_its_audit_row() {
    let env = Env::new(BIN);
    env.run_stdin(&["keys", "store", "--service", "openai"], &value(10_000))
        .ok();
    let versions = kill_rotations_at_random(&env, &[]);
    assert!(versions.len() >= 2, "{versions:?}");
    let rows = audit_rows(&env, &[]);
    let audited: Vec<String> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| {
            r["outcome"] == "ok" && (r["operation"] == "rotate" || r["operation"] == "store")
        })
        .filter_map(|r| r["detail"].as_str().map(str::to_owned))
        .collect();
    for v in &versions {
        assert!(
            audited.contains(&format!("version {v}")),
            "version {v} exists but has no audit row ({} versions, {} rows)",
            versions.len(),
            audited.len()
        );
    }
    env.run(&["keys", "audit", "--verify"]).ok();
    // And the killed writers left the key readable.
    env.run(&["keys", "get", "--service", "openai"]).ok();
}

#[test]
fn with_the_trail_in_another_database_a_kill_leaves_at_least_the_intent() {
    let env = Env::new(BIN);
    let audit_db = env.dir().join("audit.db");
    let url = format!("sqlite://{}", audit_db.display());
    let extra = [("LLM_ACCOUNTING_AUDIT_DATABASE_URL", url.as_str())];
    env.run_with(
        &["keys", "store", "--service", "openai"],
        Some(value(10_000).as_bytes()),
        &extra,
    )
    .ok();
    let versions = kill_rotations_at_random(&env, &extra);
    let rows = audit_rows(&env, &extra);
    let intents = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["outcome"] == "intent" && r["operation"] == "rotate")
        .count();
    // Every rotation that committed wrote its intent first (the store's is version 1).
    assert!(
        intents >= versions.len() - 1,
        "{} versions, {intents} intent rows",
        versions.len()
    );
    env.run_with(&["keys", "audit", "--verify"], None, &extra)
        .ok();
}
