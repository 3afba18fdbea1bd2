//! `keys import` end to end: names become services, other lines are skipped and listed,
//! dotenv quoting, existing keys refused unless --rotate, and all or nothing.

use llm_accounting_testkit::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const OPENAI: &str = "sk-test-FAKE-import-00000000000000000001";
const AZURE: &str = "sk-test-FAKE-import-00000000000000000002";
const HF: &str = "hf_test_FAKE_import_0000000000000000003";
const ROTATED: &str = "sk-test-FAKE-import-00000000000000000004";

fn env() -> Env {
    Env::new(BIN).secrets(&[OPENAI, AZURE, HF, ROTATED])
}

/// Writes `text` as `.env` in the test's directory and returns its path.
fn dotenv(env: &Env, text: &str) -> String {
    let path = env.dir().join(".env");
    std::fs::write(&path, text).expect("write .env");
    path.display().to_string()
}

fn get(env: &Env, service: &str, user: Option<&str>) -> llm_accounting_testkit::Run {
    let mut args = vec!["keys", "get", "--service", service];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    env.run(&args)
}

#[test]
fn a_dotenv_file_becomes_keys() {
    let env = env();
    let file = dotenv(
        &env,
        &format!(
            "# my keys\nOPENAI_API_KEY={OPENAI}\nexport AZURE_OPENAI_API_KEY=\"{AZURE}\"  # prod\n\
             HF_TOKEN='{HF}'\nDEBUG=true\nPORT=8080\nEMPTY_KEY=\n"
        ),
    );
    let r = env
        .run(&[
            "keys",
            "import",
            "--env-file",
            &file,
            "--user",
            "alice",
            "--format",
            "json",
        ])
        .ok();
    for secret in [OPENAI, AZURE, HF] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "{r:#?}"
        );
    }
    // The skipped lines are listed, with why.
    for skipped in [
        "DEBUG (line 5)",
        "PORT (line 6)",
        "EMPTY_KEY (line 7): empty value",
    ] {
        assert!(r.stderr.contains(&format!("skipped {skipped}")), "{r:#?}");
    }
    assert!(
        r.stderr
            .contains("imported 3 key(s) (3 new, 0 rotated); skipped 3 line(s)"),
        "{r:#?}"
    );
    let v: serde_json::Value = r.json();
    let services: Vec<&str> = v["stored"]
        .as_array()
        .expect("stored")
        .iter()
        .map(|s| s["service"].as_str().expect("service"))
        .collect();
    assert_eq!(services, ["openai", "azure-openai", "hf"]);
    assert_eq!(v["stored"][0]["variable"], "OPENAI_API_KEY");
    assert_eq!(v["stored"][0]["user"], "alice");
    assert_eq!(v["stored"][0]["version"], 1);
    assert_eq!(v["stored"][0]["rotated"], false);
    assert_eq!(v["skipped"].as_array().expect("skipped").len(), 3);

    assert_eq!(
        get(&env, "openai", Some("alice")).ok().stdout,
        format!("{OPENAI}\n")
    );
    assert_eq!(
        get(&env, "azure-openai", Some("alice")).ok().stdout,
        format!("{AZURE}\n")
    );
    assert_eq!(
        get(&env, "hf", Some("alice")).ok().stdout,
        format!("{HF}\n")
    );
}

#[test]
fn existing_keys_are_refused_unless_rotate_and_nothing_is_half_imported() {
    let env = env();
    env.run_stdin(&["keys", "store", "--service", "openai"], OPENAI)
        .ok();
    let file = dotenv(
        &env,
        &format!("AZURE_OPENAI_API_KEY={AZURE}\nOPENAI_API_KEY={ROTATED}\n"),
    );
    let r = env.run(&["keys", "import", "--env-file", &file]).code(2);
    assert!(r.stderr.contains("--rotate"), "{r:#?}");
    assert!(r.stderr.contains("openai"), "{r:#?}");
    // Nothing of the batch was stored: not even the new azure-openai key before it.
    get(&env, "azure-openai", None).code(3);
    assert_eq!(get(&env, "openai", None).ok().stdout, format!("{OPENAI}\n"));

    let r = env
        .run(&["keys", "import", "--env-file", &file, "--rotate"])
        .ok();
    assert!(r.stderr.contains("(1 new, 1 rotated)"), "{r:#?}");
    assert_eq!(
        get(&env, "openai", None).ok().stdout,
        format!("{ROTATED}\n")
    );
    let r = env
        .run(&["keys", "get", "--service", "openai", "--previous"])
        .ok();
    assert_eq!(r.stdout, format!("{OPENAI}\n"));
}

#[test]
fn map_and_mistakes() {
    let env = env();
    // --map renames, and imports a name without the usual ending.
    let file = dotenv(&env, &format!("OPENAI_API_KEY={OPENAI}\nMY_SECRET={HF}\n"));
    env.run(&[
        "keys",
        "import",
        "--env-file",
        &file,
        "--map",
        "OPENAI_API_KEY=openai-prod",
        "--map",
        "MY_SECRET=huggingface",
    ])
    .ok();
    get(&env, "openai-prod", None).ok();
    get(&env, "huggingface", None).ok();
    get(&env, "openai", None).code(3);

    // Refused before anything is written, never quoting a value.
    for (text, says) in [
        (
            format!("OPENAI_API_KEY={OPENAI}\nOPENAI_API_KEY={AZURE}\n"),
            "set twice",
        ),
        (
            format!("OPENAI_API_KEY={OPENAI}\nOPENAI_KEY={AZURE}\n"),
            "both the key for",
        ),
        (
            format!("OPENAI_API_KEY=\"{OPENAI} \"\n"),
            "--keep-whitespace",
        ),
        (format!("OPENAI_API_KEY=\"{OPENAI}\n"), "not closed"),
        ("DEBUG=1\n".to_owned(), "no key to import"),
    ] {
        let fresh = Env::new(BIN).secrets(&[OPENAI, AZURE]);
        let file = dotenv(&fresh, &text);
        let r = fresh.run(&["keys", "import", "--env-file", &file]).code(2);
        assert!(r.stderr.contains(says), "{says}: {r:#?}");
        let listed = fresh.run(&["keys", "list", "--format", "json"]).ok();
        assert_eq!(listed.stdout.trim(), "[]", "{says}: {listed:#?}");
    }
    let r = env
        .run(&["keys", "import", "--env-file", "/no/such/.env"])
        .code(2);
    assert!(r.stderr.contains("/no/such/.env"), "{r:#?}");
}

/// Issue 23: `keys import --env-file /dev/zero` (or a symbolic link to it) grew to several GB
/// and never finished; `exec --env-file` too. Only regular files of at most 1 MiB are read.
#[test]
fn devices_pipes_directories_and_huge_files_are_refused_at_once() {
    let env = env();
    let zero_link = env.dir().join("zero.env");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).expect("symlink");
    let huge = env.dir().join("huge.env");
    std::fs::write(
        &huge,
        format!("OPENAI_API_KEY={OPENAI}\n{}", "#\n".repeat(600_000)),
    )
    .expect("write");
    let zero = zero_link.display().to_string();
    let huge = huge.display().to_string();
    let dir = env.dir().display().to_string();
    for (file, says) in [
        ("/dev/zero", "not a regular file"),
        (zero.as_str(), "not a regular file"),
        (dir.as_str(), "not a regular file"),
        (huge.as_str(), "larger than 1 MiB"),
    ] {
        for args in [
            vec!["keys", "import", "--env-file", file],
            vec!["exec", "--env-file", file, "--", "true"],
        ] {
            // (Before, the first two never returned.)
            let run = env.run(&args).code(2);
            assert!(run.stderr.contains(says), "{args:?}: {run:#?}");
        }
    }
    // Nothing was stored; a file of the same lines under the limit still imports.
    get(&env, "openai", None).code(3);
    let small = dotenv(
        &env,
        &format!("OPENAI_API_KEY={OPENAI}\n{}", "#\n".repeat(1_000)),
    );
    env.run(&["-q", "keys", "import", "--env-file", &small])
        .ok();
    assert_eq!(get(&env, "openai", None).ok().stdout.trim(), OPENAI);
}
