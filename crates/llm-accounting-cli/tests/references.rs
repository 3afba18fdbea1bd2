//! Issue 24 §1: `llm-accounting://SERVICE[?user=U][&project=P]` references, in `keys get`,
//! `exec --env` and templates for `inject`.

use llm_accounting_testkit::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const OPENAI: &str = "sk-test-FAKE-ref-0000000000000000000000001";
const ALICE: &str = "sk-test-FAKE-ref-0000000000000000000000002";
const TEAM: &str = "sk-test-FAKE-ref-0000000000000000000000003";

fn env_with_keys() -> Env {
    let env = Env::new(BIN).secrets(&[OPENAI, ALICE, TEAM]);
    env.run_stdin(&["keys", "store", "--service", "openai"], OPENAI)
        .ok();
    env.run_stdin(
        &["keys", "store", "--service", "openai", "--user", "alice"],
        ALICE,
    )
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
            "team a/b",
        ],
        TEAM,
    )
    .ok();
    env
}

#[test]
fn keys_get_takes_a_reference() {
    let env = env_with_keys();
    for (reference, want) in [
        ("llm-accounting://openai", OPENAI),
        ("llm-accounting://openai?user=alice", ALICE),
        (
            "llm-accounting://anthropic?project=team%20a%2Fb&user=alice",
            TEAM,
        ),
    ] {
        let r = env.run(&["keys", "get", reference]).ok();
        assert_eq!(r.stdout, format!("{want}\n"), "{reference}");
    }
    // Not found, and a reference with the flags, and a malformed one.
    env.run(&["keys", "get", "llm-accounting://openai?user=bob"])
        .code(3);
    env.run(&["keys", "get", "llm-accounting://openai", "--service", "x"])
        .code(2);
    let r = env
        .run(&["keys", "get", "llm-accounting://openai?usr=alice"])
        .code(2);
    assert!(r.stderr.contains("other than user and project"), "{r:#?}");
    // Neither a reference nor --service.
    env.run(&["keys", "get"]).code(2);
    // `exec --env` takes one too.
    env.run(&[
        "exec",
        "--env",
        "K=llm-accounting://openai?user=alice",
        "--",
        "sh",
        "-c",
        &format!("test \"$K\" = '{ALICE}'"),
    ])
    .ok();
}

#[test]
fn inject_replaces_references_and_writes_a_private_file() {
    let env = env_with_keys();
    let template = env.dir().join("config.tpl");
    std::fs::write(
        &template,
        "openai: {{ llm-accounting://openai }}\nalice: {{llm-accounting://openai?user=alice}}\n\
         again: {{ llm-accounting://openai }}\nother: {{ not.ours }}\n",
    )
    .expect("write");
    let out = env.dir().join("config.yaml");
    let tpl = template.to_str().expect("utf-8");
    let outp = out.to_str().expect("utf-8");
    let r = env.run(&["inject", "-i", tpl, "-o", outp]).ok();
    assert!(r.stdout.is_empty(), "{r:#?}");
    let written = std::fs::read_to_string(&out).expect("written");
    assert_eq!(
        written,
        format!("openai: {OPENAI}\nalice: {ALICE}\nagain: {OPENAI}\nother: {{{{ not.ours }}}}\n")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    // An existing file is not overwritten without --force.
    std::fs::write(&out, "kept\n").expect("write");
    let r = env.run(&["inject", "-i", tpl, "-o", outp]).code(2);
    assert!(r.stderr.contains("--force"), "{r:#?}");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "kept\n");
    env.run(&["inject", "-i", tpl, "-o", outp, "--force"]).ok();
    assert_eq!(std::fs::read_to_string(&out).expect("read"), written);
    // Without -o: stdout.
    let r = env.run(&["inject", "-i", tpl]).ok();
    assert_eq!(r.stdout, written);

    // One missing key: nothing is written, exit 3; a malformed reference: exit 2 with its line.
    let bad = env.dir().join("bad.tpl");
    std::fs::write(
        &bad,
        "a: {{ llm-accounting://openai }}\nb: {{ llm-accounting://openai?user=nobody }}\n",
    )
    .expect("write");
    let fresh = env.dir().join("fresh.yaml");
    env.run(&[
        "inject",
        "-i",
        bad.to_str().expect("utf-8"),
        "-o",
        fresh.to_str().expect("utf-8"),
    ])
    .code(3);
    assert!(!fresh.exists(), "nothing written");
    std::fs::write(&bad, "a\n\nc: {{ llm-accounting://openai?x=1 }}\n").expect("write");
    let r = env
        .run(&["inject", "-i", bad.to_str().expect("utf-8")])
        .code(2);
    assert!(r.stderr.contains("bad.tpl line 3"), "{r:#?}");
    assert!(r.stdout.is_empty());
    // The template is read like an env file: a device is refused.
    env.run(&["inject", "-i", "/dev/zero"]).code(2);
    // Each hand-out is audited, as a get.
    let audit = env
        .run(&["keys", "audit", "--operation", "get", "--format", "json"])
        .ok();
    assert!(audit.stdout.contains("alice"), "{}", audit.stdout);
}

/// Issue 24 §4: with only anthropic/alice/search stored, `keys get --service anthropic` said
/// only "no API key stored". It now names what is stored for that service.
#[test]
fn a_miss_names_the_keys_stored_for_the_service() {
    let env = env_with_keys();
    let r = env.run(&["keys", "get", "--service", "anthropic"]).code(3);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains(
            "hint: stored for service \"anthropic\": user alice, project team a/b (use \
             --user/--project)"
        ),
        "{r:#?}"
    );
    // A service with nothing stored gets no hint.
    let r = env.run(&["keys", "get", "--service", "mistral"]).code(3);
    assert!(!r.stderr.contains("hint:"), "{r:#?}");
}
