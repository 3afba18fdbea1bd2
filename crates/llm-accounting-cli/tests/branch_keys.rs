//! The binary with `kms.hierarchy`: keys go under branch keys, `keys rewrap` moves them in and
//! out and rotates branches (audited), and an edited branch row exits 4 with no key printed.

use llm_accounting_testkit::cli::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const A: &str = "sk-test-FAKE-branch-000000000000000000001";
const B: &str = "sk-test-FAKE-branch-000000000000000000002";

fn env() -> Env {
    Env::new(BIN).secrets(&[A, B])
}

fn id(service: &str) -> Vec<&str> {
    vec!["--service", service, "--user", "alice"]
}

fn args<'a>(cmd: &[&'a str], who: &[&'a str]) -> Vec<&'a str> {
    [cmd, who].concat()
}

fn get(env: &Env, service: &str) -> String {
    env.run(&args(&["keys", "get"], &id(service))).ok().stdout
}

#[test]
fn rewrap_moves_keys_between_direct_and_branch_wrapping_and_rotates_branches() {
    let mut env = env();
    // Stored with the hierarchy off: wrapped by the local provider directly.
    env.run_stdin(&args(&["keys", "store"], &id("openai")), A)
        .ok();
    env.run_stdin(&args(&["keys", "store"], &id("anthropic")), B)
        .ok();
    assert!(env.version_refs().iter().all(|(p, _)| p == "local"));

    env.set("LLM_ACCOUNTING_KMS_HIERARCHY", "service");
    assert_eq!(
        get(&env, "openai"),
        format!("{A}\n"),
        "direct keys still read"
    );
    env.run(&["keys", "rewrap", "--check"]).code(1);
    let r = env.run(&["keys", "rewrap"]).ok();
    assert!(r.stderr.contains("rewrapped 2 version(s)"), "{r:#?}");
    let refs = env.version_refs();
    assert!(
        refs.iter()
            .all(|(p, r)| p == "local+branch" && r.starts_with("branch/") && r.ends_with("/v1")),
        "{refs:?}"
    );
    env.run(&["keys", "rewrap", "--check"]).ok();
    assert_eq!(get(&env, "anthropic"), format!("{B}\n"));

    // A rotation: a new version per branch, keys moved onto it, old versions kept.
    let r = env.run(&["keys", "rewrap", "--rotate-branches"]).ok();
    assert!(r.stderr.contains("2 branch(es) rotated"), "{r:#?}");
    assert!(env.version_refs().iter().all(|(_, r)| r.ends_with("/v2")));
    assert_eq!(get(&env, "openai"), format!("{A}\n"));
    let audit = env.run(&["keys", "audit", "--operation", "rewrap"]).ok();
    assert!(audit.stdout.contains("rotated 2"), "{audit:#?}");

    // Back to direct wrapping.
    env.set("LLM_ACCOUNTING_KMS_HIERARCHY", "off");
    assert_eq!(
        get(&env, "openai"),
        format!("{A}\n"),
        "branch keys still read"
    );
    env.run(&["keys", "rewrap"]).ok();
    assert!(env.version_refs().iter().all(|(p, _)| p == "local"));
    assert_eq!(get(&env, "anthropic"), format!("{B}\n"));
    env.run(&["keys", "audit", "--verify"]).ok();
}

#[test]
fn an_edited_branch_row_exits_4_with_no_key_printed() {
    let mut env = env();
    env.set("LLM_ACCOUNTING_KMS_HIERARCHY", "service");
    env.run_stdin(&args(&["keys", "store"], &id("openai")), A)
        .ok();
    env.run_stdin(&args(&["keys", "store"], &id("anthropic")), B)
        .ok();

    // openai's branch row takes anthropic's wrapped key and commitment.
    env.sql(
        "UPDATE branch_keys SET (wrapped, commitment) = \
         (SELECT wrapped, commitment FROM branch_keys WHERE scope_value = 'anthropic') \
         WHERE scope_value = 'openai'",
    );
    let r = env.run(&args(&["keys", "get"], &id("openai"))).code(4);
    assert!(r.stdout.is_empty(), "no key printed: {r:#?}");
    assert!(!r.stderr.contains(A) && !r.stderr.contains(B));
    assert!(r.stderr.contains("integrity check failed"), "{r:#?}");
    assert_eq!(get(&env, "anthropic"), format!("{B}\n"));
}

#[test]
fn a_new_master_key_version_rewraps_branch_keys_only() {
    let mut env = env();
    env.set("LLM_ACCOUNTING_KMS_HIERARCHY", "service");
    env.run_stdin(&args(&["keys", "store"], &id("openai")), A)
        .ok();
    env.run_stdin(&args(&["keys", "store"], &id("anthropic")), B)
        .ok();
    let before = env.version_refs();
    env.run(&["master-key", "add-version"]).ok();
    env.run(&["keys", "rewrap", "--check"]).code(1);
    let r = env.run(&["keys", "rewrap"]).ok();
    assert!(
        r.stderr.contains("branch keys: 2 version(s) moved") && r.stderr.contains("rewrapped 0"),
        "{r:#?}"
    );
    assert_eq!(env.version_refs(), before, "no key's row was touched");
    env.run(&["keys", "rewrap", "--check"]).ok();
    // The old master-key version can be retired: everything reads under the new one.
    env.set("LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION", "2");
    assert_eq!(get(&env, "openai"), format!("{A}\n"));
    assert_eq!(get(&env, "anthropic"), format!("{B}\n"));
}
