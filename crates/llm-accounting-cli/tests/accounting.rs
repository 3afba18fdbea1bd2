//! Usage, limits, quota checks and quota-gated `keys get` through the binary, on SQLite,
//! PostgreSQL and MariaDB; bad input exits 2 and records nothing; processes racing a nearly
//! exhausted limit never pass it (strict enforcement).

use llm_accounting_testkit::{Backend, Env, Run, TestDatabase};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");
/// An obviously fake key.
const KEY: &str = "sk-test-FAKE-0000000000000000000000000acc";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// An environment on `db` (and a master key file in its directory), quiet.
fn env_on(db: &TestDatabase) -> Env {
    let mut env = Env::new(BIN).secrets(&[KEY]);
    env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
    env
}

fn every_database() -> Vec<TestDatabase> {
    runtime().block_on(TestDatabase::create_all())
}

#[test]
fn usage_limits_and_quota_checks() {
    for db in every_database() {
        let env = env_on(&db);
        env.run(&[
            "-q", "limits", "set", "--type", "requests", "--max", "2", "--per", "day", "--user",
            "alice", "--model", "gpt-4o",
        ])
        .ok();
        env.run(&[
            "-q", "limits", "set", "--type", "cost", "--max", "0.05", "--per", "hour", "--every",
            "6",
        ])
        .ok();
        env.run(&[
            "-q",
            "limits",
            "set",
            "--type",
            "total-tokens",
            "--max",
            "1000",
            "--rolling",
            "24h",
            "--project",
            "p1",
        ])
        .ok();
        let limits = env.run(&["limits", "list", "--format", "json"]).ok().json();
        assert_eq!(limits.as_array().map(Vec::len), Some(3), "{limits}");
        assert_eq!(limits[1]["max"], "0.05");
        assert_eq!(limits[1]["window"], "6 hours");
        assert_eq!(limits[2]["window"], "rolling 24h");

        for _ in 0..2 {
            env.run(&[
                "-q",
                "usage",
                "track",
                "--model",
                "gpt-4o",
                "--user",
                "alice",
                "--service",
                "openai",
                "--project",
                "p1",
                "--prompt-tokens",
                "100",
                "--completion-tokens",
                "20",
                "--cost",
                "0.0125",
                "--execution-time",
                "1.25",
            ])
            .ok();
        }
        let denied = env
            .run(&[
                "-q", "quota", "check", "--model", "gpt-4o", "--user", "alice",
            ])
            .code(7);
        assert_eq!(denied.stderr.lines().count(), 1, "{denied:#?}");
        assert!(
            denied.stderr.contains("limit #1")
                && denied.stderr.contains("usage 2/2")
                && denied.stderr.contains("resets at"),
            "{denied:#?}"
        );
        assert!(denied.stdout.is_empty());
        env.run(&["-q", "quota", "check", "--model", "gpt-4o", "--user", "bob"])
            .ok();
        // $0.025 used of $0.05: a $0.03 estimate does not fit, $0.025 does.
        let cost = env
            .run(&["-q", "quota", "check", "--model", "m", "--cost", "0.03"])
            .code(7);
        assert!(cost.stderr.contains("$0.025/$0.05"), "{cost:#?}");
        env.run(&["-q", "quota", "check", "--model", "m", "--cost", "0.025"])
            .ok();
        // 240 of 1,000 tokens in project p1 over the last 24 hours.
        env.run(&[
            "-q",
            "quota",
            "check",
            "--model",
            "m",
            "--project",
            "p1",
            "--input-tokens",
            "761",
        ])
        .code(7);
        env.run(&[
            "-q",
            "quota",
            "check",
            "--model",
            "m",
            "--project",
            "p1",
            "--input-tokens",
            "760",
        ])
        .ok();

        let stats = env
            .run(&["usage", "stats", "--by", "user", "--format", "json"])
            .ok()
            .json();
        assert_eq!(stats[0]["group"], "alice");
        assert_eq!(stats[0]["requests"], 2);
        assert_eq!(stats[0]["cost"], "0.025", "exact money: {stats}");
        assert_eq!(stats[0]["cost_micros"], 25_000);
        let tail = env
            .run(&["usage", "tail", "-n", "1", "--format", "json"])
            .ok()
            .json();
        assert_eq!(tail.as_array().map(Vec::len), Some(1));
        assert_eq!(tail[0]["execution_time_us"], 1_250_000);
        let table = env.run(&["usage", "stats", "--by", "model"]).ok();
        assert!(
            table.stdout.contains("gpt-4o") && table.stdout.contains("0.025"),
            "{table:#?}"
        );

        env.run(&["-q", "limits", "delete", "--id", "1"]).ok();
        env.run(&["-q", "limits", "delete", "--id", "1"]).code(2);
        env.run(&[
            "-q", "quota", "check", "--model", "gpt-4o", "--user", "alice",
        ])
        .ok();

        env.run(&["-q", "usage", "purge", "--before", "2999-01-01"])
            .ok();
        let tail = env.run(&["usage", "tail", "--format", "json"]).ok().json();
        assert_eq!(tail, serde_json::json!([]), "{}", db.backend());
    }
}

/// `--max unlimited` exempts its scope from less specific limits only; a negative maximum is
/// still refused.
#[test]
fn unlimited_limits_exempt_from_less_specific_ones() {
    for db in every_database() {
        let env = env_on(&db);
        for scope in [
            &[][..],
            &["--user", "alice"],
            &["--user", "alice", "--model", "o3"],
        ] {
            let max = if scope.len() == 2 { "unlimited" } else { "1" };
            let mut args = vec![
                "-q", "limits", "set", "--type", "requests", "--max", max, "--per", "day",
            ];
            args.extend_from_slice(scope);
            env.run(&args).ok();
        }
        for user in ["bob", "alice"] {
            env.run(&["-q", "usage", "track", "--model", "o3", "--user", user])
                .ok();
        }
        let list = env.run(&["limits", "list", "--format", "json"]).ok().json();
        assert_eq!(list[1]["max"], "unlimited", "{list}");
        let check = |model: &str, user: &str| -> Run {
            env.run(&["-q", "quota", "check", "--model", model, "--user", user])
        };
        // The global limit (two calls today, at most one) refuses bob...
        assert!(check("gpt-4o", "bob").code(7).stderr.contains("global"));
        // ... not alice, exempt from it...
        check("gpt-4o", "alice").ok();
        // ... except where a limit more specific than her exemption applies.
        let denied = check("o3", "alice").code(7);
        assert!(denied.stderr.contains("model=o3 user=alice"), "{denied:#?}");
        let refused = env
            .run(&[
                "-q", "limits", "set", "--type", "requests", "--max", "-1", "--per", "day",
            ])
            .code(2);
        assert!(refused.stderr.contains("negative"), "{refused:#?}");
        assert_eq!(
            env.run(&["limits", "list", "--format", "json"])
                .ok()
                .json()
                .as_array()
                .map(Vec::len),
            Some(3)
        );
    }
}

#[test]
fn bad_input_exits_2_and_records_nothing() {
    let env = Env::new(BIN);
    let bad: &[&[&str]] = &[
        &["usage", "track", "--model", "m", "--prompt-tokens", "-5"],
        &["usage", "track", "--model", "m", "--prompt-tokens", "ten"],
        &[
            "usage",
            "track",
            "--model",
            "m",
            "--completion-tokens",
            "1.5",
        ],
        &["usage", "track", "--model", "m", "--cost", "-0.01"],
        &["usage", "track", "--model", "m", "--cost", "abc"],
        &["usage", "track", "--model", "m", "--cost", "1e3"],
        &["usage", "track", "--model", "m", "--execution-time", "-1"],
        &["usage", "track", "--model", "m", "--at", "yesterday"],
        &["usage", "track", "--model", ""],
        // Issue 23: accounting names follow the rule of key names (no invisible characters).
        &["usage", "track", "--model", "gpt-4o\u{202E}"],
        &["usage", "track", "--model", "m", "--user", "al\u{200B}ice"],
        &["usage", "track", "--model", "m", "--caller", "app\u{2800}"],
        &["usage", "track", "--model", "m", "--session", "s\u{00A0}1"],
        &["usage", "track", "--prompt-tokens", "5"],
        &["usage", "stats", "--by", "colour"],
        &["usage", "stats", "--top", "0"],
        &["usage", "purge"],
        &["usage", "purge", "--before", "soon"],
        &[
            "limits", "set", "--type", "tokens", "--max", "5", "--per", "day",
        ],
        &[
            "limits", "set", "--type", "requests", "--max", "-1", "--per", "day",
        ],
        &[
            "limits", "set", "--type", "requests", "--max", "1.5", "--per", "day",
        ],
        &[
            "limits", "set", "--type", "requests", "--max", "lots", "--per", "day",
        ],
        &[
            "limits", "set", "--type", "cost", "--max", "-0.5", "--per", "day",
        ],
        &[
            "limits", "set", "--type", "requests", "--max", "5", "--per", "day", "--every", "0",
        ],
        &[
            "limits",
            "set",
            "--type",
            "requests",
            "--max",
            "5",
            "--per",
            "fortnight",
        ],
        &[
            "limits",
            "set",
            "--type",
            "requests",
            "--max",
            "5",
            "--rolling",
            "0s",
        ],
        &[
            "limits",
            "set",
            "--type",
            "requests",
            "--max",
            "5",
            "--rolling",
            "abc",
        ],
        &["limits", "set", "--type", "requests", "--max", "5"],
        &[
            "limits",
            "set",
            "--type",
            "requests",
            "--max",
            "5",
            "--per",
            "day",
            "--rolling",
            "1h",
        ],
        &[
            "limits",
            "set",
            "--type",
            "requests",
            "--max",
            "5",
            "--every",
            "2",
            "--rolling",
            "1h",
        ],
        // Amounts past the documented maximums (10^12 tokens, $10^9 per call): once
        // accepted, every later sum on the scope overflowed.
        &[
            "usage",
            "track",
            "--model",
            "m",
            "--prompt-tokens",
            "9223372036854775807",
        ],
        &[
            "usage",
            "track",
            "--model",
            "m",
            "--completion-tokens",
            "1000000000001",
        ],
        &[
            "usage",
            "track",
            "--model",
            "m",
            "--cost",
            "1000000000.000001",
        ],
        &[
            "quota",
            "check",
            "--model",
            "m",
            "--input-tokens",
            "1000000000001",
        ],
        &["quota", "check", "--model", "m", "--input-tokens", "-1"],
        &["quota", "check", "--user", "alice"],
        &[
            "keys",
            "get",
            "--service",
            "openai",
            "--model",
            "m",
            "--input-tokens",
            "x",
        ],
        &["keys", "get", "--service", "openai", "--input-tokens", "5"],
    ];
    for args in bad {
        let r = env.run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:#?}");
        assert!(!r.stderr.is_empty(), "{args:?} says why");
    }
    let tail = env.run(&["usage", "tail", "--format", "json"]).ok().json();
    assert_eq!(tail, serde_json::json!([]), "nothing recorded");
    let limits = env.run(&["limits", "list", "--format", "json"]).ok().json();
    assert_eq!(limits, serde_json::json!([]), "no limit created");
}

#[test]
fn keys_get_with_a_model_is_gated() {
    for db in every_database() {
        let env = env_on(&db);
        let store = [
            "-q",
            "keys",
            "store",
            "--service",
            "openai",
            "--user",
            "alice",
        ];
        env.run_stdin(&store, KEY).ok();
        env.run(&[
            "-q", "limits", "set", "--type", "requests", "--max", "2", "--per", "day", "--user",
            "alice", "--model", "gpt-4o",
        ])
        .ok();
        let get = [
            "-q",
            "keys",
            "get",
            "--service",
            "openai",
            "--user",
            "alice",
            "--model",
            "gpt-4o",
            "--input-tokens",
            "50",
        ];
        for _ in 0..2 {
            let r = env.run(&get).ok();
            assert_eq!(r.stdout.trim_end(), KEY);
        }
        let r = env.run(&get).code(7);
        assert!(r.stdout.is_empty(), "no key printed when denied: {r:#?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:#?}");
        assert!(r.stderr.contains("usage 2/2"), "{r:#?}");
        // Another model is not limited; without --model, no gate.
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
        .ok();
        let plain = env
            .run(&[
                "-q",
                "keys",
                "get",
                "--service",
                "openai",
                "--user",
                "alice",
            ])
            .ok();
        assert_eq!(plain.stdout.trim_end(), KEY);

        // Each gated hand-out recorded one request at once, attributed to the key version.
        let tail = env.run(&["usage", "tail", "--format", "json"]).ok().json();
        let events = tail.as_array().expect("array");
        assert_eq!(events.len(), 3, "{tail}");
        for e in events {
            assert_eq!(e["key"], "service \"openai\", user \"alice\"");
            assert_eq!(e["key_version"], 1);
            assert_eq!(e["service"], "openai");
            assert_eq!(e["prompt_tokens"], 0, "tokens unknown at hand-out");
        }
        let audit = env.run(&["keys", "audit", "--format", "json"]).ok().json();
        let refused = audit
            .as_array()
            .expect("array")
            .iter()
            .filter(|r| r["outcome"] == "quota_exceeded")
            .count();
        assert_eq!(refused, 1, "the denial is audited: {audit}");
        assert!(!audit.to_string().contains(KEY));
    }
}

/// Processes racing for the last units of a limit: exactly the room left is handed out.
#[test]
fn processes_racing_a_limit_never_pass_it() {
    for db in every_database() {
        let env = env_on(&db);
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
        assert_eq!((handed_out, denied), (4, 6), "{}: {runs:#?}", db.backend());
    }
}

#[test]
fn exec_with_a_model_is_gated_and_starts_nothing_when_denied() {
    let db = runtime()
        .block_on(TestDatabase::create(Backend::Sqlite))
        .expect("SQLite is always there");
    let env = env_on(&db);
    env.run_stdin(&["-q", "keys", "store", "--service", "openai"], KEY)
        .ok();
    env.run(&[
        "-q", "limits", "set", "--type", "requests", "--max", "1", "--per", "day", "--model",
        "gpt-4o",
    ])
    .ok();
    let marker = env.dir().join("started");
    // The child writes the length of the key it got (never the key) to the marker.
    let script = format!(
        "printf '%s' \"${{#OPENAI_API_KEY}}\" > '{}'",
        marker.display()
    );
    let exec = [
        "-q",
        "exec",
        "--env",
        "OPENAI_API_KEY=openai",
        "--model",
        "gpt-4o",
        "--",
        "sh",
        "-c",
        script.as_str(),
    ];
    env.run(&exec).ok();
    let got = std::fs::read_to_string(&marker).expect("the allowed run started");
    assert_eq!(got, KEY.len().to_string(), "the allowed run got its key");
    std::fs::remove_file(&marker).expect("remove marker");
    let r = env.run(&exec).code(7);
    assert!(!marker.exists(), "a denied run starts no command");
    assert!(r.stderr.contains("usage 1/1"), "{r:#?}");
    // Without --model: no gate.
    env.run(&[
        "-q",
        "exec",
        "--env",
        "OPENAI_API_KEY=openai",
        "--",
        "sh",
        "-c",
        script.as_str(),
    ])
    .ok();
    assert!(marker.exists());
}

/// Issue 24 §4: an empty `limits list` or `usage tail` printed a bare header. They say what
/// was asked, on stderr (stdout stays empty; JSON stays `[]`).
#[test]
fn empty_listings_say_so() {
    let env = Env::new(BIN);
    for (args, said) in [
        (&["limits", "list"][..], "no limits set"),
        (&["usage", "tail"], "no usage events recorded yet"),
    ] {
        let r = env.run(args).ok();
        assert!(r.stdout.is_empty(), "{args:?}: {r:#?}");
        assert!(r.stderr.contains(said), "{args:?}: {r:#?}");
        let mut json = args.to_vec();
        json.extend(["--format", "json"]);
        assert_eq!(env.run(&json).ok().stdout.trim(), "[]", "{args:?}");
        let mut quiet = vec!["-q"];
        quiet.extend(args);
        assert!(env.run(&quiet).ok().stderr.is_empty(), "{args:?}");
    }
}

/// Issue 24 §4: `--accounting-db` alone created the default key database (`keys.db`) too. A
/// command that needs only the accounting opens only its database.
#[test]
fn an_accounting_database_alone_creates_no_key_database() {
    let env = Env::with_data_dir_only(BIN);
    let acc = env.dir().join("acc.db");
    let url = format!("sqlite://{}", acc.display());
    env.run(&["--accounting-db", &url, "--create", "usage", "tail"])
        .ok();
    env.run(&["--accounting-db", &url, "limits", "list"]).ok();
    assert!(acc.exists(), "the accounting database was made");
    assert!(
        !env.dir().join("data").join("keys.db").exists(),
        "no key database was made"
    );
}

/// Issue 24 §4: `--model '*'` was a literal model name in this project's tables while the
/// Python package's table reads `*` as any model. `*` now means any, on every scope flag.
#[test]
fn a_star_in_a_limit_scope_means_any() {
    let env = Env::new(BIN);
    env.run(&[
        "-q", "limits", "set", "--type", "requests", "--max", "1", "--per", "day", "--model", "*",
        "--user", "alice", "--caller", "*",
    ])
    .ok();
    let limits = env.run(&["limits", "list", "--format", "json"]).ok().json();
    let scope = &limits[0]["scope"];
    assert!(scope["model"].is_null(), "{limits}");
    assert!(scope["caller"].is_null(), "{limits}");
    assert_eq!(scope["user"], "alice", "{limits}");
    // It applies to any model: the second request of the day, to another model, is refused.
    env.run(&["quota", "check", "--model", "gpt-4o", "--user", "alice"])
        .ok();
    env.run(&[
        "-q", "usage", "track", "--model", "gpt-4o", "--user", "alice",
    ])
    .ok();
    env.run(&["quota", "check", "--model", "claude-3", "--user", "alice"])
        .code(7);
}
