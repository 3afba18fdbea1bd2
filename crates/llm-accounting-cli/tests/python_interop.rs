//! Sharing a database with the Python `llm-accounting` package (0.1.34, installed by pip in a
//! virtual environment that is not on PATH; `LLM_ACCOUNTING_TEST_PYTHON` names its
//! interpreter). Limits set and usage tracked by Python are enforced here; usage tracked here
//! counts in Python's `check_quota` and shows in its `get_period_stats`; a limit its tables
//! cannot hold is kept beside them; an unknown schema version is refused; both sides answer
//! quota checks alike.

use std::path::{Path, PathBuf};
use std::process::Command;

use llm_accounting_testkit::{Env, skip_or_fail};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");
const PYTHON_ENV: &str = "LLM_ACCOUNTING_TEST_PYTHON";

fn python() -> Option<PathBuf> {
    match std::env::var_os(PYTHON_ENV) {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            skip_or_fail(
                "Python llm-accounting interop",
                &format!(
                    "{PYTHON_ENV} does not name the interpreter of a virtual environment with \
                     llm-accounting==0.1.34 installed"
                ),
            );
            None
        }
    }
}

/// Runs the driver script `script` (in `tests/python`) with `args`, in `dir`: the package
/// writes cache files under its working directory, kept in the test's. Its last line of
/// output, as JSON.
fn run_driver(python: &Path, script: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(python)
        .current_dir(dir)
        .arg(script)
        .args(args)
        .env_remove("LLM_ACCOUNTING_DATABASE_URL")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Runs the SQLite driver on the database file `db`.
fn driver(python: &Path, db: &Path, args: &[&str]) -> serde_json::Value {
    let path = db.to_str().expect("UTF-8 path");
    let args: Vec<&str> = std::iter::once(path).chain(args.iter().copied()).collect();
    run_driver(
        python,
        "sqlite_driver.py",
        db.parent().expect("directory"),
        &args,
    )
}

#[test]
fn python_sqlite_database_is_shared_both_ways() {
    let Some(python) = python() else { return };
    // The package creates the database (the environment's `k.db`) and its schema.
    let env = Env::new(BIN);
    let db = env.db_path();
    driver(&python, &db, &["init"]);

    // Python's limit and usage are seen and enforced here: 2 of 3 used.
    let limits = env.run(&["limits", "list", "--format", "json"]).ok();
    assert!(limits.stdout.contains("\"alice\""), "{limits:#?}");
    env.run(&[
        "-q", "quota", "check", "--model", "gpt-4", "--user", "alice",
    ])
    .ok();
    let stats = env
        .run(&["usage", "stats", "--by", "user", "--format", "json"])
        .ok();
    assert!(stats.stdout.contains("\"cost\": \"0.025\""), "{stats:#?}");

    // Usage tracked here goes into Python's table: Python's check now refuses, and its
    // statistics count the call (cost exact to the micro-dollar).
    env.run(&[
        "-q",
        "usage",
        "track",
        "--model",
        "gpt-4",
        "--user",
        "alice",
        "--caller",
        "app",
        "--service",
        "openai",
        "--prompt-tokens",
        "10",
        "--completion-tokens",
        "5",
        "--cost",
        "0.0125",
    ])
    .ok();
    let denied = env
        .run(&[
            "-q", "quota", "check", "--model", "gpt-4", "--user", "alice",
        ])
        .code(7);
    assert!(denied.stderr.contains("usage 3/3"), "{denied:#?}");
    let check = driver(&python, &db, &["check", "alice"]);
    assert_eq!(check["allowed"], false, "Python counts our entry: {check}");
    assert_eq!(driver(&python, &db, &["check", "bob"])["allowed"], true);
    let stats = driver(&python, &db, &["stats"]);
    let cost = stats["sum_cost"].as_f64().expect("cost");
    assert!((cost - 0.0375).abs() < 1e-9, "{stats}");
    assert_eq!(stats["sum_prompt_tokens"], 30);
    // A time series over Python's table (no rollups: summed per period) counts the same.
    let series = env
        .run(&[
            "usage",
            "stats",
            "--period",
            "year",
            "--since",
            "2020-01-01",
            "--format",
            "json",
        ])
        .ok()
        .json();
    let micros: u64 = series
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["cost_micros"].as_u64().expect("micros"))
        .sum();
    assert_eq!(micros, 37_500, "{series}");
    // So does the usage report, and its page says so exactly.
    let report = env
        .run(&["usage", "report", "--since", "2020-01-01", "--json"])
        .ok()
        .json();
    assert_eq!(report["totals"]["cost_micros"], 37_500, "{report}");
    assert_eq!(report["totals"]["requests"], 3, "{report}");
    let page = env
        .run(&["usage", "report", "--since", "2020-01-01"])
        .ok()
        .stdout;
    assert!(page.contains("id=\"total-cost\">$0.0375</div>"), "{page}");
    assert!(page.contains("id=\"limits\""), "{page}");
    // Our own tail still knows the service of our entry.
    let tail = env
        .run(&["usage", "tail", "-n", "1", "--format", "json"])
        .ok();
    assert!(tail.stdout.contains("\"service\": \"openai\""), "{tail:#?}");

    // A limit Python can express goes into its table; one it cannot is refused, naming why.
    env.run(&[
        "-q", "limits", "set", "--type", "cost", "--max", "1.5", "--per", "day", "--model", "gpt-4",
    ])
    .ok();
    let py_limits = driver(&python, &db, &["limits"]);
    assert!(
        py_limits
            .as_array()
            .expect("array")
            .iter()
            .any(|l| l["limit_type"] == "cost" && l["max_value"] == 1.5 && l["model"] == "gpt-4"),
        "{py_limits}"
    );
    // One it cannot hold (a service scope) is kept in this project's table beside it, with
    // a negative id and a note saying so, and enforced here: our entry was served by openai.
    let kept = env
        .run(&[
            "limits",
            "set",
            "--type",
            "requests",
            "--max",
            "1",
            "--per",
            "day",
            "--service",
            "openai",
        ])
        .ok();
    assert!(
        kept.stderr.contains("#-") && kept.stderr.contains("own table"),
        "{kept:#?}"
    );
    let py_limits = driver(&python, &db, &["limits"]);
    assert_eq!(py_limits.as_array().expect("array").len(), 2, "{py_limits}");
    let ours = env.run(&["limits", "list", "--format", "json"]).ok().json();
    let kept_id = ours
        .as_array()
        .expect("array")
        .iter()
        .find(|l| l["scope"]["service"] == "openai")
        .and_then(|l| l["id"].as_i64())
        .expect("the service limit is listed");
    assert!(kept_id < 0, "{ours}");
    let denied = env
        .run(&[
            "-q",
            "quota",
            "check",
            "--model",
            "o3",
            "--user",
            "bob",
            "--service",
            "openai",
        ])
        .code(7);
    assert!(denied.stderr.contains("service=openai"), "{denied:#?}");
    env.run(&["-q", "quota", "check", "--model", "o3", "--user", "bob"])
        .ok();
    env.run(&["-q", "limits", "delete", "--id", &kept_id.to_string()])
        .ok();
    env.run(&[
        "-q",
        "quota",
        "check",
        "--model",
        "o3",
        "--user",
        "bob",
        "--service",
        "openai",
    ])
    .ok();
    let purge = env
        .run(&["-q", "usage", "purge", "--before", "2999-01-01"])
        .code(2);
    assert!(purge.stderr.contains("Python"), "{purge:#?}");

    // Another schema version is refused, and nothing is written.
    env.sql("UPDATE alembic_version SET version_num = 'ffff00000000'");
    let r = env
        .run(&[
            "-q", "usage", "track", "--model", "gpt-4", "--user", "alice",
        ])
        .code(2);
    assert!(
        r.stderr.contains("ffff00000000") && r.stderr.contains("e5f6c7a8d9b0"),
        "{r:#?}"
    );
}

/// Runs the PostgreSQL driver's `command` on the database at `url`.
fn pg_driver(python: &Path, dir: &Path, url: &str, command: &str) -> serde_json::Value {
    let url = url.replacen("postgres://", "postgresql://", 1);
    run_driver(python, "pg_driver.py", dir, &[&url, command])
}

/// On PostgreSQL (the package's own PostgreSQL backend cannot track usage or check quotas in
/// 0.1.34: see the driver): the schema made by the package, a limit and entries written
/// through its models are enforced here; usage tracked here shows in its
/// `get_period_stats`.
#[test]
fn python_postgres_database_is_shared_both_ways() {
    let Some(python) = python() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(llm_accounting_testkit::TestDatabase::create(
        llm_accounting_testkit::Backend::Postgres,
    )) else {
        return;
    };
    let mut env = Env::new(BIN);
    pg_driver(&python, env.dir(), db.url(), "init");
    env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
    env.run(&[
        "-q", "quota", "check", "--model", "gpt-4", "--user", "alice",
    ])
    .ok();
    env.run(&[
        "-q",
        "usage",
        "track",
        "--model",
        "gpt-4",
        "--user",
        "alice",
        "--caller",
        "app",
        "--prompt-tokens",
        "10",
        "--cost",
        "0.0125",
    ])
    .ok();
    let denied = env
        .run(&[
            "-q", "quota", "check", "--model", "gpt-4", "--user", "alice",
        ])
        .code(7);
    assert!(denied.stderr.contains("usage 3/3"), "{denied:#?}");
    let stats = pg_driver(&python, env.dir(), db.url(), "stats");
    let cost = stats["sum_cost"].as_f64().expect("cost");
    assert!((cost - 0.0375).abs() < 1e-9, "{stats}");
    assert_eq!(stats["sum_prompt_tokens"], 30);
    // A gated key hand-out is held to Python's limit too, beside one kept in our table
    // (both tables' rows are locked by the reservation).
    env.run(&[
        "-q",
        "limits",
        "set",
        "--type",
        "requests",
        "--max",
        "100",
        "--per",
        "day",
        "--service",
        "openai",
    ])
    .ok();
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
        "sk-test-FAKE-python-pg-0123456789",
    )
    .ok();
    env.run(&[
        "-q",
        "keys",
        "get",
        "--service",
        "openai",
        "--user",
        "alice",
        "--model",
        "gpt-4",
    ])
    .code(7);
    // The package's user limit has no model: every model of alice's counts.
    env.run(&[
        "-q",
        "keys",
        "get",
        "--service",
        "openai",
        "--user",
        "alice",
        "--model",
        "o3",
    ])
    .code(7);
}

/// Asks this project's `quota check` each call the Python package answered (see
/// `tests/python/parity.py`), in `env`'s database; every answer must be the package's, and
/// the seven-minute window must count what the package counted.
fn assert_same_answers(env: &Env, answers: &serde_json::Value, m7_usage: u64) {
    let calls = answers["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 12, "{answers}");
    for call in calls {
        let mut args = vec![
            "-q".to_owned(),
            "quota".to_owned(),
            "check".to_owned(),
            "--model".to_owned(),
            call["model"].as_str().expect("model").to_owned(),
            "--user".to_owned(),
            call["user"].as_str().expect("user").to_owned(),
            "--input-tokens".to_owned(),
            call["input_tokens"].to_string(),
        ];
        if let Some(p) = call["project"].as_str() {
            args.extend(["--project".to_owned(), p.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let allowed = call["allowed"].as_bool().expect("allowed");
        let out = env.run(&args).code(if allowed { 0 } else { 7 });
        if call["model"] == "m7" {
            let usage = format!("usage {m7_usage}/{m7_usage}");
            assert!(out.stderr.contains(&usage), "{call}: {out:#?}");
        }
    }
    let limits = env.run(&["limits", "list"]).ok();
    for shown in [
        "unlimited",
        "without project",
        "rolling month (from the 1st)",
    ] {
        assert!(limits.stdout.contains(shown), "{shown}: {limits:#?}");
    }
}

/// The package's quota rules, as it applies them on SQLite, are this project's: exemptions
/// (`max_value = -1`) in its order of specificity, a PROJECT limit without a project,
/// `monthly_rolling`, minute windows aligned to the hour.
#[test]
fn python_quota_rules_give_the_same_answers() {
    let Some(python) = python() else { return };
    let env = Env::new(BIN);
    let answers = driver(&python, &env.db_path(), &["parity"]);
    let m7 = answers["m7_usage"].as_u64().expect("m7 usage");
    assert_same_answers(&env, &answers, m7);
}

/// The same rules on PostgreSQL: the same limits and entries written through the package's
/// models give the answers the package gave on SQLite.
#[test]
fn python_quota_rules_give_the_same_answers_on_postgres() {
    let Some(python) = python() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(llm_accounting_testkit::TestDatabase::create(
        llm_accounting_testkit::Backend::Postgres,
    )) else {
        return;
    };
    let reference = Env::new(BIN);
    let answers = driver(&python, &reference.db_path(), &["parity"]);
    let mut env = Env::new(BIN);
    let written = pg_driver(&python, env.dir(), db.url(), "parity");
    env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
    let m7 = written["m7_usage"].as_u64().expect("m7 usage");
    assert_same_answers(&env, &answers, m7);
}

/// Python tracks calls (without checking quotas) while ten processes here race for a global
/// limit: no hand-out passes the limit as counted when it was made, and afterwards the
/// counters agree with the entries exactly (every entry Python wrote counted once).
#[test]
fn python_writing_while_we_reserve_is_counted_exactly() {
    let Some(python) = python() else { return };
    let env = Env::new(BIN);
    let db = env.db_path();
    driver(&python, &db, &["init"]);
    env.run_stdin(
        &["-q", "keys", "store", "--service", "openai"],
        "sk-fake-interop-0000",
    )
    .ok();
    env.run(&[
        "-q", "limits", "set", "--type", "requests", "--max", "20", "--per", "day",
    ])
    .ok();
    let get = [
        "-q",
        "keys",
        "get",
        "--service",
        "openai",
        "--model",
        "race",
    ];
    let (runs, _) = std::thread::scope(|s| {
        let writer = s.spawn(|| driver(&python, &db, &["track", "10", "bulk"]));
        let handles: Vec<_> = (0..25).map(|_| s.spawn(|| env.run(&get))).collect();
        let runs: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        (runs, writer.join().expect("writer"))
    });
    let handed_out = runs.iter().filter(|r| r.code == 0).count();
    let denied = runs.iter().filter(|r| r.code == 7).count();
    assert_eq!(handed_out + denied, 25, "{runs:#?}");
    // 2 of Python's entries were there before; its 10 more only take room.
    assert!(
        (8..=18).contains(&handed_out),
        "{handed_out} handed out: {runs:#?}"
    );
    let count = driver(&python, &db, &["count"]);
    let total = count["requests"].as_f64().expect("a count") as u64;
    assert_eq!(total, 2 + 10 + handed_out as u64);
    let denied = env
        .run(&["-q", "quota", "check", "--model", "race"])
        .code(7);
    assert!(
        denied.stderr.contains(&format!("usage {total}/20")),
        "the counters hold every entry once: {denied:#?}"
    );
}

/// A row another program wrote past every maximum (tokens near 2^63, cost 1e300) is read as
/// the maximum: statistics and quota checks on its scope still answer, none overflows.
#[test]
fn rows_past_the_maximums_are_read_saturated() {
    let Some(python) = python() else { return };
    let env = Env::new(BIN);
    let db = env.db_path();
    driver(&python, &db, &["init"]);
    driver(&python, &db, &["huge"]);
    driver(&python, &db, &["huge"]);
    env.run(&[
        "-q",
        "limits",
        "set",
        "--type",
        "input-tokens",
        "--max",
        "2500000000000",
        "--per",
        "day",
        "--user",
        "mallory",
    ])
    .ok();
    let stats = env
        .run(&["usage", "stats", "--by", "user", "--format", "json"])
        .ok();
    assert!(stats.stdout.contains("2000000000000"), "{stats:#?}");
    let allowed = env
        .run(&[
            "-q", "quota", "check", "--model", "gpt-4", "--user", "mallory",
        ])
        .code(0);
    assert!(allowed.stderr.is_empty(), "{allowed:#?}");
    let denied = env
        .run(&[
            "-q",
            "quota",
            "check",
            "--model",
            "gpt-4",
            "--user",
            "mallory",
            "--input-tokens",
            "1000000000000",
        ])
        .code(7);
    assert!(
        denied.stderr.contains("usage 2000000000000/2500000000000"),
        "{denied:#?}"
    );
}
