//! The audit trail: one row per operation, verified, in another database, fail-closed.

use llm_accounting_testkit::Env;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{BIN, KEY1, KEY2, connect, runtime};

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

/// Issue 24 §4: the audit rows of the CLI named the principal `-`. They name the operating
/// system user, or `audit.principal` when set; a user name with control characters is not used.
#[test]
fn audit_rows_name_the_os_user_unless_a_principal_is_set() {
    let mut env = Env::new(BIN);
    env.set("USER", "ops-alice");
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY1)
        .ok();
    env.set("LLM_ACCOUNTING_AUDIT_PRINCIPAL", "ci-bot");
    env.run(&["keys", "get", "--service", "openai"]).ok();
    env.unset("LLM_ACCOUNTING_AUDIT_PRINCIPAL");
    env.set("USER", "bad\u{1b}[2Juser");
    env.run(&["keys", "list"]).ok();
    let rows = env.run(&["keys", "audit", "--format", "json"]).ok().json();
    let principals: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["principal"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(principals[..3], ["ops-alice", "ci-bot", "-"], "{rows}");
}
