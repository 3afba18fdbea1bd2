//! Shell habits (issue 15): a closed pipe ends quietly, empty results say what was asked,
//! `--operation`, `--since` and `--until` are checked, tables fit the width, every command
//! that prints data speaks JSON in a stable shape, and `keys delete` asks on a terminal.

use std::process::Stdio;

use llm_accounting_testkit::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const KEY: &str = "sk-test-FAKE-shell-00000000000000000000001";

fn env_with_a_key() -> Env {
    let env = Env::new(BIN).secrets(&[KEY]);
    env.run_stdin(
        &["keys", "store", "--service", "openai", "--user", "alice"],
        KEY,
    )
    .ok();
    env
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly() {
    let env = env_with_a_key();
    for _ in 0..3 {
        env.run(&["keys", "get", "--service", "openai", "--user", "alice"])
            .ok();
    }
    for args in [
        &["keys", "audit"][..],
        &["keys", "list"],
        &["keys", "list", "--format", "json"],
        &["keys", "get", "--service", "openai", "--user", "alice"],
        &["keys", "audit", "--head"],
    ] {
        // The reading end is closed before the command writes: `| head -0`, deterministic.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = env
            .command(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn empty_results_say_what_was_asked() {
    let env = env_with_a_key();
    let r = env.run(&["keys", "list", "--expiring", "7d"]).ok();
    assert!(r.stdout.is_empty(), "{r:#?}");
    assert!(
        r.stderr.contains("no keys expire within 7 days (1 stored)"),
        "{r:#?}"
    );
    let r = env.run(&["keys", "list", "--service", "mistral"]).ok();
    assert!(
        r.stderr.contains("no keys stored for service \"mistral\""),
        "{r:#?}"
    );
    let r = env
        .run(&["keys", "audit", "--operation", "rotate", "--since", "1h"])
        .ok();
    assert!(
        r.stderr
            .contains("no audit records for operation rotate, since "),
        "{r:#?}"
    );
}

#[test]
fn operations_and_times_are_checked() {
    let env = env_with_a_key();
    let r = env.run(&["keys", "audit", "--operation", "gett"]).code(2);
    assert!(
        r.stderr.contains("`gett`") && r.stderr.contains("get_previous"),
        "{r:#?}"
    );
    // A real operation with no rows is no error.
    env.run(&["keys", "audit", "--operation", "delete"]).ok();

    let r = env.run(&["keys", "audit", "--since", "yesterday"]).code(2);
    assert!(
        r.stderr.contains("neither a duration") && r.stderr.contains("RFC 3339"),
        "{r:#?}"
    );
    assert!(!r.stderr.contains("expected number"), "{r:#?}");

    let count = |args: &[&str]| -> usize {
        let r = env.run(args).ok();
        let v: serde_json::Value = r.json();
        v.as_array().expect("array").len()
    };
    let all = count(&["keys", "audit", "--format", "json"]);
    assert!(all >= 1);
    assert_eq!(
        count(&["keys", "audit", "--format", "json", "--since", "24h"]),
        all
    );
    assert_eq!(
        count(&["keys", "audit", "--format", "json", "--since", "2000-01-01"]),
        all
    );
    assert_eq!(
        count(&[
            "keys",
            "audit",
            "--format",
            "json",
            "--until",
            "2000-01-01T00:00:00Z"
        ]),
        0
    );
    assert_eq!(
        count(&["keys", "audit", "--format", "json", "--until", "0s"]),
        all
    );
    env.run(&["keys", "audit", "--since", "1h", "--until", "2h"])
        .code(2);
}

/// Tables fit a terminal (its width, or `$COLUMNS`), and into a pipe or a file every row is
/// one whole line whatever `$COLUMNS` says. Issue 24 §4: `COLUMNS=40 keys list | cat` wrapped
/// its rows, and in a narrow terminal `anthropic` was split into `anthrop` / `ic`.
#[test]
fn tables_fit_the_terminal_and_never_wrap_into_a_pipe() {
    let mut env = env_with_a_key();
    env.run_stdin(
        &[
            "keys",
            "store",
            "--service",
            "anthropic",
            "--user",
            "bob",
            "--project",
            "search",
        ],
        KEY,
    )
    .ok();
    env.run(&["keys", "get", "--service", "openai", "--user", "alice"])
        .ok();
    for args in [
        &["keys", "list"][..],
        &["keys", "list", "--versions"],
        &["keys", "audit"],
        &["limits", "list"],
    ] {
        // Into a pipe: the same whole lines with and without COLUMNS.
        let wide = env.run(args).ok();
        let piped = env.run_with(args, None, &[("COLUMNS", "40")]).ok();
        if args[1] == "list" && args[0] == "keys" {
            assert_eq!(piped.stdout, wide.stdout, "{args:?}");
            assert!(
                wide.stdout.lines().any(|l| l.chars().count() > 80),
                "{args:?}: {wide:#?}"
            );
        }
        if args[1] == "audit" {
            // One line per row: every line after the header starts with its record number.
            assert!(
                piped
                    .stdout
                    .lines()
                    .skip(1)
                    .all(|l| l.starts_with(|c: char| c.is_ascii_digit())),
                "{piped:#?}"
            );
        }
        // On a terminal of 80 columns: every line fits, and headers stay whole.
        env.set("COLUMNS", "80");
        let (code, out) = env.run_on_a_terminal(args, "");
        env.unset("COLUMNS");
        assert_eq!(code, Some(0), "{args:?}: {out}");
        for line in out.lines().map(|l| l.trim_end_matches('\r')) {
            assert!(line.chars().count() <= 80, "{args:?}: {line:?}\n{out}");
        }
        if args[0] == "keys" {
            let header = out.lines().next().expect("header");
            for h in ["SERVICE", "USER", "PROJECT"] {
                assert!(header.contains(h), "{args:?}: {out}");
            }
        }
    }
    // A narrow terminal: names are not split across lines.
    env.set("COLUMNS", "40");
    let (code, out) = env.run_on_a_terminal(&["keys", "list"], "");
    assert_eq!(code, Some(0), "{out}");
    for word in ["anthropic", "openai", "search"] {
        assert!(out.contains(word), "{word} split: {out}");
    }
}

/// The keys of a JSON object, sorted.
fn keys_of(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn json_shapes_are_stable() {
    let env = env_with_a_key();
    let r = env
        .run(&[
            "keys",
            "get",
            "--service",
            "openai",
            "--user",
            "alice",
            "--format",
            "json",
        ])
        .ok();
    let v: serde_json::Value = r.json();
    assert_eq!(
        keys_of(&v),
        ["key", "previous", "project", "service", "user"]
    );
    assert_eq!(v["key"], KEY);
    assert_eq!(v["service"], "openai");
    assert_eq!(v["user"], "alice");
    assert!(v["project"].is_null());
    assert_eq!(v["previous"], false);

    let r = env.run(&["keys", "list", "--format", "json"]).ok();
    let v: serde_json::Value = r.json();
    assert_eq!(
        keys_of(&v[0]),
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
    let r = env
        .run(&["keys", "list", "--versions", "--format", "json"])
        .ok();
    let v: serde_json::Value = r.json();
    assert!(keys_of(&v[0]).contains(&"versions".to_owned()));
    assert_eq!(
        keys_of(&v[0]["versions"][0]),
        [
            "created_at",
            "expires_at",
            "hint",
            "master_key_ref",
            "provider",
            "retire_at",
            "state",
            "version"
        ]
    );
    let r = env.run(&["keys", "audit", "--format", "json"]).ok();
    let v: serde_json::Value = r.json();
    assert_eq!(
        keys_of(&v[0]),
        [
            "at",
            "count",
            "detail",
            "first_at",
            "hash",
            "master_key_ref",
            "operation",
            "outcome",
            "principal",
            "project",
            "provider",
            "seq",
            "service",
            "user"
        ]
    );
}

#[test]
fn delete_asks_on_a_terminal_unless_yes() {
    let env = env_with_a_key();
    let delete = ["keys", "delete", "--service", "openai", "--user", "alice"];
    let (code, screen) = env.run_on_a_terminal(&delete, "nope\n");
    assert_eq!(code, Some(1), "{screen}");
    assert!(screen.contains("Type the service name"), "{screen}");
    assert!(screen.contains("cancelled, nothing deleted"), "{screen}");
    env.run(&["keys", "get", "--service", "openai", "--user", "alice"])
        .ok();

    let (code, screen) = env.run_on_a_terminal(&delete, "openai\n");
    assert_eq!(code, Some(0), "{screen}");
    env.run(&["keys", "get", "--service", "openai", "--user", "alice"])
        .code(3);

    // --yes: no question, even on a terminal.
    env.run_stdin(
        &["keys", "store", "--service", "openai", "--user", "alice"],
        KEY,
    )
    .ok();
    let mut yes = delete.to_vec();
    yes.push("--yes");
    let (code, screen) = env.run_on_a_terminal(&yes, "");
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains("Type the service name"), "{screen}");
    // Off a terminal it never asks (scripts).
    env.run_stdin(
        &["keys", "store", "--service", "openai", "--user", "alice"],
        KEY,
    )
    .ok();
    env.run(&delete).ok();
}

/// Issue 24 §4: `--format csv` on every data command: a header row and one record per row,
/// every record as wide as the header, quoted where needed, never fitted to a width.
#[test]
fn every_data_command_writes_csv() {
    let env = env_with_a_key();
    env.run(&[
        "-q", "usage", "track", "--model", "gpt-4o", "--user", "alice", "--caller", "app, v2",
    ])
    .ok();
    for (args, header, rows) in [
        (&["keys", "list"][..], "SERVICE", Some(1)),
        (&["keys", "list", "--versions"], "SERVICE", Some(1)),
        (&["keys", "audit"], "SEQ", None),
        (&["usage", "tail"], "AT", Some(1)),
        (&["usage", "stats", "--by", "caller"], "CALLER", Some(1)),
        (&["limits", "list"], "ID", Some(0)),
        (&["gateway", "keys", "list"], "ID", Some(0)),
        (&["doctor"], "CHECK", None),
    ] {
        let mut with = args.to_vec();
        with.extend(["--format", "csv"]);
        let r = env.run_with(&with, None, &[("COLUMNS", "20")]).ok();
        let mut reader = csv::Reader::from_reader(r.stdout.as_bytes());
        let head = reader.headers().expect("a header row").clone();
        assert_eq!(head.get(0), Some(header), "{args:?}: {r:#?}");
        let records: Vec<csv::StringRecord> = reader
            .records()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {r:#?}"));
        for rec in &records {
            assert_eq!(rec.len(), head.len(), "{args:?}: {rec:?}");
        }
        if let Some(n) = rows {
            assert_eq!(records.len(), n, "{args:?}: {r:#?}");
        }
        if args.get(1) == Some(&"stats") {
            // A comma in a value is quoted, and reads back whole.
            assert!(r.stdout.contains("\"app, v2\""), "{r:#?}");
            assert_eq!(records[0].get(0), Some("app, v2"), "{r:#?}");
        }
    }
}
