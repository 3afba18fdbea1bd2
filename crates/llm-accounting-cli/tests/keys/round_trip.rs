//! Every `keys` command in turn, on SQLite and on the database servers.

use llm_accounting_testkit::Env;

use super::{BIN, KEY1, KEY2, assert_no_secret, runtime};

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
