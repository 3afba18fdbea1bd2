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

/// Sources the bash script in a clean bash, completes the last of `words` (empty: a new word
/// after a space) with the function `complete -p` registered for the binary, as bash does on
/// Tab, and returns COMPREPLY.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    bash_complete_in(&Env::new(BIN), script, words)
}

/// [`bash_complete`] in `env`'s environment, `llm-accounting` on PATH.
fn bash_complete_in(env: &Env, script: &std::path::Path, words: &[&str]) -> Vec<String> {
    const COMPLETE: &str = r#"
source "$1" || exit 90
shift
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
spec=$(complete -p llm-accounting) || exit 91
f=${spec#*-F }
f=${f%% *}
cur=${COMP_WORDS[COMP_CWORD]}
prev=${COMP_WORDS[COMP_CWORD-1]}
"$f" llm-accounting "$cur" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = env
        .program("bash")
        .args(["--norc", "--noprofile", "-c", COMPLETE, "bash"])
        .arg(script)
        .args(words)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "bash: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_after_the_first_word() {
    let env = Env::new(BIN);
    let r = env.run(&["completions", "bash"]).ok();
    let script = env.dir().join("llm-accounting.bash");
    std::fs::write(&script, &r.stdout).expect("write");
    // clap_complete's spelling of the case labels for a hyphenated name (clap-rs/clap#6421).
    assert!(
        !r.stdout.contains("llm__subcmd__accounting"),
        "{}",
        r.stdout
    );

    // The first word (worked before too).
    let first = bash_complete(&script, &["llm-accounting", "ke"]);
    assert_eq!(first, ["keys"], "{first:?}");
    // The second word: a subcommand of `keys`.
    let second = bash_complete(&script, &["llm-accounting", "keys", "g"]);
    assert_eq!(second, ["get"], "{second:?}");
    // The third word: an option of `keys get`.
    let third = bash_complete(&script, &["llm-accounting", "keys", "get", "--s"]);
    assert!(third.contains(&"--service".to_owned()), "{third:?}");
    assert!(third.iter().all(|w| w.starts_with("--s")), "{third:?}");
    // A value enum's values after its option.
    let per = bash_complete(&script, &["llm-accounting", "limits", "set", "--per", ""]);
    for unit in ["second", "minute", "hour", "day", "week", "month"] {
        assert!(per.contains(&unit.to_owned()), "no {unit}: {per:?}");
    }
    // A subcommand with a hyphen in its name.
    let master = bash_complete(&script, &["llm-accounting", "master-key", ""]);
    assert!(!master.is_empty(), "{master:?}");
}

/// Whether `program` is on PATH.
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn zsh_and_fish_scripts_reach_the_second_and_third_word() {
    let env = Env::new(BIN);
    // zsh: every per-command function the script dispatches to is defined in it (the bash
    // bug was exactly a dispatch to names that did not exist).
    let zsh = env.run(&["completions", "zsh"]).ok().stdout;
    let defined: Vec<&str> = zsh.lines().filter_map(|l| l.strip_suffix("() {")).collect();
    let mut used = 0;
    for (at, _) in zsh.match_indices("\":: :") {
        let rest = &zsh[at + 5..];
        let name = &rest[..rest.find('"').expect("closing quote")];
        used += 1;
        assert!(defined.contains(&name), "zsh: {name} used, not defined");
    }
    assert!(used > 10, "zsh: {used} dispatches");
    assert!(
        defined.contains(&"_llm-accounting__subcmd__keys_commands"),
        "{defined:?}"
    );

    // fish: `keys g`, `keys get --s` and `limits set --per` have their candidates.
    let fish = env.run(&["completions", "fish"]).ok().stdout;
    let has = |condition: &str, rest: &str| {
        fish.lines()
            .any(|l| l.contains(&format!("-n \"{condition}")) && l.contains(rest))
    };
    assert!(has(
        "__fish_llm_accounting_using_subcommand keys;",
        "-f -a \"get\""
    ));
    assert!(has(
        "__fish_llm_accounting_using_subcommand keys; and __fish_seen_subcommand_from get\"",
        "-l service "
    ));
    assert!(has(
        "__fish_llm_accounting_using_subcommand limits; and __fish_seen_subcommand_from set\"",
        "-l per "
    ));
    // fish itself, where it is installed (it is not on every test machine).
    if required() || installed("fish") {
        let script = env.dir().join("llm-accounting.fish");
        std::fs::write(&script, &fish).expect("write");
        for (line, expected) in [
            ("llm-accounting keys g", "get"),
            ("llm-accounting keys get --s", "--service"),
            ("llm-accounting limits set --per ", "day"),
        ] {
            let out = Command::new("fish")
                .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
                .arg(&script)
                .arg(line)
                .output()
                .expect("fish");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.lines().any(|l| l.split('\t').next() == Some(expected)),
                "fish {line:?}: {text}"
            );
        }
    }
}

/// Whether the test must fail rather than skip for a missing shell (CI installs them).
fn required() -> bool {
    std::env::var_os("LLM_ACCOUNTING_REQUIRE_SERVICES").is_some_and(|v| v == "1")
}

#[test]
fn service_values_complete_the_stored_service_names() {
    let env = Env::new(BIN);
    // Nothing stored (no database yet): no candidates, and nothing created.
    let none = env.run(&["__complete-services"]).ok();
    assert_eq!(none.stdout, "", "{none:#?}");
    assert!(!env.db_path().exists(), "completion created the database");
    env.run_stdin(
        &["keys", "store", "--service", "openai"],
        "sk-test-fake-0001\n",
    )
    .ok();
    env.run_stdin(
        &["keys", "store", "--service", "anthropic", "--user", "alice"],
        "sk-test-fake-0002\n",
    )
    .ok();
    env.run_stdin(
        &[
            "keys",
            "store",
            "--service",
            "openai",
            "--project",
            "search",
        ],
        "sk-test-fake-0003\n",
    )
    .ok();
    let names = env.run(&["__complete-services"]).ok();
    assert_eq!(names.stdout, "anthropic\nopenai\n", "{names:#?}");
    // Hidden: not in the help, not offered as a command.
    assert!(!env.run(&["--help"]).ok().stdout.contains("__complete"));
    // The audit trail is not touched by completing.
    let audit = env.run(&["keys", "audit", "--format", "json"]).ok().json();
    let rows = audit.as_array().expect("array").len();
    env.run(&["__complete-services"]).ok();
    let again = env.run(&["keys", "audit", "--format", "json"]).ok().json();
    assert_eq!(again.as_array().expect("array").len(), rows);

    // bash, on Tab after `--service`.
    let bash = env.run(&["completions", "bash"]).ok().stdout;
    let script = env.dir().join("llm-accounting.bash");
    std::fs::write(&script, &bash).expect("write");
    let all = bash_complete_in(
        &env,
        &script,
        &["llm-accounting", "keys", "get", "--service", ""],
    );
    assert_eq!(all, ["anthropic", "openai"], "{all:?}");
    let some = bash_complete_in(
        &env,
        &script,
        &["llm-accounting", "keys", "rotate", "--service", "an"],
    );
    assert_eq!(some, ["anthropic"], "{some:?}");
    // The word the scripts run is no command anyone is offered.
    let first = bash_complete_in(&env, &script, &["llm-accounting", ""]);
    assert!(first.contains(&"keys".to_owned()), "{first:?}");
    assert!(!first.iter().any(|w| w.contains("complete")), "{first:?}");

    // fish, on Tab after `--service`.
    if required() || installed("fish") {
        let fish = env.run(&["completions", "fish"]).ok().stdout;
        let script = env.dir().join("llm-accounting.fish");
        std::fs::write(&script, &fish).expect("write");
        let out = env
            .program("fish")
            .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
            .arg(&script)
            .arg("llm-accounting keys get --service ")
            .output()
            .expect("fish");
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(got, ["anthropic", "openai"], "{got:?}");
    }

    // zsh: the script loads under compinit, and the action of every `--service=` spec, run
    // by zsh itself, hands the stored names to compadd.
    if required() || installed("zsh") {
        let zsh = env.run(&["completions", "zsh"]).ok().stdout;
        let dir = env.dir().join("zfunc");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("_llm-accounting"), &zsh).expect("write");
        let specs: Vec<&str> = zsh
            .lines()
            .filter(|l| l.starts_with("'--service="))
            .collect();
        assert!(specs.len() > 5, "{specs:?}");
        let action = {
            let spec = specs[0].trim_end_matches(" \\").trim_end_matches('\'');
            let start = spec.find(":S:{").expect("an action") + 4;
            spec[start..spec.len() - 1].to_owned()
        };
        for spec in &specs {
            assert!(spec.contains(&action), "{spec}");
        }
        const LOAD: &str = r#"
fpath=("$1" $fpath)
autoload -Uz compinit && compinit -u -D || exit 90
autoload -Uz _llm-accounting || exit 91
(( $+functions[_llm-accounting] )) || exit 92
compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@" }
eval "$2"
"#;
        let out = env
            .program("zsh")
            .args(["-f", "-c", LOAD, "zsh"])
            .arg(&dir)
            .arg(&action)
            .output()
            .expect("zsh");
        assert!(
            out.status.success(),
            "zsh: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(got, "anthropic\nopenai\n", "{action}");
    }
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
