//! End-to-end tests of the `llm-accounting` binary: a real SQLite file and a real local master
//! key in a temporary directory, keys on stdin, exit codes and output checked.

use std::path::Path;
use std::process::{Command, Stdio};

use llm_accounting_testkit::{Env, Run};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-0000000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-0000000000000000000000000002";
const KEY_BOB: &str = "sk-test-FAKE-0000000000000000000000000b0b";

/// Checks that no output carries a secret, except `get`'s stdout.
fn assert_no_secret(run: &Run, secrets: &[&str], stdout_may_have_it: bool) {
    for s in secrets {
        assert!(!run.stderr.contains(s), "secret on stderr: {run:#?}");
        if !stdout_may_have_it {
            assert!(!run.stdout.contains(s), "secret on stdout: {run:#?}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(db: &Path) -> DatabaseConnection {
    Database::connect(format!("sqlite://{}", db.display()))
        .await
        .expect("open the test database")
}

async fn key_id(db: &DatabaseConnection, user: &str) -> String {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT id FROM api_keys WHERE user_id = ?",
            [user.into()],
        ))
        .await
        .expect("query")
        .expect("key row");
    row.try_get("", "id").expect("id")
}

async fn current_envelope(db: &DatabaseConnection, key_id: &str) -> Vec<u8> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT v.envelope FROM api_key_versions v JOIN api_keys k \
             ON k.id = v.key_id AND k.current_version = v.version WHERE k.id = ?",
            [key_id.into()],
        ))
        .await
        .expect("query")
        .expect("version row");
    row.try_get("", "envelope").expect("envelope")
}

async fn set_current_envelope(db: &DatabaseConnection, key_id: &str, envelope: Vec<u8>) {
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "UPDATE api_key_versions SET envelope = ? WHERE key_id = ? AND version = \
             (SELECT current_version FROM api_keys WHERE id = ?)",
            [envelope.into(), key_id.into(), key_id.into()],
        ))
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 1);
}

#[test]
fn round_trip_through_every_command() {
    let env = Env::new(BIN);
    let id = ["--service", "openai", "--user", "alice"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut v = vec!["keys"];
        v.extend_from_slice(extra);
        v.extend_from_slice(&id);
        v
    };
    let secrets = [KEY1, KEY2];
    let mut runs = Vec::new();

    let r = env.run_stdin(&with(&["store"]), &format!("{KEY1}\n")).ok();
    assert!(
        r.stderr
            .contains(r#"stored API key for service "openai", user "alice" (version 1)"#),
        "{r:#?}"
    );
    assert!(r.stdout.is_empty(), "{r:#?}");
    runs.push(r);

    let r = env.run(&with(&["get"])).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));
    assert_no_secret(&r, &secrets, true);

    let r = env.run(&["keys", "list"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{r:#?}");
    for col in [
        "SERVICE",
        "USER",
        "PROJECT",
        "STATE",
        "VERSION",
        "HINT",
        "CREATED",
        "LAST USED",
    ] {
        assert!(lines[0].contains(col), "{r:#?}");
    }
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["openai", "alice", "-", "active", "1", "…0001"]
    );
    assert!(cells[6].ends_with('Z') && cells[6].len() == 20, "{r:#?}");
    runs.push(r);

    let r = env.run(&["keys", "list", "--format", "json"]).ok();
    let v: serde_json::Value = r.json();
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 1);
    let row = rows[0].as_object().expect("object");
    let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "expires_at",
            "hint",
            "last_used_at",
            "project",
            "service",
            "state",
            "updated_at",
            "user",
            "version"
        ]
    );
    assert_eq!(row["service"], "openai");
    assert_eq!(row["user"], "alice");
    assert!(row["project"].is_null());
    assert_eq!(row["state"], "active");
    assert_eq!(row["version"], 1);
    assert_eq!(row["hint"], "…0001");
    assert!(
        row["last_used_at"].is_string(),
        "get was flushed before exit: {row:?}"
    );
    runs.push(r);

    let r = env.run(&with(&["list", "--format", "json"])).ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.stdout).expect("json"),
        v
    );
    runs.push(r);
    let r = env
        .run(&["keys", "list", "--service", "anthropic", "--format", "json"])
        .ok();
    assert_eq!(r.stdout.trim(), "[]");
    runs.push(r);

    let r = env
        .run_stdin(&with(&["rotate"]), &format!("{KEY2}\r\n"))
        .ok();
    assert!(r.stderr.contains("(version 2)"), "{r:#?}");
    runs.push(r);
    let r = env.run(&with(&["get"])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));
    assert_no_secret(&r, &secrets, true);

    let r = env.run(&with(&["disable"])).ok();
    assert!(r.stderr.contains("disabled API key"), "{r:#?}");
    runs.push(r);
    let r = env.run(&with(&["get"])).code(1);
    assert!(r.stderr.contains("disabled"), "{r:#?}");
    assert!(r.stdout.is_empty());
    runs.push(r);
    let r = env.run(&["keys", "list", "--format", "json"]).ok();
    assert!(r.stdout.contains(r#""state": "disabled""#), "{r:#?}");
    runs.push(r);

    let r = env.run(&with(&["enable"])).ok();
    assert!(r.stderr.contains("enabled API key"), "{r:#?}");
    runs.push(r);
    let r = env.run(&with(&["get"])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));

    let r = env.run(&with(&["delete"])).ok();
    assert!(
        r.stderr
            .contains("2 stored version(s) and their ciphertexts are gone for good"),
        "{r:#?}"
    );
    runs.push(r);
    let r = env.run(&with(&["get"])).code(3);
    assert!(r.stderr.contains("no API key stored"), "{r:#?}");
    runs.push(r);
    let r = env.run(&["keys", "list"]).ok();
    assert!(
        r.stdout.is_empty() && r.stderr.contains("no keys stored"),
        "{r:#?}"
    );
    runs.push(r);
    let r = env.run(&["keys", "list", "--format", "json"]).ok();
    assert_eq!(r.stdout.trim(), "[]");
    runs.push(r);

    for r in &runs {
        assert_no_secret(r, &secrets, false);
    }
}

#[test]
fn default_locations_are_announced_and_the_master_key_is_private() {
    let env = Env::with_data_dir_only(BIN);
    let data = env.dir().join("data");
    let r = env
        .run_stdin(&["keys", "store", "--service", "openai"], KEY1)
        .ok();
    let notices: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("using default database"))
        .collect();
    assert_eq!(notices.len(), 1, "{r:#?}");
    assert!(
        notices[0].contains(&data.join("keys.db").display().to_string())
            && notices[0].contains(&data.join("master.key").display().to_string()),
        "{r:#?}"
    );
    assert!(notices[0].contains("LLM_ACCOUNTING_DATABASE_URL"), "{r:#?}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key"))
            .expect("master key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "master key mode {mode:o}");
        let dir_mode = std::fs::metadata(&data)
            .expect("data dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o077, 0, "data dir mode {dir_mode:o}");
    }

    let r = env.run(&["keys", "get", "--service", "openai"]).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));
    let r = env.run(&["-q", "keys", "get", "--service", "openai"]).ok();
    assert!(r.stderr.is_empty(), "--quiet: {r:#?}");

    // Explicit locations: no notice.
    let explicit = Env::new(BIN);
    let r = explicit.run(&["keys", "list"]).ok();
    assert!(!r.stderr.contains("using default"), "{r:#?}");
}

#[test]
fn exit_codes_for_bad_input_and_missing_things() {
    let env = Env::new(BIN);
    let store = ["keys", "store", "--service", "openai"];

    let r = env.run(&["keys", "get", "--service", "openai"]).code(3);
    assert_eq!(
        r.stderr.trim(),
        r#"error: no API key stored for service "openai""#
    );

    let r = env.run_stdin(&store, "").code(2);
    assert!(r.stderr.contains("nothing was read from stdin"), "{r:#?}");
    let r = env.run_stdin(&store, "\n").code(2);
    assert!(r.stderr.contains("invalid API key"), "{r:#?}");

    let big = "x".repeat(16 * 1024 + 1);
    let r = env.run_stdin(&store, &big).code(2);
    assert!(r.stderr.contains("16384"), "{r:#?}");
    assert!(!r.stderr.contains(&big[..64]), "no key text in errors");
    let exactly = "x".repeat(16 * 1024);
    env.run_stdin(&store, &format!("{exactly}\n")).ok();

    let r = env
        .run_stdin(&["keys", "store", "--service", "open\u{1}ai"], KEY1)
        .code(2);
    assert!(r.stderr.contains("control character"), "{r:#?}");
    let r = env.run(&["keys", "get", "--service", ""]).code(2);
    assert!(r.stderr.contains("invalid service: it is empty"), "{r:#?}");
    let r = env
        .run(&["keys", "get", "--service", "openai", "--user", " alice"])
        .code(2);
    assert!(r.stderr.contains("invalid user"), "{r:#?}");

    let r = env.run(&["--provider", "vault", "keys", "list"]).code(2);
    assert!(r.stderr.contains("vault"), "{r:#?}");
    let r = env
        .run_with(
            &["keys", "list"],
            None,
            &[("LLM_ACCOUNTING_KMS_PROVIDER", "vault")],
        )
        .code(2);
    assert!(r.stderr.contains("unknown provider `vault`"), "{r:#?}");
    // A provider this build does not have names its feature; one it has but without a master
    // key names the variable (kms-gcp is a default feature of the CLI).
    let r = env.run(&["--provider", "gcp", "keys", "list"]).code(2);
    if cfg!(feature = "kms-gcp") {
        assert!(r.stderr.contains("LLM_ACCOUNTING_KMS_KEY_ID"), "{r:#?}");
    } else {
        assert!(r.stderr.contains("feature kms-gcp"), "{r:#?}");
    }

    env.run(&["keys", "frobnicate"]).code(2);
    env.run(&["keys", "get"]).code(2); // --service is required
    env.run(&[]).code(2);
    let r = env.run(&["--help"]).ok();
    assert!(r.stdout.contains("Exit codes:"), "{r:#?}");
    env.run(&["--version"]).ok();

    // A database SQLite cannot open (a directory stands at its path). A missing database is
    // a configuration error instead (exit 2: tests/files.rs).
    let unopenable = format!("sqlite://{}", env.dir().display());
    let r = env.run(&["--db", &unopenable, "keys", "list"]).code(5);
    assert!(
        r.stderr.starts_with("error: database unavailable"),
        "{r:#?}"
    );
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:#?}");

    let missing = env.dir().join("nope.toml");
    let r = env
        .run(&["--config", &missing.display().to_string(), "keys", "list"])
        .code(2);
    assert!(r.stderr.contains("does not exist"), "{r:#?}");

    let r = env
        .run_stdin(&["keys", "rotate", "--service", "never-stored"], KEY1)
        .code(3);
    assert!(r.stderr.contains("never-stored"), "{r:#?}");
    for cmd in ["disable", "enable", "delete"] {
        env.run(&["keys", cmd, "--service", "never-stored"]).code(3);
    }
}

#[test]
fn moved_or_modified_ciphertexts_exit_4() {
    let env = Env::new(BIN);
    for (user, key) in [("alice", KEY1), ("bob", KEY_BOB)] {
        env.run_stdin(
            &["keys", "store", "--service", "openai", "--user", user],
            key,
        )
        .ok();
    }
    let get = |user: &str| env.run(&["keys", "get", "--service", "openai", "--user", user]);
    assert_eq!(get("alice").ok().stdout, format!("{KEY1}\n"));

    let rt = runtime();
    let db = rt.block_on(connect(&env.db_path()));
    let alice = rt.block_on(key_id(&db, "alice"));
    let bob = rt.block_on(key_id(&db, "bob"));
    let original = rt.block_on(current_envelope(&db, &alice));

    // Bob's ciphertext moved into Alice's row.
    rt.block_on(db.execute_unprepared(&format!(
        "UPDATE api_key_versions SET envelope = \
         (SELECT envelope FROM api_key_versions WHERE key_id = '{bob}') WHERE key_id = '{alice}'"
    )))
    .expect("swap");
    let r = get("alice").code(4);
    assert!(r.stderr.contains("integrity"), "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");
    assert_no_secret(&r, &[KEY1, KEY_BOB], false);
    assert_eq!(get("bob").ok().stdout, format!("{KEY_BOB}\n"));

    // Restored, it reads again.
    rt.block_on(set_current_envelope(&db, &alice, original.clone()));
    assert_eq!(get("alice").ok().stdout, format!("{KEY1}\n"));

    // Any one flipped byte, anywhere in the envelope, fails as an integrity error.
    for i in 0..original.len() {
        let mut tampered = original.clone();
        tampered[i] ^= 0x01;
        rt.block_on(set_current_envelope(&db, &alice, tampered));
        let r = get("alice");
        assert_eq!(r.code, 4, "flipped byte {i} of {}: {r:#?}", original.len());
        assert!(r.stderr.contains("integrity"), "{r:#?}");
        assert!(r.stdout.is_empty(), "{r:#?}");
    }
    // Truncated and extended.
    for tampered in [original[..original.len() - 1].to_vec(), {
        let mut v = original.clone();
        v.push(0);
        v
    }] {
        rt.block_on(set_current_envelope(&db, &alice, tampered));
        get("alice").code(4);
    }
    rt.block_on(set_current_envelope(&db, &alice, original));
    assert_eq!(get("alice").ok().stdout, format!("{KEY1}\n"));
}

#[test]
fn key_flag_works_but_warns() {
    let env = Env::new(BIN);
    let r = env
        .run(&["keys", "store", "--service", "openai", "--key", KEY1])
        .ok();
    assert!(
        r.stderr.contains(
            "warning: --key exposes the key in your shell history and process list; pipe it on \
             stdin instead"
        ),
        "{r:#?}"
    );
    assert_no_secret(&r, &[KEY1], false);
    let r = env.run(&["keys", "get", "--service", "openai"]).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));
}

#[test]
fn keys_never_reach_the_database_files_in_plaintext() {
    let env = Env::new(BIN);
    let keys = [KEY1, KEY2, KEY_BOB];
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY1)
        .ok();
    env.run_stdin(&["keys", "rotate", "--service", "openai"], KEY2)
        .ok();
    env.run_stdin(
        &["keys", "store", "--service", "anthropic", "--project", "p1"],
        KEY_BOB,
    )
    .ok();
    env.run(&["keys", "get", "--service", "openai"]).ok();
    env.run(&["keys", "list"]).ok();

    let mut checked = 0;
    for entry in std::fs::read_dir(env.dir()).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if !name.starts_with("k.db") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        for key in keys {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{key} in plaintext in {name}"
            );
            // Nor the distinctive middle of it.
            let middle = &key.as_bytes()[8..32];
            assert!(
                !bytes.windows(middle.len()).any(|w| w == middle),
                "part of {key} in {name}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "the database file exists");
}

#[test]
fn trace_logging_never_shows_the_key() {
    let env = Env::new(BIN);
    let trace = [("RUST_LOG", "trace")];
    let runs = [
        env.run_with(
            &["keys", "store", "--service", "openai"],
            Some(KEY1.as_bytes()),
            &trace,
        ),
        env.run_with(
            &["keys", "rotate", "--service", "openai", "--key", KEY2],
            None,
            &trace,
        ),
        env.run_with(&["keys", "get", "--service", "openai"], None, &trace),
        env.run_with(
            &["keys", "get", "--service", "openai", "--previous"],
            None,
            &trace,
        ),
        env.run_with(&["keys", "list"], None, &trace),
        env.run_with(
            &["keys", "list", "--versions", "--format", "json"],
            None,
            &trace,
        ),
        env.run_with(&["keys", "disable", "--service", "openai"], None, &trace),
        env.run_with(&["keys", "enable", "--service", "openai"], None, &trace),
        env.run_with(&["master-key", "add-version"], None, &trace),
        env.run_with(&["keys", "rewrap"], None, &trace),
        env.run_with(&["keys", "rewrap", "--reencrypt"], None, &trace),
        env.run_with(&["keys", "rewrap", "--check"], None, &trace),
        env.run_with(&["keys", "get", "--service", "openai"], None, &trace),
    ];
    for r in &runs {
        assert_eq!(r.code, 0, "{r:#?}");
        assert!(
            r.stderr.contains("TRACE")
                || r.stderr.contains("DEBUG")
                || r.stderr.contains("added master key"),
            "logging is on: {r:#?}"
        );
        // Only `keys get` prints a key, and only on stdout.
        let printed = r.stdout == format!("{KEY2}\n") || r.stdout == format!("{KEY1}\n");
        assert_no_secret(r, &[KEY1, KEY2], printed);
    }
    env.run_with(&["keys", "delete", "--service", "openai"], None, &trace)
        .ok();
    // No file the commands wrote holds a key in clear (database, WAL, master key file).
    let mut files = vec![env.dir().to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                files.push(entry.expect("entry").path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).expect("read file");
        for secret in [KEY1, KEY2] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a key in clear",
                path.display()
            );
        }
        scanned += 1;
    }
    assert!(
        scanned >= 2,
        "the database and the master key file were scanned"
    );
}

/// The whole round trip with `--db` on the PostgreSQL and MySQL/MariaDB servers.
#[test]
fn round_trip_on_database_servers() {
    use llm_accounting_testkit::{Backend, TestDatabase};
    let rt = runtime();
    for backend in [Backend::Postgres, Backend::MySql] {
        let Some(db) = rt.block_on(TestDatabase::create(backend)) else {
            continue;
        };
        let env = Env::new(BIN);
        let url = db.url();
        let keys = |args: &[&str]| -> Vec<String> {
            let mut v = vec!["--db".to_owned(), url.to_owned(), "keys".to_owned()];
            v.extend(args.iter().map(|s| (*s).to_owned()));
            v
        };
        let run = |args: &[&str], stdin: Option<&str>| {
            let args = keys(args);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            env.run_with(&args, stdin.map(str::as_bytes), &[])
        };
        run(
            &["store", "--service", "openai", "--user", "alice"],
            Some(KEY1),
        )
        .ok();
        let r = run(&["get", "--service", "openai", "--user", "alice"], None).ok();
        assert_eq!(r.stdout.trim_end(), KEY1, "{backend}");
        let r = run(&["list", "--format", "json"], None).ok();
        assert!(
            r.stdout.contains("alice") && !r.stdout.contains(KEY1),
            "{r:#?}"
        );
        run(
            &["rotate", "--service", "openai", "--user", "alice"],
            Some(KEY2),
        )
        .ok();
        let r = run(&["get", "--service", "openai", "--user", "alice"], None).ok();
        assert_eq!(r.stdout.trim_end(), KEY2, "{backend}");
        run(&["disable", "--service", "openai", "--user", "alice"], None).ok();
        run(&["get", "--service", "openai", "--user", "alice"], None).code(1);
        run(&["enable", "--service", "openai", "--user", "alice"], None).ok();
        run(&["delete", "--service", "openai", "--user", "alice"], None).ok();
        run(&["get", "--service", "openai", "--user", "alice"], None).code(3);
    }
}

/// A database server that is down: exit code 5 and one clear line, quickly, no password.
#[test]
fn database_server_down_exits_5() {
    let env = Env::new(BIN);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    for scheme in ["postgres", "mysql"] {
        let url = format!("{scheme}://u:hunter2@127.0.0.1:{port}/test");
        let r = env
            .run_with(
                &["--db", &url, "keys", "list"],
                None,
                &[("LLM_ACCOUNTING_DB_CONNECT_TIMEOUT_SECS", "3")],
            )
            .code(5);
        assert!(
            r.stderr.starts_with("error: database unavailable"),
            "{r:#?}"
        );
        assert!(!r.stderr.contains("hunter2"), "{r:#?}");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {r:#?}");
    }
}

/// `get --previous`, `list --versions`, `list --expiring`, and exit code 6 for an expired key.
#[test]
fn lifecycle_commands() {
    let env = Env::new(BIN);
    let grace = [("LLM_ACCOUNTING_PREVIOUS_GRACE_SECS", "3600")];
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        env.run_with(&all, stdin.map(str::as_bytes), &grace)
    };
    run(&["get", "--service", "openai", "--previous"], None).code(3);
    run(
        &["store", "--service", "openai", "--expires-in", "30d"],
        Some(KEY1),
    )
    .ok();
    let r = run(&["get", "--service", "openai", "--previous"], None).code(3);
    assert!(r.stderr.contains("never rotated"), "{r:#?}");
    let r = run(&["rotate", "--service", "openai"], Some(KEY2)).ok();
    assert!(r.stderr.contains("--previous"), "{r:#?}");
    let r = run(&["get", "--service", "openai", "--previous"], None).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));

    let r = run(&["list", "--versions"], None).ok();
    assert!(
        r.stdout.contains("previous") && r.stdout.contains("current"),
        "{r:#?}"
    );
    assert!(
        !r.stdout.contains(KEY1) && !r.stdout.contains(KEY2),
        "{r:#?}"
    );
    let r = run(&["list", "--versions", "--format", "json"], None).ok();
    let v: serde_json::Value = r.json();
    let versions = v[0]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["state"], "previous");
    assert!(versions[0]["retire_at"].is_string());

    // Expiring: the rotated value has no expiry; a second key expires in 2 days.
    run(
        &["store", "--service", "anthropic", "--expires-in", "2d"],
        Some(KEY_BOB),
    )
    .ok();
    let r = run(&["list", "--expiring", "7d", "--format", "json"], None).ok();
    let v: serde_json::Value = r.json();
    let services: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|k| k["service"].as_str().expect("service"))
        .collect();
    assert_eq!(services, ["anthropic"]);

    // An expired value: exit code 6.
    run(
        &[
            "store",
            "--service",
            "mistral",
            "--expires-at",
            "2020-01-01T00:00:00Z",
        ],
        Some(KEY1),
    )
    .code(2);
    run(
        &["store", "--service", "mistral", "--expires-in", "1s"],
        Some(KEY1),
    )
    .ok();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = run(&["get", "--service", "mistral"], None).code(6);
    assert!(r.stderr.contains("expired"), "{r:#?}");
}

/// `keys rewrap` killed with SIGKILL at several points, then run again: it finishes, and every
/// one of 5,000 keys decrypts under the new master key.
#[cfg(unix)]
#[test]
fn rewrap_survives_sigkill_and_resumes() {
    use llm_accounting::{KeyIdentity, LocalKmsProvider, SeaOrmKeyRepository, SecureKeyManager};
    const N: usize = 5000;
    let env = Env::new(BIN);
    let mk = env.dir().join("master.key");
    let rt = runtime();
    let db_url = format!("sqlite://{}", env.db_path().display());
    let value = |i: usize| format!("sk-test-FAKE-{i:06}-0123456789abcdef");
    let id =
        |i: usize| KeyIdentity::from_parts("bulk", Some(&format!("u{i:05}")), None).expect("id");
    rt.block_on(async {
        let provider = LocalKmsProvider::open_or_create(&mk).expect("mk");
        let creating = llm_accounting::StoreOptions {
            create_if_missing: true,
            ..Default::default()
        };
        let repo = SeaOrmKeyRepository::connect(&db_url, &creating)
            .await
            .expect("db");
        let m = SecureKeyManager::new(std::sync::Arc::new(provider), std::sync::Arc::new(repo));
        for i in 0..N {
            m.store(&id(i), &llm_accounting::ApiKey::new(value(i)))
                .await
                .expect("store");
        }
    });
    let r = env.run(&["master-key", "add-version"]).ok();
    assert!(r.stderr.contains("added master key v2"), "{r:#?}");
    let r = env.run(&["keys", "rewrap", "--check"]).code(1);
    assert!(
        r.stderr
            .contains(&format!("{N} version(s) not under local v2")),
        "{r:#?}"
    );

    let spawn = || {
        let mut cmd = Command::new(BIN);
        for (k, v) in env.vars() {
            cmd.env(k, v);
        }
        cmd.env_remove("RUST_LOG")
            .args(["keys", "rewrap", "--batch-size", "50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rewrap")
    };
    let mut kills = 0;
    for delay_ms in [150u64, 400, 700, 1000] {
        let mut child = spawn();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
        // Whatever the point of the kill, every key still reads (old or new master key).
        for i in (0..N).step_by(250) {
            let r = env.run(&[
                "keys",
                "get",
                "--service",
                "bulk",
                "--user",
                &format!("u{i:05}"),
            ]);
            assert_eq!(
                r.stdout.trim_end(),
                value(i),
                "after kill at {delay_ms} ms: {r:#?}"
            );
        }
    }
    assert!(
        kills >= 1,
        "the rewrap was never interrupted; make N larger"
    );
    let r = env.run(&["keys", "rewrap"]).ok();
    assert!(r.stderr.contains("failed 0"), "{r:#?}");
    env.run(&["keys", "rewrap", "--check"]).ok();

    // Every key decrypts, and only the new master key is needed.
    rt.block_on(async {
        let provider = LocalKmsProvider::open(&mk)
            .expect("mk")
            .with_min_version(2)
            .expect("min version");
        let repo = SeaOrmKeyRepository::connect(&db_url, &Default::default())
            .await
            .expect("db");
        let m = SecureKeyManager::new(std::sync::Arc::new(provider), std::sync::Arc::new(repo));
        for i in 0..N {
            assert_eq!(m.get(&id(i)).await.expect("get").expose_secret(), value(i));
        }
    });
}

/// The process runs with core dumps disabled (a crash must not write keys to disk): read from
/// /proc while it waits for a key on stdin.
#[cfg(target_os = "linux")]
#[test]
fn core_dumps_are_disabled() {
    let env = Env::new(BIN);
    let mut cmd = Command::new(BIN);
    cmd.envs(env.vars())
        .args(["keys", "store", "--service", "openai"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let limits_path = format!("/proc/{}/limits", child.id());
    let mut core = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let limits = std::fs::read_to_string(&limits_path).unwrap_or_default();
        if let Some(line) = limits.lines().find(|l| l.starts_with("Max core file size")) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "Max core file size  <soft>  <hard>  bytes"
            if fields.get(4) == Some(&"0") && fields.get(5) == Some(&"0") {
                core = Some(line.to_owned());
                break;
            }
        }
    }
    drop(child.stdin.take());
    let _ = child.wait();
    assert!(core.is_some(), "core dumps still allowed: {limits_path}");
}

/// Every operation writes one audit row (successes and failures, never a secret); `keys audit
/// --verify` detects an edited or deleted row and names it; the audit table can live in another
/// database; fail-closed refuses a key whose audit row cannot be written.
#[test]
fn audit_trail_records_verifies_and_fails_closed() {
    let env = Env::new(BIN);
    env.run_stdin(
        &["keys", "store", "--service", "openai", "--user", "alice"],
        KEY1,
    )
    .ok();
    env.run(&["keys", "get", "--service", "openai", "--user", "alice"])
        .ok();
    env.run(&["keys", "get", "--service", "openai", "--user", "bob"])
        .code(3);
    env.run_stdin(
        &["keys", "rotate", "--service", "openai", "--user", "alice"],
        KEY2,
    )
    .ok();
    env.run(&["keys", "list"]).ok();
    env.run(&["keys", "disable", "--service", "openai", "--user", "alice"])
        .ok();
    env.run(&["keys", "get", "--service", "openai", "--user", "alice"])
        .code(1);
    let r = env.run(&["keys", "audit", "--format", "json"]).ok();
    assert!(
        !r.stdout.contains(KEY1) && !r.stdout.contains(KEY2),
        "{r:#?}"
    );
    let v: serde_json::Value = r.json();
    let rows: Vec<(String, String)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().expect("op").to_owned(),
                r["outcome"].as_str().expect("outcome").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("store", "ok"),
        ("get", "ok"),
        ("get", "not_found"),
        ("rotate", "ok"),
        ("list", "ok"),
        ("disable", "ok"),
        ("get", "disabled"),
    ];
    assert_eq!(
        rows,
        expected
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect::<Vec<_>>()
    );
    let r = env
        .run(&["keys", "audit", "--operation", "get", "--user", "bob"])
        .ok();
    assert_eq!(r.stdout.lines().count(), 2, "header + one row: {r:#?}");
    let r = env.run(&["keys", "audit", "--verify"]).ok();
    assert!(r.stderr.contains("intact: 7 record(s)"), "{r:#?}");

    // Tampering is found and named.
    let rt = runtime();
    let db = rt.block_on(connect(&env.db_path()));
    let exec = |sql: &str| {
        rt.block_on(db.execute_raw(Statement::from_string(DbBackend::Sqlite, sql)))
            .expect("tamper");
    };
    exec("UPDATE api_key_audit SET outcome = 'ok' WHERE seq = 3");
    let r = env.run(&["keys", "audit", "--verify"]).code(4);
    assert!(r.stderr.contains("record 3"), "{r:#?}");
    exec("UPDATE api_key_audit SET outcome = 'not_found' WHERE seq = 3");
    env.run(&["keys", "audit", "--verify"]).ok();
    exec("DELETE FROM api_key_audit WHERE seq = 5");
    let r = env.run(&["keys", "audit", "--verify"]).code(4);
    assert!(r.stderr.contains("record 5"), "{r:#?}");

    // Another database for the audit table.
    let audit_db = env.dir().join("audit.db");
    let audit_url = format!("sqlite://{}", audit_db.display());
    let sep = [("LLM_ACCOUNTING_AUDIT_DATABASE_URL", audit_url.as_str())];
    env.run_with(
        &["keys", "enable", "--service", "openai", "--user", "alice"],
        None,
        &sep,
    )
    .ok();
    let r = env
        .run_with(&["keys", "audit", "--format", "json"], None, &sep)
        .ok();
    let v: serde_json::Value = r.json();
    // In another database than the keys, a change writes its intent first, its outcome after.
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{r:#?}");
    assert_eq!(
        (v[0]["outcome"].as_str(), v[1]["outcome"].as_str()),
        (Some("intent"), Some("ok"))
    );
    env.run_with(&["keys", "audit", "--verify"], None, &sep)
        .ok();

    // Fail-closed: the audit database is locked by another writer; the key is not returned.
    let audit_conn = rt.block_on(connect(&audit_db));
    rt.block_on(audit_conn.execute_unprepared("BEGIN EXCLUSIVE"))
        .expect("lock the audit database");
    let closed = [
        ("LLM_ACCOUNTING_AUDIT_DATABASE_URL", audit_url.as_str()),
        ("LLM_ACCOUNTING_AUDIT_FAIL_CLOSED", "true"),
        ("LLM_ACCOUNTING_DB_BUSY_TIMEOUT_SECS", "1"),
    ];
    let r = env.run_with(
        &["keys", "get", "--service", "openai", "--user", "alice"],
        None,
        &closed,
    );
    assert_eq!(r.code, 5, "{r:#?}");
    assert!(r.stdout.is_empty(), "no key without its audit row: {r:#?}");
    // A rotation whose intent cannot be written is refused before anything changes: the
    // failure it reports is true (the old value is still current afterwards).
    let r = env.run_with(
        &["keys", "rotate", "--service", "openai", "--user", "alice"],
        Some(KEY1.as_bytes()),
        &closed,
    );
    assert_eq!(r.code, 5, "{r:#?}");
    rt.block_on(audit_conn.execute_unprepared("ROLLBACK"))
        .expect("unlock");
    let r = env
        .run_with(
            &["keys", "get", "--service", "openai", "--user", "alice"],
            None,
            &closed,
        )
        .ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));
}
