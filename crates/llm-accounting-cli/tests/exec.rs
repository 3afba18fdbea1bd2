//! `exec` end to end: keys reach the command's environment and nowhere else, every failure
//! before the command starts uses the documented exit codes, and the command's own exit code
//! (or 128 + its signal) is passed through.

use llm_accounting_testkit::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const OPENAI: &str = "sk-test-FAKE-exec-000000000000000000000001";
const ANTHROPIC: &str = "sk-test-FAKE-exec-000000000000000000000002";

fn env_with_keys() -> Env {
    let env = Env::new(BIN).secrets(&[OPENAI, ANTHROPIC]);
    env.run_stdin(&["keys", "store", "--service", "openai"], OPENAI)
        .ok();
    env.run_stdin(
        &[
            "keys",
            "store",
            "--service",
            "anthropic",
            "--user",
            "alice",
            "--project",
            "web",
        ],
        ANTHROPIC,
    )
    .ok();
    env
}

#[test]
fn exec_passes_keys_in_the_environment_and_the_exit_code_back() {
    let env = env_with_keys();
    // The command checks the values itself and exits 7: neither key is printed by anyone.
    let script = format!(
        "test \"$OPENAI_API_KEY\" = '{OPENAI}' && test \"$ANTHROPIC_API_KEY\" = '{ANTHROPIC}' \
         && exit 7; exit 1"
    );
    let r = env
        .run(&[
            "exec",
            "--env",
            "OPENAI_API_KEY=openai",
            "--env",
            "ANTHROPIC_API_KEY=anthropic:alice:web",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .code(7);
    assert!(
        !r.stdout.contains(OPENAI) && !r.stdout.contains(ANTHROPIC),
        "{r:#?}"
    );

    // The command's own output and arguments pass through untouched.
    let r = env
        .run(&[
            "exec",
            "--env",
            "K=openai",
            "--",
            "sh",
            "-c",
            "echo \"args:$*\"; printf %s \"$K\" | wc -c",
            "sh",
            "-x",
            "--y",
        ])
        .ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "args:-x --y", "{r:#?}");
    assert_eq!(lines[1].trim(), OPENAI.len().to_string(), "{r:#?}");
}

#[test]
fn exec_reads_mappings_from_an_env_file() {
    // Issue 24: a real `.env` of values, some of them references. References become keys;
    // every other line is passed through unchanged, `${VAR}` expanded as python-dotenv does.
    let env = env_with_keys();
    let file = env.dir().join("keys.env");
    std::fs::write(
        &file,
        "# app settings\nDEBUG=1\nexport OPENAI_API_KEY=llm-accounting://openai\n\
         ANTHROPIC_API_KEY=\"llm-accounting://anthropic?user=alice&project=web\"\n\
         BASE=llm-accounting://openai\nCOPY=${BASE}\nGREETING='hello # world'\n\
         URL=https://example.com/?a=1&b=${DEBUG}\n",
    )
    .expect("write");
    let script = format!(
        "test \"$OPENAI_API_KEY\" = '{OPENAI}' && test \"$ANTHROPIC_API_KEY\" = '{ANTHROPIC}' \
         && test \"$COPY\" = '{OPENAI}' && test \"$DEBUG\" = 1 \
         && test \"$GREETING\" = 'hello # world' && test \"$URL\" = 'https://example.com/?a=1&b=1'"
    );
    env.run(&[
        "exec",
        "--env-file",
        file.to_str().expect("utf-8"),
        "--",
        "sh",
        "-c",
        &script,
    ])
    .ok();
    // A file of the old VAR=SERVICE map lines holds no reference: refused (exit 2), saying
    // where mappings go, rather than passing the service names on as values.
    std::fs::write(&file, "OPENAI_API_KEY=openai\n").expect("write");
    let r = env
        .run(&[
            "exec",
            "--env-file",
            file.to_str().expect("utf-8"),
            "--",
            "true",
        ])
        .code(2);
    assert!(r.stderr.contains("no reference"), "{r:#?}");
    assert!(r.stderr.contains("--env"), "{r:#?}");
    // A bad reference names the file, the line and the variable, not the text.
    std::fs::write(&file, "A=1\nKEY=llm-accounting://openai?usr=alice\n").expect("write");
    let r = env
        .run(&[
            "exec",
            "--env-file",
            file.to_str().expect("utf-8"),
            "--",
            "true",
        ])
        .code(2);
    assert!(r.stderr.contains("keys.env line 2: KEY"), "{r:#?}");
    assert!(!r.stderr.contains("usr=alice"), "{r:#?}");

    // A bad line is exit 2 naming the file and the line; a missing file is exit 2 naming it.
    std::fs::write(
        &file,
        "OPENAI_API_KEY=llm-accounting://openai\nnot a mapping\n",
    )
    .expect("write");
    let r = env
        .run(&[
            "exec",
            "--env-file",
            file.to_str().expect("utf-8"),
            "--",
            "true",
        ])
        .code(2);
    assert!(r.stderr.contains("keys.env line 2"), "{r:#?}");
    let missing = env.dir().join("nope.env");
    let r = env
        .run(&[
            "exec",
            "--env-file",
            missing.to_str().expect("utf-8"),
            "--",
            "true",
        ])
        .code(2);
    assert!(r.stderr.contains("nope.env"), "{r:#?}");
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_the_signal() {
    let env = env_with_keys();
    env.run(&[
        "exec",
        "--env",
        "K=openai",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ])
    .code(128 + 15);
    env.run(&[
        "exec",
        "--env",
        "K=openai",
        "--",
        "sh",
        "-c",
        "kill -KILL $$",
    ])
    .code(128 + 9);
}

#[test]
fn nothing_runs_unless_every_key_can_be_read() {
    let env = env_with_keys();
    let marker = env.dir().join("ran");
    let touch = format!("touch '{}'", marker.display());
    // One key missing: exit 3, the command never starts.
    let r = env
        .run(&[
            "exec",
            "--env",
            "A=openai",
            "--env",
            "B=mistral",
            "--",
            "sh",
            "-c",
            &touch,
        ])
        .code(3);
    assert!(r.stderr.contains("mistral"), "{r:#?}");
    assert!(!marker.exists(), "the command ran: {r:#?}");
    // A disabled key: exit 1.
    env.run(&["keys", "disable", "--service", "openai"]).ok();
    env.run(&["exec", "--env", "A=openai", "--", "sh", "-c", &touch])
        .code(1);
    assert!(!marker.exists());
    env.run(&["keys", "enable", "--service", "openai"]).ok();

    // Bad mappings and a variable named twice: exit 2, nothing opened.
    for args in [
        &["exec", "--env", "1A=openai", "--", "true"][..],
        &["exec", "--env", "A", "--", "true"],
        &[
            "exec",
            "--env",
            "A=openai",
            "--env",
            "A=openai:bob",
            "--",
            "true",
        ],
        &["exec", "--", "true"],
    ] {
        env.run(args).code(2);
    }
    // No command at all: clap's usage error.
    env.run(&["exec", "--env", "A=openai"]).code(2);
    // A command that does not exist: 127, as shells say.
    let r = env
        .run(&["exec", "--env", "A=openai", "--", "no-such-command-here"])
        .code(127);
    assert!(r.stderr.contains("no-such-command-here"), "{r:#?}");
    // One that cannot be run (not executable): 126.
    let plain = env.dir().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write");
    env.run(&[
        "exec",
        "--env",
        "A=openai",
        "--",
        plain.to_str().expect("utf-8"),
    ])
    .code(126);
}

#[test]
fn sigterm_to_llm_accounting_reaches_the_command() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let env = env_with_keys();
    // The command says when its trap is set, then waits; on SIGTERM it exits 42.
    let mut child = env
        .command(&[
            "exec",
            "--env",
            "K=openai",
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("read");
    assert_eq!(ready.trim(), "ready");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(42), "{status:?}");
}

/// Issue 23: when `exec` was killed with SIGKILL, the command lived on holding the key. On
/// Linux it now gets SIGKILL with its parent (`PR_SET_PDEATHSIG`).
#[cfg(target_os = "linux")]
#[test]
fn a_command_does_not_outlive_exec_killed_with_sigkill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let env = env_with_keys();
    // The command prints its own pid (an `exec`ed sleep keeps it), then waits.
    let mut exec = env
        .command(&[
            "exec",
            "--env",
            "K=openai",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 120",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(exec.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let pid: u32 = line.trim().parse().expect("the command's pid");
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            // A zombie (state Z) has exited; only its entry is left.
            .is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z'))
            })
    };
    assert!(alive(), "the command runs");
    let status = Command::new("kill")
        .args(["-KILL", &exec.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    exec.wait().expect("wait");
    // Generous: the kernel delivers the signal at once; this only waits for it to land.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !alive(),
        "the command (pid {pid}) outlived exec killed with SIGKILL"
    );
}

/// Issue 23: `exec --env LD_PRELOAD=openai -- true` made the dynamic loader print the key
/// ("ERROR: ld.so: object '<key>' ... cannot be preloaded"). Variables that change how the
/// command is loaded or run are refused, before any key is read, unless `--allow-name`.
#[test]
fn variables_that_change_how_the_command_runs_are_refused_unless_allowed() {
    let env = env_with_keys();
    for var in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "DYLD_INSERT_LIBRARIES",
        "PATH",
        "BASH_ENV",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
    ] {
        let mapping = format!("{var}=openai");
        let r = env.run(&["exec", "--env", &mapping, "--", "true"]).code(2);
        assert!(r.stderr.contains("--allow-name"), "{var}: {r:#?}");
        assert!(!r.stderr.contains(OPENAI), "{var}: the key was printed");
        // From a file too.
        let file = env.dir().join("map");
        std::fs::write(&file, format!("{mapping}\n")).expect("write");
        env.run(&[
            "exec",
            "--env-file",
            &file.display().to_string(),
            "--",
            "true",
        ])
        .code(2);
    }
    // Allowed by name, it is set (and only the one named is allowed).
    let r = env.run_with(
        &[
            "exec",
            "--allow-name",
            "NODE_OPTIONS",
            "--env",
            "NODE_OPTIONS=openai",
            "--",
            "sh",
            "-c",
            "test \"$NODE_OPTIONS\" = \"$EXPECTED\"",
        ],
        None,
        &[("EXPECTED", OPENAI)],
    );
    assert_eq!(r.code, 0, "{r:#?}");
    env.run(&[
        "exec",
        "--allow-name",
        "NODE_OPTIONS",
        "--env",
        "LD_PRELOAD=openai",
        "--",
        "true",
    ])
    .code(2);
}

/// Issue 23: `exec --env-file .env` given an ordinary `.env` (values, not service names)
/// looked each value up as a service: the key was printed in the error and written into the
/// audit trail (`"service": "sk-proj-…"`), where the keyed chain keeps it for good.
#[test]
fn a_dotenv_file_of_values_is_refused_without_echoing_or_auditing_them() {
    const VALUE: &str = "sk-proj-FAKE0123456789abcdefghijklmnopqrstuv";
    let env = env_with_keys().secrets(&[VALUE]);
    let file = env.dir().join(".env");
    // Values only, no reference: nothing to pass, and nothing looked up as a service.
    std::fs::write(&file, format!("OPENAI_API_KEY={VALUE}\n")).expect("write");
    let r = env
        .run(&[
            "exec",
            "--env-file",
            &file.display().to_string(),
            "--",
            "true",
        ])
        .code(2);
    assert!(r.stderr.contains("no reference"), "{r:#?}");
    assert!(!r.stdout.contains(VALUE));
    // With a reference beside it, the value reaches the command untouched and unprinted.
    std::fs::write(
        &file,
        format!("OTHER_KEY={VALUE}\nOPENAI_API_KEY=llm-accounting://openai\n"),
    )
    .expect("write");
    let r = env
        .run(&[
            "exec",
            "--env-file",
            &file.display().to_string(),
            "--",
            "sh",
            "-c",
            &format!("test \"$OTHER_KEY\" = '{VALUE}'"),
        ])
        .ok();
    assert!(!r.stdout.contains(VALUE));
    // Given where a service name is expected, a key is refused and not repeated.
    let r = env
        .run(&["exec", "--env", &format!("K={VALUE}"), "--", "true"])
        .code(2);
    assert!(r.stderr.contains("looks like an API key"), "{r:#?}");
    assert!(!r.stdout.contains(VALUE));
    let audit = env.run(&["keys", "audit", "--format", "json"]).ok();
    assert!(!audit.stdout.contains("FAKE0123456789"), "{}", audit.stdout);
    env.run(&["keys", "audit", "--verify"]).ok();
}
