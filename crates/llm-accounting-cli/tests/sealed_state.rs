//! The binary on a store whose record state is authenticated: SQL edits that would serve a
//! rotated-out value exit 4 with no key printed; `keys list` names the broken key and lists the
//! others (exit 4 at the end); a store written before sealing reads with a warning until
//! `keys seal`.

use llm_accounting_testkit::cli::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const V1: &str = "sk-test-FAKE-sealed-00000000000000000001";
const V2: &str = "sk-test-FAKE-sealed-00000000000000000002";
const BOB: &str = "sk-test-FAKE-sealed-000000000000000000b0b";

fn env() -> Env {
    Env::new(BIN).secrets(&[V1, V2, BOB])
}

fn id(user: &str) -> Vec<&str> {
    vec!["--service", "openai", "--user", user]
}

fn args<'a>(cmd: &[&'a str], who: &[&'a str]) -> Vec<&'a str> {
    [cmd, who].concat()
}

#[test]
fn a_rolled_back_record_exits_4_and_list_names_it() {
    let env = env();
    env.run_stdin(&args(&["keys", "store"], &id("alice")), V1)
        .ok();
    env.run_stdin(&args(&["keys", "rotate"], &id("alice")), V2)
        .ok();
    env.run_stdin(&args(&["keys", "store"], &id("bob")), BOB)
        .ok();

    env.sql("UPDATE api_keys SET current_version = 1 WHERE user_id = 'alice'");
    let r = env.run(&args(&["keys", "get"], &id("alice"))).code(4);
    assert!(r.stdout.is_empty(), "no key printed: {r:#?}");
    assert!(!r.stdout.contains(V1) && !r.stderr.contains(V1));
    assert!(r.stderr.contains("integrity check failed"), "{r:#?}");

    // The listing shows bob, names alice on stderr, and exits 4.
    let r = env.run(&["keys", "list", "--format", "json"]).code(4);
    let rows: serde_json::Value = r.json();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{r:#?}");
    assert_eq!(rows[0]["user"], "bob");
    assert!(
        r.stderr
            .contains("broken: service \"openai\", user \"alice\""),
        "{r:#?}"
    );
    let r = env.run(&["keys", "list"]).code(4);
    assert!(
        r.stdout.contains("bob") && !r.stdout.contains("alice"),
        "{r:#?}"
    );

    // Sealing again seals nothing: it verifies, and names the broken key.
    let r = env.run(&["keys", "seal"]).code(4);
    assert!(r.stderr.contains("user \"alice\""), "{r:#?}");
    assert!(r.stderr.contains("1 key(s) verified"), "{r:#?}");

    // The remedy: delete and store again.
    env.run(&args(&["keys", "delete"], &id("alice"))).ok();
    env.run_stdin(&args(&["keys", "store"], &id("alice")), V2)
        .ok();
    assert_eq!(
        env.run(&args(&["keys", "get"], &id("alice"))).ok().stdout,
        format!("{V2}\n")
    );
    env.run(&["keys", "list"]).ok();
}

#[test]
fn an_unsealed_store_warns_until_keys_seal() {
    let env = env();
    env.run_stdin(&args(&["keys", "store"], &id("alice")), V1)
        .ok();
    // What an older release left behind: no state key, no seals, and a trail of plain rows
    // (here none: the rows this release wrote are keyed, and would prove a seal).
    env.sql("DELETE FROM store_keys");
    env.sql(
        "UPDATE api_keys SET state_mac = NULL, current_digest = NULL, previous_digest = NULL, \
         revision = 0",
    );
    env.sql("DELETE FROM api_key_audit");
    let r = env.run(&args(&["keys", "get"], &id("alice"))).ok();
    assert_eq!(r.stdout, format!("{V1}\n"));
    assert!(r.stderr.contains("not authenticated"), "{r:#?}");
    assert!(r.stderr.contains("keys seal"), "{r:#?}");
    // Pinned, it is refused.
    let r = env
        .run_with(
            &args(&["keys", "get"], &id("alice")),
            None,
            &[("LLM_ACCOUNTING_KEYS_REQUIRE_SEALED", "true")],
        )
        .code(4);
    assert!(r.stdout.is_empty(), "{r:#?}");

    let r = env.run(&["keys", "seal"]).ok();
    assert!(r.stderr.contains("1 key(s) sealed"), "{r:#?}");
    let r = env.run(&args(&["keys", "get"], &id("alice"))).ok();
    assert_eq!(r.stdout, format!("{V1}\n"));
    assert!(!r.stderr.contains("not authenticated"), "{r:#?}");
    // Every operation, the seal included, is in the audit trail.
    let r = env.run(&["keys", "audit", "--format", "json"]).ok();
    assert!(r.stdout.contains("\"seal\""), "{r:#?}");
}

#[test]
fn the_audit_head_is_one_line_and_catches_a_cut_trail() {
    let env = env();
    env.run_stdin(&args(&["keys", "store"], &id("alice")), V1)
        .ok();
    env.run(&args(&["keys", "get"], &id("alice"))).ok();
    let r = env.run(&["keys", "audit", "--head"]).ok();
    let head = r.stdout.trim_end_matches('\n');
    assert_eq!(r.stdout.lines().count(), 1, "exactly one line: {r:#?}");
    let (seq, mac) = head.split_once(':').expect("SEQ:MAC");
    let seq: u64 = seq.parse().expect("a record number");
    assert!(seq >= 2, "{r:#?}");
    assert!(
        mac.len() == 64
            && mac
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{r:#?}"
    );
    env.run(&args(&["keys", "get"], &id("alice"))).ok();
    let r = env
        .run(&["keys", "audit", "--verify", "--expect-head", head])
        .ok();
    assert!(r.stderr.contains("still holds head"), "{r:#?}");

    // Cut back to before the kept head: the rest still verifies, the head does not.
    env.sql(&format!("DELETE FROM api_key_audit WHERE seq >= {seq}"));
    env.run(&["keys", "audit", "--verify"]).ok();
    let r = env
        .run(&["keys", "audit", "--verify", "--expect-head", head])
        .code(4);
    assert!(r.stderr.contains("cut short"), "{r:#?}");
    // A malformed head is a usage error, before anything is opened.
    let r = env
        .run(&["keys", "audit", "--verify", "--expect-head", "12:XYZ"])
        .code(2);
    assert!(r.stderr.contains("SEQ:MAC"), "{r:#?}");
}

/// Issue 23: one byte of `api_keys.scope_key` changed made `keys get` say "no API key stored"
/// (exit 3) while `keys list` named the record broken (exit 4). Both say integrity, and so
/// does a batch read (`exec`), on every database.
#[test]
fn a_corrupted_lookup_key_is_integrity_for_get_list_and_exec() {
    use llm_accounting_testkit::{Backend, TestDatabase};
    let dbs = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(TestDatabase::create_all());
    for db in dbs {
        let mut env = env();
        env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
        env.run_stdin(&args(&["keys", "store"], &id("carol")), V1)
            .ok();
        env.run_stdin(&args(&["keys", "store"], &id("dave")), BOB)
            .ok();
        let sql = match db.backend() {
            Backend::MySql => {
                "UPDATE api_keys SET scope_key = CONCAT('z', SUBSTR(scope_key, 2)) \
                 WHERE user_id = 'carol'"
            }
            _ => {
                "UPDATE api_keys SET scope_key = 'z' || substr(scope_key, 2) WHERE user_id = 'carol'"
            }
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(db.execute(sql, vec![]));
        let r = env.run(&args(&["keys", "get"], &id("carol"))).code(4);
        assert!(r.stderr.contains("integrity"), "{}: {r:#?}", db.backend());
        env.run(&["keys", "list"]).code(4);
        env.run(&["exec", "--env", "K=openai:carol", "--", "true"])
            .code(4);
        // Dave's key is untouched, and a key never stored is still "not found".
        env.run(&args(&["keys", "get"], &id("dave"))).ok();
        env.run(&args(&["keys", "get"], &id("erin"))).code(3);
    }
}
