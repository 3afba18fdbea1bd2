//! The README's shell examples, run as a newcomer would: every ```` ```sh ```` block that
//! needs no cloud account, in one fresh home directory (no configuration at all, the test's
//! binary as `llm-accounting` on PATH), in the order the README gives them. A block that is
//! not run says why in [`plan`]; a new block fails this test until it is given a plan.

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// An obviously fake key for the examples that paste one.
const FAKE: &str = "sk-test-FAKE-0123456789abcdef";

/// What the test does with one block.
enum Plan {
    /// Not run, for this reason.
    Skip(&'static str),
    /// Written to this file (a block showing a file's content).
    File(&'static str),
    /// Run in bash after `prelude` (the files and stand-ins the example assumes); every
    /// comment line starting `# ` after the first command is output the README shows, and
    /// must appear on stdout or stderr.
    Run {
        prelude: &'static str,
        expect_comments: bool,
    },
}

/// The plan of the block whose text is `block`.
fn plan(block: &str) -> Plan {
    let has = |s: &str| block.contains(s);
    if has("scripts/test") && has("cargo bench") {
        return Plan::Skip("the developer's commands: the test suite and benchmarks themselves");
    }
    if has("keys store --service openai && cargo run -q -- keys get") {
        // The main job, as the README's first command runs it (`cargo run` is this binary).
        return Plan::Run {
            prelude: "",
            expect_comments: false,
        };
    }
    if has("cargo install --locked --path crates/llm-accounting-cli") {
        return Plan::Run {
            prelude: "",
            expect_comments: false,
        };
    }
    if has("pbpaste | llm-accounting keys store") {
        return Plan::Run {
            prelude: "pbpaste() { printf '%s' \"$FAKE\"; }",
            expect_comments: false,
        };
    }
    if has("exec --env OPENAI_API_KEY=openai:alice") {
        return Plan::Run {
            prelude: r#"
printf '%s' "$FAKE" | llm-accounting -q keys store --service anthropic
printf '%s' "$FAKE" | llm-accounting -q keys store --service anthropic --user alice --project search
printf 'import os\nassert os.environ["OPENAI_API_KEY"] == os.environ["FAKE"]\nassert os.environ["ANTHROPIC_API_KEY"] == os.environ["FAKE"]\nprint("app ran")\n' > app.py
python() { python3 "$@"; }
printf '#!/bin/sh\ntest "$DEBUG" = 1 && test "$OPENAI_API_KEY" = "$FAKE" && echo tests ran\n' > run-tests.sh
chmod +x run-tests.sh
"#,
            expect_comments: false,
        };
    }
    if block.starts_with("# .env\n") {
        return Plan::File(".env");
    }
    if has("inject -i config.tpl -o config.yaml") {
        return Plan::Run {
            prelude: "printf 'api_key: {{ llm-accounting://openai?user=alice }}\\n' > config.tpl",
            expect_comments: false,
        };
    }
    if has("keys import --env-file .env --user alice") {
        // Its own project directory, with the .env its output describes, and its own store
        // (the examples above stored openai/alice already; the output shown is a first import).
        return Plan::Run {
            prelude: r#"
export LLM_ACCOUNTING_DATA_DIR="$HOME/import-data"
mkdir -p import && cd import
printf 'OPENAI_API_KEY=%s\nAZURE_OPENAI_API_KEY=%s\n# a comment\nDEBUG=1\n' "$FAKE" "$FAKE" > .env
"#,
            expect_comments: true,
        };
    }
    if has("llm-accounting completions bash >") {
        return Plan::Run {
            prelude: "",
            expect_comments: false,
        };
    }
    if has("gateway serve") && has("gateway keys create") {
        // `gateway serve` runs until Ctrl-C: started, then stopped once it answers.
        return Plan::Run {
            prelude: r#"
serve_and_stop() {
    llm-accounting gateway serve --listen 127.0.0.1:0 2> serve.log &
    pid=$!
    for _ in $(seq 1 100); do grep -q "listening" serve.log && break; sleep 0.1; done
    grep -q "listening" serve.log || { cat serve.log >&2; exit 97; }
    kill -TERM $pid && wait $pid
    echo "gateway served and stopped"
}
"#,
            expect_comments: false,
        };
    }
    if has("keys audit --verify --expect-head") {
        return Plan::Run {
            prelude: "llm-accounting keys audit --head > head-kept-elsewhere",
            expect_comments: false,
        };
    }
    if has("KMS_PROVIDER=aws") || has("KMS_PROVIDER=azure") || has("KMS_PROVIDER=gcp") {
        return Plan::Skip("needs a cloud account and key (the provider tests cover these steps)");
    }
    if has("gcloud kms keys add-iam-policy-binding") {
        return Plan::Skip("needs a Google Cloud project");
    }
    if has("moto_kms_server.py") || has("drongo server") {
        return Plan::Skip(
            "starts its own KMS emulator on a fixed port (tests/aws.rs and tests/gcp.rs run the \
             same steps against the emulators scripts/test starts)",
        );
    }
    panic!("a shell example in README.md has no plan in tests/readme.rs:\n{block}");
}

/// The ```` ```sh ```` blocks of `readme`, in order.
fn sh_blocks(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match &mut current {
            None if line.trim_start() == "```sh" => current = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => {
                out.extend(current.take());
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// A block as this test runs it: the README's first command calls the binary through
/// `cargo run`, which is the binary on PATH here; `cargo install` is what put it there; the
/// gateway is started and stopped.
fn runnable(block: &str) -> String {
    block
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo install") && l.trim() != "scripts/test")
        .map(|l| {
            let l = l.replace("cargo run -q --", "llm-accounting");
            if l.trim_start().starts_with("llm-accounting gateway serve") {
                "serve_and_stop".to_owned()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The output lines a block shows as comments (`# ...` lines after its first command, up to
/// a trailing `...`).
fn shown_output(block: &str) -> Vec<String> {
    block
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("# "))
        .map(|l| l.split(" ...").next().unwrap_or(l).to_owned())
        .collect()
}

/// bash in `home` as a fresh user: no variable of the test's environment but `PATH` (the
/// binary's directory first) and the locale.
fn bash(home: &Path, script: &str, stdin: &str) -> std::process::Output {
    let bin_dir = Path::new(BIN).parent().expect("directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["--norc", "--noprofile", "-euo", "pipefail", "-c", script])
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("FAKE", FAKE)
        .current_dir(home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        let _ = pipe.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn the_readme_shell_examples_run() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() > 10, "{} blocks", blocks.len());
    // Only its temporary directory: the runs below get none of its variables.
    let env = llm_accounting_testkit::Env::new(BIN);
    let home = env.dir().join("home");
    std::fs::create_dir(&home).expect("home");
    // The files the README shows, first: the examples before them use them.
    for block in &blocks {
        if let Plan::File(name) = plan(block) {
            std::fs::write(home.join(name), block).expect("write the file");
        }
    }
    let (mut ran, mut skipped) = (0, 0);
    for block in &blocks {
        match plan(block) {
            Plan::Skip(why) => {
                eprintln!("not run ({why}):\n{block}");
                skipped += 1;
            }
            Plan::File(_) => {}
            Plan::Run {
                prelude,
                expect_comments,
            } => {
                let script = format!("{prelude}\n{}", runnable(block));
                let out = bash(&home, &script, FAKE);
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success(),
                    "README example failed ({:?}):\n{block}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                    out.status
                );
                // No example prints the key it handles.
                assert!(
                    !stderr.contains(FAKE),
                    "a key on stderr:\n{block}\n{stderr}"
                );
                if expect_comments {
                    for line in shown_output(block) {
                        assert!(
                            stdout.contains(&line) || stderr.contains(&line),
                            "README shows {line:?}, the command printed:\n{stdout}{stderr}"
                        );
                    }
                }
                ran += 1;
            }
        }
    }
    assert!(ran >= 9, "ran {ran}, skipped {skipped}");
    // What the examples left behind is what the README says they do.
    let yaml = std::fs::read_to_string(home.join("config.yaml")).expect("inject wrote config.yaml");
    assert_eq!(yaml, format!("api_key: {FAKE}\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("config.yaml"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for file in [
        ".local/share/bash-completion/completions/llm-accounting",
        ".zfunc/_llm-accounting",
        ".config/fish/completions/llm-accounting.fish",
    ] {
        assert!(home.join(file).is_file(), "no {file}");
    }
}
