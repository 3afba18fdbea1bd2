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

/// Writes `text` to the default configuration file of `sb` (under its `XDG_CONFIG_HOME`).
fn default_config(sb: &Sandbox, text: &str) -> PathBuf {
    let path = sb.env.default_config_file();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A file that names the SQLite database `name` in the sandbox, created when missing.
fn naming_database(sb: &Sandbox, name: &str) -> String {
    format!(
        "database_url = \"sqlite://{}\"\ncreate_if_missing = true\n",
        sb.path(name).display()
    )
}

#[test]
fn the_file_at_the_default_location_is_read_and_weaker_than_named_files_and_variables() {
    let sb = Sandbox::new();
    let key = "sk-test-FAKE-default-config-000001";
    default_config(&sb, &naming_database(&sb, "from-default.db"));
    sb.run(&["keys", "store", "--service", "openai"], Some(key), &[])
        .ok();
    assert!(sb.path("from-default.db").is_file(), "the file was read");
    assert!(
        !sb.path("data/keys.db").exists(),
        "not the default database"
    );
    let r = sb
        .run(&["keys", "get", "--service", "openai"], None, &[])
        .ok();
    assert_eq!(r.stdout.trim_end(), key);

    // A named file, by --config or LLM_ACCOUNTING_CONFIG, is read instead (not as well).
    let named = sb.config(&naming_database(&sb, "from-named.db"));
    let get = ["keys", "get", "--service", "openai"];
    sb.run(&[&["--config", arg(&named)][..], &get].concat(), None, &[])
        .code(3);
    assert!(sb.path("from-named.db").is_file());
    std::fs::remove_file(sb.path("from-named.db")).expect("rm");
    sb.run(&get, None, &[("LLM_ACCOUNTING_CONFIG", named.as_path())])
        .code(3);
    assert!(sb.path("from-named.db").is_file());

    // A variable beats the file.
    let url = format!("sqlite://{}", sb.path("from-env.db").display());
    let r = sb
        .env
        .run_with(&get, None, &[("LLM_ACCOUNTING_DATABASE_URL", url.as_str())]);
    r.code(3);
    assert!(sb.path("from-env.db").is_file());
}

#[test]
fn a_bad_file_at_the_default_location_is_the_same_error_as_a_named_one() {
    let sb = Sandbox::new();
    let file = default_config(&sb, "[kms]\nprovder = \"aws\"\n");
    let r = sb.run(&["keys", "list"], None, &[]).code(2);
    assert!(r.stderr.contains("`kms.provder`"), "{r:#?}");
    assert!(r.stderr.contains(arg(&file)), "{r:#?}");
    default_config(&sb, "database_url = \n");
    let r = sb.run(&["keys", "list"], None, &[]).code(2);
    assert!(
        r.stderr.contains("cannot parse the configuration file") && r.stderr.contains(arg(&file)),
        "{r:#?}"
    );
    assert!(!sb.path("data").exists(), "nothing created");
}

#[test]
fn a_file_in_the_current_directory_is_not_read() {
    let sb = Sandbox::new();
    for name in ["config.toml", "llm-accounting.toml", ".llm-accounting.toml"] {
        std::fs::write(sb.path(name), "[kms]\nprovder = \"aws\"\n").expect("write");
    }
    let out = sb
        .env
        .command(&["keys", "list"])
        .current_dir(sb.env.dir())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:#?}");
}

#[test]
fn doctor_names_the_file_it_read() {
    let sb = Sandbox::new();
    let line = |r: &Run| {
        r.stdout
            .lines()
            .find(|l| l.contains("configuration"))
            .unwrap_or_else(|| panic!("no configuration line: {r:#?}"))
            .to_owned()
    };
    let file = sb.env.default_config_file();
    let r = sb.run(&["doctor"], None, &[]);
    let l = line(&r);
    assert!(
        l.contains("no file") && l.contains(&format!("none at {}", file.display())),
        "{r:#?}"
    );

    default_config(&sb, "default_user = \"alice\"\n");
    let r = sb.run(&["doctor"], None, &[]);
    let l = line(&r);
    assert!(l.starts_with("ok"), "{r:#?}");
    assert!(
        l.contains(&format!("file {} (the default location)", file.display())),
        "{r:#?}"
    );

    let named = sb.config("default_user = \"bob\"\n");
    let r = sb.run(&["--config", arg(&named), "doctor"], None, &[]);
    assert!(
        line(&r).contains(&format!("file {} (--config)", named.display())),
        "{r:#?}"
    );
    let r = sb.run(
        &["doctor"],
        None,
        &[("LLM_ACCOUNTING_CONFIG", named.as_path())],
    );
    assert!(
        line(&r).contains(&format!("file {} (LLM_ACCOUNTING_CONFIG)", named.display())),
        "{r:#?}"
    );
}
