//! Keys never leak: not on stderr, not in the database files in clear, not in trace logs,
//! not in core dumps.

use std::process::Stdio;

use llm_accounting_testkit::Env;

use super::{BIN, KEY_BOB, KEY1, KEY2, assert_no_secret};

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

/// The process runs with core dumps disabled (a crash must not write keys to disk): read from
/// /proc while it waits for a key on stdin.
#[cfg(target_os = "linux")]
#[test]
fn core_dumps_are_disabled() {
    let env = Env::new(BIN);
    let mut child = env
        .command(&["keys", "store", "--service", "openai"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
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
