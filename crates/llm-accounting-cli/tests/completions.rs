//! `completions`, `manual` and `--version` end to end: generated from the parser's own
//! definitions, usable by the shells, and working whatever the configuration.

use std::process::Command;

use llm_accounting_testkit::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

#[test]
fn completion_scripts_for_every_shell() {
    let env = Env::new(BIN);
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let r = env.run(&["completions", shell]).ok();
        for word in ["keys", "exec", "doctor", "service", "format"] {
            assert!(r.stdout.contains(word), "{shell}: no {word}");
        }
    }
    // bash parses the bash script.
    let r = env.run(&["completions", "bash"]).ok();
    let script = env.dir().join("llm-accounting.bash");
    std::fs::write(&script, &r.stdout).expect("write");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash");
    assert!(status.success(), "bash -n refused the completion script");
    env.run(&["completions", "tcsh"]).code(2);
}

#[test]
fn the_manual_page_and_one_page_per_command() {
    let env = Env::new(BIN);
    let r = env.run(&["manual"]).ok();
    assert!(
        r.stdout.starts_with(".ie") || r.stdout.contains(".TH llm-accounting 1"),
        "{r:#?}"
    );
    assert!(r.stdout.contains(".TH llm-accounting 1"), "{r:#?}");
    assert!(r.stdout.contains("exec"), "{r:#?}");
    let alias = env.run(&["man"]).ok();
    assert_eq!(alias.stdout, r.stdout);

    let dir = env.dir().join("man1");
    std::fs::create_dir(&dir).expect("mkdir");
    env.run(&["manual", "--dir", dir.to_str().expect("utf-8")])
        .ok();
    for page in [
        "llm-accounting.1",
        "llm-accounting-exec.1",
        "llm-accounting-keys-store.1",
        "llm-accounting-keys-import.1",
        "llm-accounting-doctor.1",
    ] {
        assert!(dir.join(page).is_file(), "no {page}");
    }
    let missing = env.dir().join("no-such-dir");
    let r = env
        .run(&["manual", "--dir", missing.to_str().expect("utf-8")])
        .code(2);
    assert!(r.stderr.contains("no-such-dir"), "{r:#?}");
}

#[test]
fn version_lists_the_compiled_providers_and_databases() {
    let env = Env::new(BIN);
    let r = env.run(&["--version"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        concat!("llm-accounting ", env!("CARGO_PKG_VERSION"))
    );
    // The default build has everything.
    assert_eq!(lines[1], "KMS providers: local, aws, azure, gcp");
    assert_eq!(lines[2], "databases: sqlite, postgres, mysql");
}

#[test]
fn they_work_whatever_the_configuration() {
    let mut env = Env::new(BIN);
    env.set("LLM_ACCOUNTING_CONFIG", "/no/such/config.toml");
    env.set("LLM_ACCOUNTING_KMS_PROVIDER", "nonsense");
    env.run(&["completions", "bash"]).ok();
    env.run(&["manual"]).ok();
    env.run(&["--version"]).ok();
}
