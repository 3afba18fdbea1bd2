//! With nothing configured: the default files, announced once, the master key private.

use llm_accounting_testkit::Env;

use super::{BIN, KEY1};

#[test]
fn default_locations_are_announced_and_the_master_key_is_private() {
    let env = Env::with_data_dir_only(BIN);
    let data = env.dir().join("data");
    let r = env
        .run_stdin(&["keys", "store", "--service", "openai"], KEY1)
        .ok();
    let notices: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("using default database"))
        .collect();
    assert_eq!(notices.len(), 1, "{r:#?}");
    assert!(
        notices[0].contains(&data.join("keys.db").display().to_string())
            && notices[0].contains(&data.join("master.key").display().to_string()),
        "{r:#?}"
    );
    assert!(notices[0].contains("LLM_ACCOUNTING_DATABASE_URL"), "{r:#?}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key"))
            .expect("master key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "master key mode {mode:o}");
        let dir_mode = std::fs::metadata(&data)
            .expect("data dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o077, 0, "data dir mode {dir_mode:o}");
    }

    let r = env.run(&["keys", "get", "--service", "openai"]).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));
    let r = env.run(&["-q", "keys", "get", "--service", "openai"]).ok();
    assert!(r.stderr.is_empty(), "--quiet: {r:#?}");

    // Explicit locations: no notice.
    let explicit = Env::new(BIN);
    let r = explicit.run(&["keys", "list"]).ok();
    assert!(!r.stderr.contains("using default"), "{r:#?}");
}
