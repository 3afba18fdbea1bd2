//! Mistakes caught early (issue 15): setup problems are exit 2 in one line and never retried,
//! configuration is checked before the key is asked for, an unreachable database server says
//! why at once, the default-location note is said once, configuration errors have one prefix
//! and keep a parser's lines.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use llm_accounting_testkit::{Env, Run};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const KEY: &str = "sk-test-FAKE-mistakes-0000000000000001";

/// An environment for a cloud provider as a new user has it: no credentials, no region, no
/// configuration files (HOME is the temporary directory).
fn cloud_newcomer(provider: &str, key_id: &str) -> Env {
    let mut env =
        Env::with_database(BIN).strip_prefixes(&["AWS_", "GOOGLE_", "CLOUDSDK_", "GCE_", "AZURE_"]);
    let home = env.dir().display().to_string();
    env.set("HOME", &home);
    env.set("LLM_ACCOUNTING_KMS_PROVIDER", provider);
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", key_id);
    env
}

/// Asserts exit 2, one line on stderr, that line a configuration error with one prefix, and
/// no retries.
#[track_caller]
fn one_line_setup_error(run: Run) -> Run {
    let run = run.code(2);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: configuration error: "),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr.matches("configuration error:").count(),
        1,
        "{run:#?}"
    );
    assert!(!run.stderr.contains("attempts"), "retried: {run:#?}");
    run
}

#[test]
fn aws_without_a_region_is_one_line_and_exit_2() {
    let env = cloud_newcomer("aws", "alias/llm-accounting");
    let r = one_line_setup_error(env.run_stdin(&["keys", "store", "--service", "openai"], KEY));
    assert!(r.stderr.contains("no AWS region"), "{r:#?}");
    assert!(!r.stderr.contains("IMDS"), "{r:#?}");
}

#[test]
fn aws_without_credentials_is_one_line_and_exit_2() {
    let mut env = cloud_newcomer("aws", "alias/llm-accounting");
    env.set("AWS_REGION", "eu-west-1");
    // Off EC2 the instance metadata service refuses or does not answer; where it is switched
    // off, the chain says "no credentials" directly.
    env.set("AWS_EC2_METADATA_DISABLED", "true");
    let r = one_line_setup_error(env.run_stdin(&["keys", "store", "--service", "openai"], KEY));
    assert!(r.stderr.contains("no AWS credentials found"), "{r:#?}");
}

#[test]
fn gcp_without_credentials_is_one_line_and_exit_2_like_aws() {
    let env = cloud_newcomer("gcp", "projects/p/locations/global/keyRings/r/cryptoKeys/k");
    let r = one_line_setup_error(env.run_stdin(&["keys", "store", "--service", "openai"], KEY));
    assert!(
        r.stderr.contains("no Google Cloud credentials found"),
        "{r:#?}"
    );
    assert!(
        r.stderr.contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{r:#?}"
    );
}

#[test]
fn the_provider_is_checked_before_the_key_is_read() {
    // AWS without a master key: refused at once, while stdin is still open and unwritten (the
    // old order waited for the key first, then failed).
    let env = cloud_newcomer("aws", "");
    let mut child = env
        .command(&["keys", "store", "--service", "openai"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let _stdin_kept_open = child.stdin.take();
    // A guard against a hang, not a timing assertion: the old order never returns here.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keys store waited for a key before checking the provider");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("LLM_ACCOUNTING_KMS_KEY_ID"), "{stderr}");
}

#[test]
fn an_unreachable_database_server_says_why_at_once() {
    let port = llm_accounting_testkit::closed_port_url()
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let env = Env::new(BIN);
    for url in [
        format!("postgres://postgres@127.0.0.1:{port}/x"),
        format!("mysql://root@127.0.0.1:{port}/x"),
    ] {
        // The old pool retried "connection refused" for its whole acquire timeout and then
        // said only "pool timed out".
        let r = env.run(&["--db", &url, "keys", "list"]).code(5);
        assert!(r.stderr.contains("Connection refused"), "{r:#?}");
        assert!(!r.stderr.contains("pool timed out"), "{r:#?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:#?}");
    }
}

#[test]
fn the_default_location_note_is_said_once_then_only_with_verbose() {
    let env = Env::with_data_dir_only(BIN);
    let note = |r: &Run| {
        r.stderr
            .lines()
            .filter(|l| l.starts_with("note:") && l.contains("default database"))
            .count()
    };
    let first = env
        .run_stdin(&["keys", "store", "--service", "openai"], KEY)
        .ok();
    assert_eq!(note(&first), 1, "{first:#?}");
    assert!(first.stderr.contains("created"), "{first:#?}");
    let again = env.run(&["keys", "list"]).ok();
    assert_eq!(note(&again), 0, "{again:#?}");
    let verbose = env.run(&["-v", "keys", "list"]).ok();
    assert_eq!(note(&verbose), 1, "{verbose:#?}");
    assert!(!verbose.stderr.contains("created"), "{verbose:#?}");
}

#[test]
fn configuration_errors_have_one_prefix_and_parse_errors_keep_their_lines() {
    let env = Env::new(BIN);
    let file = env.dir().join("bad.toml");
    std::fs::write(&file, "[kms]\nprovider = \"local\"\nfoo = \n").expect("write");
    let r = env
        .run(&["--config", file.to_str().expect("utf-8"), "keys", "list"])
        .code(2);
    assert_eq!(
        r.stderr.matches("configuration error:").count(),
        1,
        "{r:#?}"
    );
    assert!(r.stderr.contains("line 3"), "{r:#?}");
    // The parser's picture of the line stays a picture.
    assert!(
        r.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("3 | foo =")),
        "{r:#?}"
    );

    // Other configuration mistakes: one prefix each.
    let mut azure = cloud_newcomer("azure", "https://x.vault.azure.net/keys/k");
    for (var, value) in [
        ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "client_secret"),
        ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "client-secret"),
    ] {
        azure.set(var, value);
        one_line_setup_error(azure.run_stdin(&["keys", "store", "--service", "openai"], KEY));
    }
    azure.set("AZURE_TENANT_ID", "not a tenant!");
    azure.set("AZURE_CLIENT_ID", "x");
    azure.set("AZURE_CLIENT_SECRET", "y");
    one_line_setup_error(azure.run_stdin(&["keys", "store", "--service", "openai"], KEY));
}

#[test]
fn keys_with_whitespace_or_several_lines_are_refused_unless_asked() {
    let env = Env::new(BIN);
    let store = ["keys", "store", "--service", "openai"];
    for input in [
        format!(" {KEY}\n"),
        format!("{KEY} \n"),
        format!("{KEY}\t"),
        format!("{KEY}\nsecond line\n"),
        format!("{KEY}\n\n"),
    ] {
        let r = env.run_stdin(&store, &input).code(2);
        assert!(r.stderr.contains("--keep-whitespace"), "{input:?}: {r:#?}");
    }
    env.run(&["keys", "get", "--service", "openai"]).code(3);

    let mut keep = store.to_vec();
    keep.push("--keep-whitespace");
    env.run_stdin(&keep, &format!(" {KEY}\n")).ok();
    let r = env.run(&["keys", "get", "--service", "openai"]).ok();
    assert_eq!(r.stdout, format!(" {KEY}\n"));
}

/// The warning about `LLM_ACCOUNTING_DATABSE_URL`.
const TYPO_WARNING: &str = "warning: LLM_ACCOUNTING_DATABSE_URL is set but no setting reads it \
                            (did you mean LLM_ACCOUNTING_DATABASE_URL?)";

/// Asserts that `warning` is the first line on stderr, and the only warning.
#[track_caller]
fn warned_once(run: &Run, warning: &str) {
    assert_eq!(run.stderr.lines().next(), Some(warning), "{run:#?}");
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{run:#?}");
}

#[test]
fn a_mistyped_variable_is_warned_about_once_by_every_command() {
    let mut env = Env::new(BIN).secrets(&[KEY]);
    env.set("LLM_ACCOUNTING_DATABSE_URL", "sqlite:///elsewhere.db");
    warned_once(&env.run(&["keys", "list"]).ok(), TYPO_WARNING);
    // --quiet silences what succeeded, not what is wrong.
    let r = env.run_stdin(&["--quiet", "keys", "store", "--service", "openai"], KEY);
    warned_once(&r.ok(), TYPO_WARNING);
    // A failing command warns too, before its error.
    let r = env.run(&["keys", "get", "--service", "nothing"]).code(3);
    warned_once(&r, TYPO_WARNING);
    warned_once(&env.run(&["completions", "bash"]).ok(), TYPO_WARNING);
    // Doctor says it among its checks, with the nearest name, not on stderr.
    let r = env.run(&["doctor"]).code(1);
    assert!(r.stderr.is_empty(), "{r:#?}");
    assert!(
        r.stdout
            .contains("LLM_ACCOUNTING_DATABSE_URL (did you mean LLM_ACCOUNTING_DATABASE_URL?)"),
        "{r:#?}"
    );
}

#[test]
fn the_projects_own_variables_that_are_no_setting_are_not_warned_about() {
    let mut env = Env::new(BIN);
    let config = env.dir().join("empty.toml");
    std::fs::write(&config, "").expect("write");
    env.set("LLM_ACCOUNTING_CONFIG", config.to_str().expect("utf-8"));
    env.set("LLM_ACCOUNTING_REQUIRE_SERVICES", "1");
    env.set("LLM_ACCOUNTING_TEST_SOMETHING", "x");
    let r = env.run(&["keys", "list"]).ok();
    assert!(!r.stderr.contains("warning"), "{r:#?}");
    // A name far from every variable is warned about without a guess.
    env.set("LLM_ACCOUNTING_SOMETHING_ELSE_ENTIRELY", "x");
    warned_once(
        &env.run(&["keys", "list"]).ok(),
        "warning: LLM_ACCOUNTING_SOMETHING_ELSE_ENTIRELY is set but no setting reads it \
         (`llm-accounting --help` lists the variables)",
    );
}

/// A key pasted with its `NAME=` from a `.env` line, or in quotes, is refused on `store` and
/// `rotate` (exit 2, nothing stored, the key never shown) unless `--as-is`.
#[test]
fn keys_pasted_with_a_name_or_quotes_are_refused_unless_asked() {
    let env = Env::new(BIN).secrets(&[KEY]);
    let pastes = [
        (format!("OPENAI_API_KEY={KEY}\n"), "variable name"),
        (format!("export OPENAI_API_KEY={KEY}\n"), "variable name"),
        (format!("OPENAI_API_KEY=\"{KEY}\"\n"), "variable name"),
        (format!("\"{KEY}\"\n"), "quotes"),
        (format!("'{KEY}'\n"), "quotes"),
    ];
    for (input, why) in &pastes {
        let r = env
            .run_stdin(&["keys", "store", "--service", "openai"], input)
            .code(2);
        assert!(
            r.stderr.contains(why) && r.stderr.contains("--as-is"),
            "{input:?}: {r:#?}"
        );
        assert!(!r.stdout.contains(KEY), "{r:#?}");
    }
    env.run(&["keys", "get", "--service", "openai"]).code(3);

    let other = "sk-test-FAKE-mistakes-0000000000000002";
    env.run_stdin(&["keys", "store", "--service", "openai"], other)
        .ok();
    for (input, why) in &pastes {
        let r = env
            .run_stdin(&["keys", "rotate", "--service", "openai"], input)
            .code(2);
        assert!(r.stderr.contains(why), "{input:?}: {r:#?}");
    }
    let r = env.run(&["keys", "get", "--service", "openai"]).ok();
    assert_eq!(r.stdout, format!("{other}\n"), "nothing rotated");

    let quoted = format!("\"{KEY}\"");
    env.run_stdin(
        &["keys", "rotate", "--service", "openai", "--as-is"],
        &quoted,
    )
    .ok();
    let r = env.run(&["keys", "get", "--service", "openai"]).ok();
    assert_eq!(r.stdout, format!("{quoted}\n"));
}

/// Issue 23: extreme numbers made the binary panic (exit 101): `keys store --expires-in
/// 99999999999d`, `keys list --expiring 99999999999d`, `keys audit --since 99999999999d`,
/// `LLM_ACCOUNTING_PREVIOUS_GRACE_SECS=18446744073709551615` with `rotate`,
/// `LLM_ACCOUNTING_DB_CONNECT_TIMEOUT_SECS=18446744073709551615`, and
/// `LLM_ACCOUNTING_DB_BUSY_TIMEOUT_SECS=2147484` in the SQLite worker (exit 5); an empty
/// `LLM_ACCOUNTING_CACHE_TTL_SECS` exited 2. Every setting's variable gets extreme values and
/// every duration flag a huge one: a usage or configuration error, never a crash.
#[test]
fn extreme_values_of_every_setting_and_flag_are_errors_not_crashes() {
    let env = Env::new(BIN).secrets(&[KEY]);
    env.run_stdin(&["-q", "keys", "store", "--service", "openai"], KEY)
        .ok();
    let run_in_dir = |args: &[&str], var: Option<(&str, &str)>, stdin: &str| {
        use std::io::Write;
        let mut cmd = env.command(args);
        cmd.current_dir(env.dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some((k, v)) = var {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes());
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Emptying a variable the environment sets (the database, the master key file) would
    // send the binary to the default locations of this machine's user.
    let own: Vec<String> = env.vars().map(|(k, _)| k.to_owned()).collect();
    for (var, setting) in llm_accounting::ENV_VARS {
        for value in [
            "18446744073709551615",
            "99999999999999999999999",
            "-1",
            "2147484",
            "",
        ] {
            if value.is_empty() && own.iter().any(|o| o == var) {
                continue;
            }
            for args in [
                &["keys", "list"][..],
                &["keys", "rotate", "--service", "openai"],
            ] {
                let (code, stderr) = run_in_dir(args, Some((var, value)), KEY);
                assert!(
                    code.is_some_and(|c| c != 101) && !stderr.contains("panicked"),
                    "{var}={value:?} ({setting}) {args:?}: {code:?} {stderr}"
                );
                if value.is_empty() {
                    assert_eq!(code, Some(0), "empty {var} is not set: {stderr}");
                }
            }
        }
    }
    for args in [
        &[
            "keys",
            "store",
            "--service",
            "x",
            "--expires-in",
            "99999999999d",
        ][..],
        &["keys", "list", "--expiring", "99999999999d"],
        &["keys", "audit", "--since", "99999999999d"],
        &["usage", "stats", "--since", "99999999999d"],
        &[
            "limits",
            "set",
            "--type",
            "requests",
            "--max",
            "1",
            "--rolling",
            "99999999999d",
        ],
        &[
            "gateway",
            "keys",
            "create",
            "--user",
            "u",
            "--expires-in",
            "99999999999d",
        ],
    ] {
        let (code, stderr) = run_in_dir(args, None, KEY);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
    // What was stored is still there and readable.
    let r = env.run(&["keys", "get", "--service", "openai"]).ok();
    assert!(!r.stdout.is_empty());
}
