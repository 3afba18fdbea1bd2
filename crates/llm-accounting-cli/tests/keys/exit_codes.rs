//! Exit codes for bad input, missing keys and unreachable databases.

use llm_accounting_testkit::Env;

use super::{BIN, KEY1};

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
