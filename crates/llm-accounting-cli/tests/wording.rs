//! Wording (issue 24): durations in words or as typed (`1 day`, `rolling 24h`), Ctrl-D at the
//! key prompt, a declined delete, and a negative cost.

use llm_accounting_testkit::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const KEY: &str = "sk-test-FAKE-wording-000000000000000000001";
const KEY2: &str = "sk-test-FAKE-wording-000000000000000000002";

/// `keys rotate` says how long the previous value stays readable in words: `1 day`, not
/// humantime's `1day`.
#[test]
fn the_grace_period_is_said_in_words() {
    let env = Env::new(BIN).secrets(&[KEY, KEY2]);
    let day = [("LLM_ACCOUNTING_PREVIOUS_GRACE_SECS", "86400")];
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY)
        .ok();
    let r = env
        .run_with(
            &["keys", "rotate", "--service", "openai"],
            Some(KEY2.as_bytes()),
            &day,
        )
        .ok();
    assert!(r.stderr.contains("for 1 day"), "{r:#?}");
    assert!(!r.stderr.contains("1day"), "{r:#?}");
}

/// A rolling window is shown as `--rolling` takes it (`24h`), not in seconds.
#[test]
fn rolling_windows_are_shown_as_typed() {
    let env = Env::new(BIN);
    env.run(&[
        "-q",
        "limits",
        "set",
        "--type",
        "requests",
        "--max",
        "10",
        "--rolling",
        "24h",
    ])
    .ok();
    let limits = env.run(&["limits", "list", "--format", "json"]).ok().json();
    assert_eq!(limits[0]["window"], "rolling 24h", "{limits}");
    let r = env.run(&["limits", "list"]).ok();
    assert!(
        r.stdout.contains("rolling 24h") && !r.stdout.contains("86400s"),
        "{r:#?}"
    );
}

/// Ctrl-D at the key prompt: "no key entered" on a line of its own, exit 2, nothing stored.
#[test]
fn ctrl_d_at_the_prompt_enters_no_key() {
    let env = Env::new(BIN);
    let (code, screen) = env.run_on_a_terminal(&["keys", "store", "--service", "openai"], "\u{4}");
    assert_eq!(code, Some(2), "{screen}");
    let line = screen
        .lines()
        .find(|l| l.contains("no key entered"))
        .unwrap_or_else(|| panic!("no \"no key entered\": {screen:?}"));
    assert!(
        !line.contains("API key for"),
        "not on its own line: {screen:?}"
    );
    env.run(&["keys", "get", "--service", "openai"]).code(3);
}

/// Declining `keys delete` at its question: "cancelled, nothing deleted", exit 1, the key
/// still there; Ctrl-D declines too, the answer on a line of its own.
#[test]
fn a_declined_delete_is_cancelled() {
    let env = Env::new(BIN).secrets(&[KEY]);
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY)
        .ok();
    let delete = ["keys", "delete", "--service", "openai"];
    for typed in ["no\n", "\u{4}"] {
        let (code, screen) = env.run_on_a_terminal(&delete, typed);
        assert_eq!(code, Some(1), "{typed:?}: {screen}");
        let line = screen
            .lines()
            .find(|l| l.contains("cancelled, nothing deleted"))
            .unwrap_or_else(|| panic!("{typed:?}: {screen:?}"));
        // Typed ahead, "no" is echoed before the question; Ctrl-D is not echoed at all.
        if typed == "\u{4}" {
            assert_eq!(
                line.trim(),
                "cancelled, nothing deleted",
                "not on its own line: {screen:?}"
            );
        }
        env.run(&["keys", "get", "--service", "openai"]).ok();
    }
}

/// `--cost -1` is a value, refused as negative (exit 2), not taken for an unknown flag.
#[test]
fn a_negative_cost_is_refused_as_negative() {
    let env = Env::new(BIN);
    for args in [
        &["usage", "track", "--model", "gpt-4o", "--cost", "-1"][..],
        &["quota", "check", "--model", "gpt-4o", "--cost", "-0.5"][..],
    ] {
        let r = env.run(args).code(2);
        assert!(
            r.stderr.contains("negative amounts are refused"),
            "{args:?}: {r:#?}"
        );
        assert!(!r.stderr.contains("unexpected argument"), "{r:#?}");
    }
    let r = env.run(&["usage", "tail", "--format", "json"]).ok();
    assert_eq!(r.json(), serde_json::json!([]), "nothing recorded");
}
