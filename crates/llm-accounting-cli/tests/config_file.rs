//! Configuration files end to end: a key that is no setting is exit 2 with a message naming it
//! and the file, never silently the default; the older `[local]` section still works.

use std::path::{Path, PathBuf};

use llm_accounting_testkit::cli::{Env, Run};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// A temporary home for one test: only the data directory is configured, and `HOME` and
/// `XDG_DATA_HOME` point inside it too, so that nothing outside is touched.
struct Sandbox {
    env: Env,
}

impl Sandbox {
    fn new() -> Self {
        let mut env = Env::with_data_dir_only(BIN);
        let home = env.dir().display().to_string();
        let xdg = env.dir().join("xdg").display().to_string();
        env.set("HOME", &home);
        env.set("XDG_DATA_HOME", &xdg);
        Sandbox { env }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.env.dir().join(name)
    }

    /// Writes a config file and returns its path.
    fn config(&self, text: &str) -> PathBuf {
        let path = self.path("llm-accounting.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Runs the binary with `args`, `stdin` and the extra `vars`.
    fn run(&self, args: &[&str], stdin: Option<&str>, vars: &[(&str, &Path)]) -> Run {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, arg(v))).collect();
        self.env.run_with(args, stdin.map(str::as_bytes), &vars)
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
        let r = sb
            .run(&["--config", arg(&file), "keys", "list"], None, &[])
            .code(2);
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
    let r = r.code(2);
    assert!(r.stderr.contains("`audit.fail_close`"), "{r:#?}");
    assert!(!sb.path("data").exists());
}

#[test]
fn the_older_local_section_still_names_the_master_key_file() {
    let sb = Sandbox::new();
    let key_file = sb.path("keys/older.key");
    // The files it names do not exist yet: the first run is asked to create them.
    let file = sb.config(&format!(
        "database_url = \"sqlite://{}\"\ncreate_if_missing = true\n[local]\nmaster_key_file = \"{}\"\n",
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
    sb.run(&store, Some("sk-test-FAKE-older-section-0000"), &[])
        .ok();
    assert!(key_file.is_file(), "master key made where [local] says");
    assert!(!sb.path("data/master.key").exists(), "not the default one");
    let r = sb.run(
        &["--config", arg(&file), "keys", "get", "--service", "openai"],
        None,
        &[],
    );
    let r = r.ok();
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
    let r = r.ok();
    assert_eq!(r.stdout.trim_end(), "sk-test-FAKE-older-section-0000");

    // Both names with different values: exit 2 naming both.
    let file = sb.config(&format!(
        "[local]\nmaster_key_file = \"{}\"\n[kms.local]\nmaster_key_file = \"{}\"\n",
        key_file.display(),
        sb.path("other.key").display()
    ));
    let r = sb.run(&["--config", arg(&file), "keys", "list"], None, &[]);
    let r = r.code(2);
    assert!(
        r.stderr.contains("local.master_key_file")
            && r.stderr.contains("kms.local.master_key_file"),
        "{r:#?}"
    );
}
