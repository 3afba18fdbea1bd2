//! Previous values, versions, expiry.

use llm_accounting_testkit::Env;

use super::{BIN, KEY_BOB, KEY1, KEY2};

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

    // An expiry in the past is refused, as a time or as a date; a date is midnight UTC.
    for past in ["2020-01-01T00:00:00Z", "2020-01-01"] {
        run(
            &["store", "--service", "mistral", "--expires-at", past],
            Some(KEY1),
        )
        .code(2);
    }
    let bad = run(
        &[
            "store",
            "--service",
            "mistral",
            "--expires-at",
            "31/01/2099",
        ],
        Some(KEY1),
    )
    .code(2);
    assert!(bad.stderr.contains("nor a date"), "{bad:#?}");
    run(
        &["store", "--service", "groq", "--expires-at", "2099-01-31"],
        Some(KEY1),
    )
    .ok();
    let listed = run(&["list", "--format", "json"], None).ok().json();
    let groq = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["service"] == "groq")
        .expect("groq listed");
    assert_eq!(groq["expires_at"], "2099-01-31T00:00:00Z", "{groq}");

    // An expired value: exit code 6.
    run(
        &["store", "--service", "mistral", "--expires-in", "1s"],
        Some(KEY1),
    )
    .ok();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = run(&["get", "--service", "mistral"], None).code(6);
    assert!(r.stderr.contains("expired"), "{r:#?}");
}

/// `keys list` shows `expired` for a key whose current value expired (as `get` refuses it
/// with exit 6), in the table and in JSON; a live key stays `active`.
#[test]
fn list_shows_expired() {
    let env = Env::new(BIN);
    env.run_stdin(
        &[
            "keys",
            "store",
            "--service",
            "mistral",
            "--expires-in",
            "1s",
        ],
        KEY1,
    )
    .ok();
    env.run_stdin(&["keys", "store", "--service", "openai"], KEY2)
        .ok();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    env.run(&["keys", "get", "--service", "mistral"]).code(6);
    let r = env.run(&["keys", "list", "--format", "json"]).ok();
    let v: serde_json::Value = r.json();
    let states: Vec<(&str, &str)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|k| {
            let s = |f: &str| k[f].as_str().expect("a string");
            (s("service"), s("state"))
        })
        .collect();
    assert_eq!(states, [("mistral", "expired"), ("openai", "active")]);
    let r = env.run(&["keys", "list"]).ok();
    let mistral = r.stdout.lines().find(|l| l.starts_with("mistral"));
    assert!(mistral.is_some_and(|l| l.contains("expired")), "{r:#?}");
}
