//! `doctor` end to end: one line per check, a problem named with its fix and exit 1, and
//! nothing changed: no file created, no migration applied.

use llm_accounting_testkit::cli::CREATE_IF_MISSING;
use llm_accounting_testkit::{Env, Run};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const KEY: &str = "sk-test-FAKE-doctor-000000000000000000001";

/// The line of check `name`.
#[track_caller]
fn line<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name.split(' ').next().unwrap_or(name)))
        .unwrap_or_else(|| panic!("no {name} line: {run:#?}"))
}

#[test]
fn a_working_store_passes_every_check() {
    let env = Env::new(BIN).secrets(&[KEY]);
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY)
        .ok();
    let r = env.run(&["doctor"]).ok();
    for check in [
        "variables",
        "configuration",
        "features",
        "database",
        "migrations",
        "master",
        "kms",
    ] {
        assert!(line(&r, check).starts_with("ok "), "{check}: {r:#?}");
    }
    assert!(line(&r, "kms").contains("wrapped and unwrapped"), "{r:#?}");
    assert!(line(&r, "migrations").contains("current"), "{r:#?}");

    let r = env.run(&["doctor", "--format", "json"]).ok();
    let v: serde_json::Value = r.json();
    for c in v.as_array().expect("array") {
        let mut keys: Vec<&String> = c.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["check", "detail", "fix", "ok"]);
        assert_eq!(c["ok"], true, "{c}");
    }
}

#[test]
fn doctor_creates_nothing() {
    // Nothing configured, nothing there yet: fine, and still nothing there afterwards.
    let env = Env::with_data_dir_only(BIN);
    let r = env.run(&["doctor"]).ok();
    assert!(line(&r, "database").contains("not created yet"), "{r:#?}");
    assert!(
        !env.dir().join("data").exists(),
        "doctor created the data directory"
    );

    // Named files that do not exist, without --create: problems, and still not created.
    let mut env = Env::new(BIN);
    env.unset(CREATE_IF_MISSING);
    let r = env.run(&["doctor"]).code(1);
    assert!(line(&r, "database").starts_with("problem"), "{r:#?}");
    assert!(line(&r, "database").contains("--create"), "{r:#?}");
    assert!(line(&r, "master").starts_with("problem"), "{r:#?}");
    assert!(!env.db_path().exists() && !env.dir().join("master.key").exists());
}

#[test]
fn pending_migrations_are_reported_not_applied() {
    let env = Env::new(BIN);
    env.run(&["keys", "list"]).ok();
    env.sql(
        "DELETE FROM seaql_migrations WHERE version = \
         (SELECT MAX(version) FROM seaql_migrations)",
    );
    for _ in 0..2 {
        let r = env.run(&["doctor"]).code(1);
        let l = line(&r, "migrations");
        assert!(
            l.starts_with("problem") && l.contains("1 pending"),
            "{r:#?}"
        );
        assert!(l.contains("fix:"), "{r:#?}");
    }
}

#[test]
fn problems_are_named_with_their_fix() {
    // A mistyped variable.
    let mut env = Env::new(BIN);
    env.run(&["keys", "list"]).ok();
    env.set("LLM_ACCOUNTING_DATABSE_URL", "sqlite:///elsewhere.db");
    let r = env.run(&["doctor"]).code(1);
    assert!(
        line(&r, "variables").contains("LLM_ACCOUNTING_DATABSE_URL"),
        "{r:#?}"
    );
    env.unset("LLM_ACCOUNTING_DATABSE_URL");

    // A master key file others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mk = env.dir().join("master.key");
        std::fs::set_permissions(&mk, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let r = env.run(&["doctor"]).code(1);
        let l = line(&r, "master");
        assert!(l.contains("644") && l.contains("chmod 600"), "{r:#?}");
        std::fs::set_permissions(&mk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    // A configuration file with a setting that does not exist: the other checks need it.
    let file = env.dir().join("bad.toml");
    std::fs::write(&file, "[kms]\nprovidr = \"local\"\n").expect("write");
    let r = env
        .run(&["--config", file.to_str().expect("utf-8"), "doctor"])
        .code(1);
    assert!(line(&r, "configuration").contains("providr"), "{r:#?}");

    // A database server that is not there.
    let url = llm_accounting_testkit::closed_port_url().replace("http://", "postgres://u@");
    let r = env.run(&["--db", &format!("{url}/x"), "doctor"]).code(1);
    assert!(
        line(&r, "database").contains("Connection refused"),
        "{r:#?}"
    );

    // A KMS that is not there: the round trip fails, and says so.
    let mut aws = Env::with_database(BIN).strip_prefixes(&["AWS_"]);
    llm_accounting_testkit::cli::fail_fast(&mut aws);
    let home = aws.dir().display().to_string();
    for (name, value) in [
        ("HOME", home.as_str()),
        ("LLM_ACCOUNTING_KMS_PROVIDER", "aws"),
        ("LLM_ACCOUNTING_KMS_KEY_ID", "alias/doctor"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE"),
        ("AWS_SECRET_ACCESS_KEY", "fake-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        aws.set(name, value);
    }
    let closed = llm_accounting_testkit::closed_port_url();
    aws.set("LLM_ACCOUNTING_KMS_ENDPOINT", &closed);
    let r = aws.run(&["doctor"]).code(1);
    let l = line(&r, "kms");
    assert!(l.starts_with("problem") && l.contains("fix:"), "{r:#?}");
}

/// Issue 24 §3: with another `master.key` in place of the right one, doctor printed seven "ok"
/// lines and exited 0 while `keys get` exited 4; with `master.key` moved away it said "not
/// created yet" and exited 0 while every command failed. It now unwraps the store's state key
/// and one data key per master key in use, and names the master key as the problem.
#[test]
fn a_wrong_or_missing_master_key_is_the_problem_named() {
    let env = Env::new(BIN).secrets(&[KEY]);
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY)
        .ok();
    let r = env.run(&["doctor"]).ok();
    let keys = line(&r, "keys");
    assert!(
        keys.starts_with("ok") && keys.contains("1 key(s) stored") && keys.contains("state key"),
        "{r:#?}"
    );
    // Doctor reads only: no audit row was written by it.
    let before = env.run(&["keys", "audit", "--format", "json"]).ok().json();

    // Another master key file in its place.
    let mk = env.dir().join("master.key");
    let right = std::fs::read(&mk).expect("read");
    let other = Env::new(BIN);
    other.run(&["keys", "list"]).ok();
    std::fs::copy(other.dir().join("master.key"), &mk).expect("copy");
    let r = env.run(&["doctor"]).code(1);
    let l = line(&r, "master");
    assert!(l.starts_with("problem"), "{r:#?}");
    assert!(l.contains("not the master key file"), "{r:#?}");
    // And `keys get` says so in one line on stderr, no log lines before it.
    let r = env.run(&["keys", "get", "--service", "openai"]).code(4);
    assert_eq!(r.stderr.lines().count(), 1, "{r:#?}");
    assert!(r.stderr.starts_with("error: "), "{r:#?}");

    // No master key file at all, and keys wrapped under it.
    std::fs::remove_file(&mk).expect("remove");
    let r = env.run(&["doctor"]).code(1);
    let l = line(&r, "master");
    assert!(
        l.starts_with("problem") && l.contains("holds keys wrapped under it"),
        "{r:#?}"
    );
    assert!(!mk.exists(), "doctor made no master key");

    std::fs::write(&mk, &right).expect("restore");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&mk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    env.run(&["doctor"]).ok();
    let after = env.run(&["keys", "audit", "--format", "json"]).ok().json();
    let rows = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    // Neither doctor nor reading the trail wrote a row (the failed `keys get` could not:
    // its row needs the state key, which did not unwrap).
    assert_eq!(rows(&after), rows(&before), "{after}");
}

/// Issue 24 §3: a data directory with mode 777 was reported under "kms" with a hint about KMS
/// permissions. It is a files problem, with its own fix.
#[cfg(unix)]
#[test]
fn a_data_directory_others_can_write_is_a_files_problem() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_data_dir_only(BIN).secrets(&[KEY]);
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY)
        .ok();
    let data = env.dir().join("data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let r = env.run(&["doctor"]).code(1);
    let l = line(&r, "files");
    assert!(
        l.starts_with("problem") && l.contains("777") && l.contains("chmod 700"),
        "{r:#?}"
    );
    assert!(
        !r.stdout.lines().any(|l| l.starts_with("problem  kms")),
        "{r:#?}"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert!(line(&env.run(&["doctor"]).ok(), "files").starts_with("ok"));
}

#[test]
fn the_dashboard_token_file_is_checked_and_never_shown() {
    let mut env = Env::new(BIN);
    env.run(&["keys", "list"]).ok();
    // Not configured: no line.
    let r = env.run(&["doctor"]).ok();
    assert!(!r.stdout.contains("dashboard"), "{r:#?}");
    let file = env.dir().join("admin.token");
    let token = "doctor-admin-FAKE-0123456789";
    std::fs::write(&file, token).expect("write");
    env.set(
        "LLM_ACCOUNTING_GATEWAY_ADMIN_TOKEN_FILE",
        file.to_str().expect("utf-8"),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Readable by others: the problem, with the fix.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let r = env.run(&["doctor"]).code(1);
        assert!(line(&r, "dashboard").starts_with("problem"), "{r:#?}");
        assert!(r.stdout.contains("chmod 600"), "{r:#?}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let r = env.run(&["doctor"]).ok();
    assert!(line(&r, "dashboard").contains("private"), "{r:#?}");
    assert!(!r.stdout.contains(token) && !r.stderr.contains(token));
    // Too short to be a token.
    std::fs::write(&file, "short").expect("write");
    let r = env.run(&["doctor"]).code(1);
    assert!(line(&r, "dashboard").contains("16 characters"), "{r:#?}");
}
