//! The files the binary creates and refuses, end to end: a named database or master key file
//! that is missing is exit 2 unless `--create`; a lost master key file is never made anew;
//! existing files and data directories that others can write, or another user owns, are
//! refused; a symbolic link at the database path is not followed.

use std::path::Path;

use llm_accounting_testkit::cli::CREATE_IF_MISSING;
use llm_accounting_testkit::{Env, Run};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// An obviously fake key.
const KEY: &str = "sk-test-FAKE-0000000000000000000000000f11";

const STORE: [&str; 4] = ["keys", "store", "--service", "openai"];
const GET: [&str; 4] = ["keys", "get", "--service", "openai"];

/// `Env::new` without the harness's standing request to create files.
fn not_creating() -> Env {
    let mut env = Env::new(BIN);
    env.unset(CREATE_IF_MISSING);
    env
}

/// Asserts a one-line configuration error (exit 2) that names `path`.
#[track_caller]
fn refused_naming(run: Run, path: &Path) -> Run {
    let run = run.code(2);
    assert!(
        run.stderr.starts_with("error: configuration error")
            && run.stderr.contains(&path.display().to_string()),
        "{run:#?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run:#?}");
    run
}

#[test]
fn a_named_database_or_master_key_file_must_exist_unless_create() {
    let env = not_creating();
    let mk = env.dir().join("master.key");
    let r = refused_naming(env.run_stdin(&STORE, KEY), &mk);
    assert!(r.stderr.contains("pass --create to create it"), "{r:#?}");
    assert!(
        !mk.exists() && !env.db_path().exists(),
        "nothing was created"
    );

    refused_naming(env.run(&["master-key", "add-version"]), &mk);
    assert!(!mk.exists(), "nothing was created");

    // The database next; `keys list` reads only, and is refused the same way.
    llm_accounting::LocalKmsProvider::open_or_create(&mk).expect("master key");
    for args in [&STORE[..], &["keys", "list"]] {
        let r = refused_naming(env.run_stdin(args, KEY), &env.db_path());
        assert!(r.stderr.contains("does not exist"), "{r:#?}");
        assert!(r.stderr.contains("pass --create to create it"), "{r:#?}");
        assert!(!env.db_path().exists(), "nothing was created");
    }

    // Asked, as a flag or a variable: created, and later runs need not ask.
    std::fs::remove_file(&mk).expect("remove");
    let mut create = vec!["--create"];
    create.extend(STORE);
    env.run_stdin(&create, KEY).ok();
    assert!(mk.exists() && env.db_path().exists());
    let r = env.run(&GET).ok();
    assert_eq!(r.stdout, format!("{KEY}\n"));
    let other = not_creating();
    other
        .run_with(&STORE, Some(KEY.as_bytes()), &[(CREATE_IF_MISSING, "true")])
        .ok();
}

#[test]
fn the_default_location_is_still_created_on_first_use() {
    // Nothing configured but where the data directory is: the README's two commands.
    let env = Env::with_data_dir_only(BIN);
    env.run_stdin(&STORE, KEY).ok();
    let r = env.run(&GET).ok();
    assert_eq!(r.stdout, format!("{KEY}\n"));
}

#[test]
fn a_lost_master_key_file_is_never_made_anew() {
    for env in [Env::with_data_dir_only(BIN), Env::new(BIN)] {
        env.run_stdin(&STORE, KEY).ok();
        let mk = if env.db_path().exists() {
            env.dir().join("master.key")
        } else {
            env.dir().join("data").join("master.key")
        };
        let backup = env.dir().join("backup.key");
        std::fs::rename(&mk, &backup).expect("lose the master key");
        for args in [
            &GET[..],
            &["keys", "list"],
            &["keys", "rewrap"],
            &["--create", "keys", "get", "--service", "openai"],
            &["--create", "keys", "store", "--service", "other"],
        ] {
            let r = refused_naming(env.run_stdin(args, KEY), &mk);
            assert!(r.stderr.contains("Restore the file"), "{r:#?}");
            assert!(!mk.exists(), "{args:?}: no new master key file");
        }
        std::fs::rename(&backup, &mk).expect("restore");
        let r = env.run(&GET).ok();
        assert_eq!(r.stdout, format!("{KEY}\n"));
    }
}

/// Issue 23: store, delete every key, remove `master.key`: the next command made a new master
/// key ("note: created"), after which every store exited 4 and `audit --verify` failed for
/// good. The store's state key (and its audit trail) still need the lost one.
#[test]
fn a_lost_master_key_file_is_not_made_anew_after_every_key_was_deleted() {
    let env = Env::new(BIN);
    env.run_stdin(&STORE, KEY).ok();
    env.run(&["-q", "keys", "delete", "--service", "openai", "--yes"])
        .ok();
    env.run(&["keys", "list"]).ok();
    let mk = env.dir().join("master.key");
    let backup = env.dir().join("backup.key");
    std::fs::rename(&mk, &backup).expect("lose the master key");
    for args in [
        &["keys", "list"][..],
        &["--create", "keys", "store", "--service", "other"],
    ] {
        let r = refused_naming(env.run_stdin(args, KEY), &mk);
        assert!(r.stderr.contains("Restore the file"), "{r:#?}");
        assert!(!mk.exists(), "{args:?}: no new master key file");
    }
    std::fs::rename(&backup, &mk).expect("restore");
    env.run_stdin(&["-q", "keys", "store", "--service", "other"], KEY)
        .ok();
    env.run(&["keys", "audit", "--verify"]).ok();
}

#[cfg(unix)]
#[test]
fn existing_files_that_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let env = Env::new(BIN);
    env.run_stdin(&STORE, KEY).ok();
    let db = env.db_path();
    let mk = env.dir().join("master.key");
    for (path, bad, good) in [
        (&db, 0o666, 0o600),
        (&db, 0o620, 0o600),
        (&mk, 0o602, 0o600),
    ] {
        chmod(path, bad);
        let r = refused_naming(env.run(&GET), path);
        assert!(
            r.stderr.contains(&format!("chmod 600 {}", path.display())),
            "{r:#?}"
        );
        assert!(r.stdout.is_empty(), "no key printed: {r:#?}");
        chmod(path, good);
    }

    let defaults = Env::with_data_dir_only(BIN);
    defaults.run_stdin(&STORE, KEY).ok();
    let data = defaults.dir().join("data");
    chmod(&data, 0o777);
    let r = refused_naming(defaults.run(&GET), &data);
    assert!(
        r.stderr.contains(&format!("chmod 700 {}", data.display())),
        "{r:#?}"
    );
    chmod(&data, 0o700);
    defaults.run(&GET).ok();

    // Another owner: only root can give a file away.
    if std::os::unix::fs::chown(&db, Some(65534), None).is_ok() {
        let r = refused_naming(env.run(&GET), &db);
        assert!(r.stderr.contains("owned by another user"), "{r:#?}");
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_at_the_database_path_is_not_followed_on_creation() {
    let env = Env::new(BIN);
    let target = env.dir().join("planted.db");
    std::os::unix::fs::symlink(&target, env.db_path()).expect("symlink");
    let r = refused_naming(env.run_stdin(&STORE, KEY), &env.db_path());
    assert!(r.stderr.contains("symbolic link"), "{r:#?}");
    assert!(
        !target.exists(),
        "nothing was created where the link points"
    );
}
