//! What the binary prints is terminal-safe: names with invisible or formatting characters are
//! refused (so two identities never print the same), and strings read from the database
//! (hint, master-key reference, provider, audit principal, detail, operation, outcome) are
//! printed with every control and invisible character escaped, in tables, in JSON and in
//! error lines.

use llm_accounting::is_hidden_char;
use llm_accounting_testkit::{Env, Run};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// An obviously fake key.
const KEY: &str = "sk-test-FAKE-00000000000000000000000000e5c";

/// Hostile text: clear the screen, write the clipboard (OSC 52), a C1 CSI colour, DEL, a
/// right-to-left override, a zero-width space, a no-break space, a line separator and a tag.
const HOSTILE: &str =
    "\u{1b}[2J\u{1b}]52;c;RkFLRQ==\u{7}\u{9b}31m\u{7f}\u{202e}dne\u{200b}\u{a0}\u{2028}\u{e0041}…";

/// Asserts that nothing `run` printed holds a character that acts on a terminal or hides.
#[track_caller]
fn assert_terminal_safe(run: &Run) {
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        let bad: Vec<String> = text
            .chars()
            .filter(|c| is_hidden_char(*c) && *c != '\n')
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(bad.is_empty(), "{name} holds {bad:?}: {run:#?}");
    }
}

#[test]
fn names_with_invisible_or_formatting_characters_are_refused() {
    let env = Env::new(BIN);
    for (flag, name, code) in [
        ("--service", "open\u{202e}ai", "U+202E"),
        ("--service", "open\u{1b}[2Jai", "U+001B"),
        ("--service", "open\u{9b}ai", "U+009B"),
        ("--user", "ali\u{200b}ce", "U+200B"),
        ("--user", "alice\u{2066}", "U+2066"),
        ("--project", "p\u{a0}1", "U+00A0"),
        ("--project", "p\u{2029}1", "U+2029"),
        ("--project", "p\u{fe0f}1", "U+FE0F"),
    ] {
        let mut args = vec!["keys", "store", "--service", "openai", flag, name];
        if flag == "--service" {
            args.drain(2..4);
        }
        let r = env.run_stdin(&args, KEY).code(2);
        assert!(
            r.stderr.contains("invalid") && r.stderr.contains(code),
            "{name:?}: {r:#?}"
        );
        assert_terminal_safe(&r);
    }
    // Nothing was stored under any of them.
    let r = env.run(&["keys", "list", "--format", "json"]).ok();
    assert_eq!(r.stdout.trim(), "[]", "{r:#?}");
}

/// Rows written by someone else (here: straight into the SQLite file) are printed escaped.
#[test]
fn strings_from_the_database_are_escaped_in_every_output() {
    let env = Env::new(BIN);
    // In a sealed store an edited key row is refused, never printed (see the sealed variant
    // below); printing what the database holds is what a store written before sealing existed
    // does: make this one such a store (no state key, no seals, no keyed audit row: the key
    // is stored with the trail off, so that no row proves a seal).
    env.run_with(
        &["keys", "store", "--service", "openai"],
        Some(KEY.as_bytes()),
        &[("LLM_ACCOUNTING_AUDIT_ENABLED", "false")],
    )
    .ok();
    for sql in [
        "DELETE FROM store_keys",
        "UPDATE api_keys SET state_mac = NULL, current_digest = NULL, previous_digest = NULL",
    ] {
        env.sql(sql);
    }
    env.run(&["keys", "list"]).ok(); // a (plain) audit row
    for (sql, params) in [
        ("UPDATE api_keys SET hint = ?", 1),
        (
            "UPDATE api_key_versions SET hint = ?, master_key_ref = ?",
            2,
        ),
    ] {
        env.sql_with_values(sql, vec![HOSTILE.into(); params]);
    }
    // A master-key reference is also in the message of a failed read: escaped there too.
    let r = env.run_with(
        &["keys", "get", "--service", "openai"],
        None,
        &[("RUST_LOG", "warn")],
    );
    assert_ne!(r.code, 0, "{r:#?}");
    assert_terminal_safe(&r);
    let escaped = "\\x1b[2J\\x1b]52;c;RkFLRQ==\\x07\\u{9b}31m\\x7f\\u{202e}dne\\u{200b}\\u{a0}\
                   \\u{2028}\\u{e0041}…";
    let check = |args: &[&str]| {
        let r = env.run(args).ok();
        assert_terminal_safe(&r);
        if !args.contains(&"json") {
            assert!(r.stdout.contains(escaped), "{args:?}: {r:#?}");
            return;
        }
        // Still JSON, and it reads back as exactly what the database holds.
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
        assert!(
            r.stdout.contains("\\u001b[2J") && r.stdout.contains("\\u202e"),
            "{args:?}: {r:#?}"
        );
        let found = match args[1] {
            "audit" => v[0]["detail"].clone(),
            _ if args.contains(&"--versions") => v[0]["versions"][0]["master_key_ref"].clone(),
            _ => v[0]["hint"].clone(),
        };
        assert_eq!(found, HOSTILE, "{args:?}");
    };
    for args in [
        &["keys", "list"][..],
        &["keys", "list", "--versions"],
        &["keys", "list", "--format", "json"],
        &["keys", "list", "--versions", "--format", "json"],
    ] {
        check(args);
    }
    // Edited audit rows are printed by `keys audit`. (Reads are refused from then on: an edited
    // row cannot be told from a keyed one, which would prove the store was sealed.)
    env.sql_with_values(
        "UPDATE api_key_audit SET principal = ?, detail = ?, operation = ?, outcome = ?, \
         master_key_ref = ?",
        vec![HOSTILE.into(); 5],
    );
    for args in [
        &["keys", "audit"][..],
        &["keys", "audit", "--format", "json"],
    ] {
        check(args);
    }
}

/// In a sealed store a key row edited with hostile text is refused, and the line naming it is
/// terminal-safe too.
#[test]
fn a_hostile_edit_of_a_sealed_store_is_named_terminal_safe() {
    let env = Env::new(BIN);
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY)
        .ok();
    env.run_stdin(&["keys", "store", "--service", "anthropic"], KEY)
        .ok();
    env.sql_with_values(
        "UPDATE api_keys SET hint = ?, project = ? WHERE service = 'openai'",
        vec![HOSTILE.into(), HOSTILE.into()],
    );
    for args in [&["keys", "list"][..], &["keys", "list", "--format", "json"]] {
        let r = env.run(args).code(4);
        assert_terminal_safe(&r);
        assert!(r.stdout.contains("anthropic"), "{args:?}: {r:#?}");
        assert!(!r.stdout.contains("openai"), "{args:?}: {r:#?}");
        assert!(
            r.stderr.contains("broken: service \"openai\""),
            "{args:?}: {r:#?}"
        );
    }
}

/// Issue 23: errors from argument parsing echoed the bad argument raw (ESC, OSC 52, BEL on a
/// terminal; U+202E, U+009B in pipes). They are escaped as the rest of the output is.
#[test]
fn argument_errors_quote_the_argument_escaped() {
    let env = Env::new(BIN);
    for args in [
        vec!["keys", "list", "--format", HOSTILE],
        vec!["keys", "list", HOSTILE],
        vec![HOSTILE],
        vec!["usage", "stats", "--by", HOSTILE],
        vec![
            "keys",
            "store",
            "--service",
            "openai",
            "--expires-in",
            HOSTILE,
        ],
    ] {
        let r = env.run(&args).code(2);
        assert!(
            r.stderr.contains("\\x1b") || r.stderr.contains("\\u{"),
            "{args:?}: {r:#?}"
        );
        assert_terminal_safe(&r);
    }
    // Help is still help.
    let r = env.run(&["keys", "--help"]).ok();
    assert!(r.stdout.contains("Usage:"), "{r:#?}");
}
