//! Configuration files end to end: a key that is no setting is exit 2 with a message naming it
//! and the file, never silently the default; the older `[local]` section still works.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// What one run of the binary produced.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A temporary home for one test: data directory, config files.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a config file and returns its path.
    fn config(&self, text: &str) -> PathBuf {
        let path = self.path("llm-accounting.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Runs the binary with `args`, `stdin`, `vars`, and no `LLM_ACCOUNTING_*` variable of
    /// this process: only `LLM_ACCOUNTING_DATA_DIR` (inside the sandbox, as are `HOME` and
    /// `XDG_DATA_HOME`), so that nothing outside is touched.
    fn run(&self, args: &[&str], stdin: Option<&str>, vars: &[(&str, &Path)]) -> Run {
        let mut cmd = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LLM_ACCOUNTING_") {
                cmd.env_remove(&name);
            }
        }
        cmd.env("LLM_ACCOUNTING_DATA_DIR", self.path("data"))
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.path("xdg"))
            .envs(vars.iter().copied())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn llm-accounting");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(pipe);
        let out = child.wait_with_output().expect("wait");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn an_unknown_key_in_the_config_file_is_exit_2_naming_it_and_the_file() {
    let sb = Sandbox::new();
    for (text, key) in [
        ("[kms]\nprovder = \"aws\"\n", "kms.provder"),
        ("[audit]\nfail_close = true\n", "audit.fail_close"),
        ("[local]\nmaster_key = \"/k\"\n", "local.master_key"),
    ] {
        let file = sb.config(text);
        let r = sb.run(&["--config", arg(&file), "keys", "list"], None, &[]);
        assert_eq!(r.code, Some(2), "{text}: {r:#?}");
        assert!(r.stderr.contains(&format!("`{key}`")), "{text}: {r:#?}");
        assert!(r.stderr.contains(arg(&file)), "{text}: {r:#?}");
        assert!(r.stdout.is_empty(), "{r:#?}");
    }
    // Nothing was created on the way: the error comes before the database or master key.
    assert!(!sb.path("data").exists());

    // The same file named by LLM_ACCOUNTING_CONFIG.
    let file = sb.config("[audit]\nfail_close = true\n");
    let r = sb.run(
        &["keys", "list"],
        None,
        &[("LLM_ACCOUNTING_CONFIG", file.as_path())],
    );
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("`audit.fail_close`"), "{r:#?}");
    assert!(!sb.path("data").exists());
}

#[test]
fn the_older_local_section_still_names_the_master_key_file() {
    let sb = Sandbox::new();
    let key_file = sb.path("keys/older.key");
    let file = sb.config(&format!(
        "database_url = \"sqlite://{}\"\n[local]\nmaster_key_file = \"{}\"\n",
        sb.path("k.db").display(),
        key_file.display()
    ));
    let store = [
        "--config",
        arg(&file),
        "keys",
        "store",
        "--service",
        "openai",
    ];
    let r = sb.run(&store, Some("sk-test-FAKE-older-section-0000"), &[]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(key_file.is_file(), "master key made where [local] says");
    assert!(!sb.path("data/master.key").exists(), "not the default one");
    let r = sb.run(
        &["--config", arg(&file), "keys", "get", "--service", "openai"],
        None,
        &[],
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.stdout.trim_end(), "sk-test-FAKE-older-section-0000");

    // The same file under the current name reads the same key.
    let file = sb.config(&format!(
        "database_url = \"sqlite://{}\"\n[kms.local]\nmaster_key_file = \"{}\"\n",
        sb.path("k.db").display(),
        key_file.display()
    ));
    let r = sb.run(
        &["--config", arg(&file), "keys", "get", "--service", "openai"],
        None,
        &[],
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.stdout.trim_end(), "sk-test-FAKE-older-section-0000");

    // Both names with different values: exit 2 naming both.
    let file = sb.config(&format!(
        "[local]\nmaster_key_file = \"{}\"\n[kms.local]\nmaster_key_file = \"{}\"\n",
        key_file.display(),
        sb.path("other.key").display()
    ));
    let r = sb.run(&["--config", arg(&file), "keys", "list"], None, &[]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(
        r.stderr.contains("local.master_key_file")
            && r.stderr.contains("kms.local.master_key_file"),
        "{r:#?}"
    );
}
