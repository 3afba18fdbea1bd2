//! Issue 23, §1: rollback, replay and downgrade by a database writer who puts back
//! *consistent older rows* (seals and MACs included), on SQLite, PostgreSQL and MariaDB, each
//! followed by the refusal: exit 4, no key printed.
//!
//! Every attack here succeeded before this change (exit 0, the old value served).

use llm_accounting_testkit::cli::{Env, Run};
use llm_accounting_testkit::{Backend, TestDatabase};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

const A1: &str = "sk-test-FAKE-rollback-alice-000000000001";
const A2: &str = "sk-test-FAKE-rollback-alice-000000000002";
const B1: &str = "sk-test-FAKE-rollback-bob-00000000000001";
const C1: &str = "sk-test-FAKE-rollback-carol-000000000001";
const D1: &str = "sk-test-FAKE-rollback-dave-0000000000001";
const E1: &str = "sk-test-FAKE-rollback-erin-0000000000001";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// An environment on `db`, and the attacker's own connection to it.
struct Target {
    env: Env,
    db: TestDatabase,
    rt: tokio::runtime::Runtime,
}

impl Target {
    fn all() -> Vec<Target> {
        runtime()
            .block_on(TestDatabase::create_all())
            .into_iter()
            .map(|db| {
                let mut env = Env::new(BIN).secrets(&[A1, A2, B1, C1, D1, E1]);
                env.set("LLM_ACCOUNTING_DATABASE_URL", db.url());
                Target {
                    env,
                    db,
                    rt: runtime(),
                }
            })
            .collect()
    }

    fn backend(&self) -> Backend {
        self.db.backend()
    }

    fn sql(&self, sql: &str) {
        self.rt.block_on(self.db.execute(sql, Vec::new()));
    }

    fn store(&self, user: &str, value: &str) {
        self.env
            .run_stdin(
                &["keys", "store", "--service", "openai", "--user", user],
                value,
            )
            .ok();
    }

    fn rotate(&self, user: &str, value: &str) -> Run {
        self.env.run_stdin(
            &["keys", "rotate", "--service", "openai", "--user", user],
            value,
        )
    }

    fn get(&self, user: &str) -> Run {
        self.env
            .run(&["keys", "get", "--service", "openai", "--user", user])
    }

    /// Copies `tables` aside (`snap_<table>`), as a backup would.
    fn snapshot(&self, tables: &[&str]) {
        for t in tables {
            self.sql(&format!("DROP TABLE IF EXISTS snap_{t}"));
            self.sql(&format!("CREATE TABLE snap_{t} AS SELECT * FROM {t}"));
        }
    }

    /// Puts back the records of `users` from the snapshot: their `api_keys` rows and all
    /// their `api_key_versions` rows, every column as it was (seals and MACs included).
    fn replay_records(&self, users: &[&str]) {
        let users = users
            .iter()
            .map(|u| format!("'{u}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let ids = format!("SELECT id FROM snap_api_keys WHERE user_id IN ({users})");
        self.sql(&format!(
            "DELETE FROM api_key_versions WHERE key_id IN ({ids})"
        ));
        self.sql(&format!("DELETE FROM api_keys WHERE id IN ({ids})"));
        self.sql(&format!(
            "INSERT INTO api_keys SELECT * FROM snap_api_keys WHERE user_id IN ({users})"
        ));
        self.sql(&format!(
            "INSERT INTO api_key_versions SELECT * FROM snap_api_key_versions WHERE key_id IN \
             ({ids})"
        ));
    }

    /// Puts back every table of `tables` whole from the snapshot (a restore of the database).
    fn restore(&self, tables: &[&str]) {
        // Children first, parents last.
        for t in tables.iter().rev() {
            self.sql(&format!("DELETE FROM {t}"));
        }
        for t in tables {
            self.sql(&format!("INSERT INTO {t} SELECT * FROM snap_{t}"));
        }
    }
}

/// Exit 4, the integrity error, and no key on either stream.
#[track_caller]
fn refused(r: &Run, backend: Backend, what: &str) {
    assert_eq!(r.code, 4, "{backend}: {what}: {r:#?}");
    assert!(
        r.stdout.is_empty(),
        "{backend}: {what}: no key printed: {r:#?}"
    );
    for v in [A1, A2, B1, C1, D1, E1] {
        assert!(!r.stderr.contains(v), "{backend}: {what}: {r:#?}");
    }
    assert!(r.stderr.contains("integrity"), "{backend}: {what}: {r:#?}");
}

/// The reproduction: take a copy of the database; rotate alice, disable bob, delete
/// carol; copy their `api_keys` and `api_key_versions` rows back from the copy. Before, all
/// three old keys were served with exit 0 and `keys audit --verify --expect-head` passed. Now
/// each record is checked against the latest revision the audit trail records for it.
#[test]
fn whole_records_put_back_from_a_copy_are_refused() {
    for t in Target::all() {
        let backend = t.backend();
        t.store("alice", A1);
        t.store("bob", B1);
        t.store("carol", C1);
        t.store("dave", D1);
        t.snapshot(&["api_keys", "api_key_versions"]);

        t.rotate("alice", A2).ok();
        t.env
            .run(&["keys", "disable", "--service", "openai", "--user", "bob"])
            .ok();
        t.env
            .run(&[
                "keys",
                "delete",
                "--service",
                "openai",
                "--user",
                "carol",
                "--yes",
            ])
            .ok();
        let head = t.env.run(&["keys", "audit", "--head"]).ok().stdout;
        let head = head.trim_end();

        t.replay_records(&["alice", "bob", "carol"]);

        refused(&t.get("alice"), backend, "alice's rotated-out key");
        refused(&t.get("bob"), backend, "bob's disabled key");
        refused(&t.get("carol"), backend, "carol's deleted key");
        // A batch read (exec's get_many) refuses them too; dave's key still works.
        let r = t
            .env
            .run(&["exec", "--env", "K=openai:alice", "--", "true"]);
        refused(&r, backend, "exec of alice's key");
        assert_eq!(t.get("dave").ok().stdout, format!("{D1}\n"), "{backend}");
        // The listing names all three broken and lists dave.
        let r = t.env.run(&["keys", "list", "--format", "json"]).code(4);
        let rows = r.json();
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{backend}: {r:#?}");
        assert_eq!(rows[0]["user"], "dave", "{backend}");
        for user in ["alice", "bob", "carol"] {
            assert!(
                r.stderr.contains(&format!("user \"{user}\"")),
                "{backend}: {user}: {r:#?}"
            );
        }
        // A write does not launder a rolled-back record.
        let r = t.rotate("alice", E1);
        refused(&r, backend, "a rotation over alice's rolled-back record");
        let r = t
            .env
            .run(&["keys", "enable", "--service", "openai", "--user", "bob"]);
        refused(&r, backend, "enabling bob's rolled-back record");
        // The trail itself was not touched, and still holds the head taken after the changes.
        t.env
            .run(&["keys", "audit", "--verify", "--expect-head", head])
            .ok();
        // The remedy: delete and store again.
        t.env
            .run(&[
                "keys",
                "delete",
                "--service",
                "openai",
                "--user",
                "alice",
                "--yes",
            ])
            .ok();
        t.store("alice", E1);
        assert_eq!(t.get("alice").ok().stdout, format!("{E1}\n"), "{backend}");
    }
}

/// The reproduction: delete the state key and clear every seal of a sealed store, put
/// a rotated key's `current_version` back: before, the rotated-out key was served with a
/// warning (exit 0), and `keys seal` then re-sealed the rolled-back state under a new state
/// key. Now the keyed rows of the audit trail prove the store was sealed: reads, writes and
/// `keys seal` are refused.
#[test]
fn a_sealed_store_made_to_look_unsealed_is_refused() {
    for t in Target::all() {
        let backend = t.backend();
        t.store("alice", A1);
        t.rotate("alice", A2).ok();
        t.sql("DELETE FROM store_keys");
        t.sql(
            "UPDATE api_keys SET state_mac = NULL, current_digest = NULL, previous_digest = NULL, \
             revision = 0",
        );
        t.sql("UPDATE api_keys SET current_version = 1");
        t.sql("UPDATE api_key_versions SET state = 'current', retire_at = NULL WHERE version = 1");
        t.sql("DELETE FROM api_key_versions WHERE version = 2");

        let r = t.get("alice");
        refused(&r, backend, "the rotated-out key of a downgraded store");
        assert!(r.stderr.contains("was sealed"), "{backend}: {r:#?}");
        let r = t.env.run(&["keys", "seal"]);
        refused(&r, backend, "re-sealing a downgraded store");
        assert!(r.stderr.contains("store_keys"), "{backend}: {r:#?}");
        refused(
            &t.env.run_stdin(
                &["keys", "store", "--service", "openai", "--user", "bob"],
                B1,
            ),
            backend,
            "a write into a downgraded store",
        );
    }
}

/// The reproduction with `kms.hierarchy = service`: `keys rewrap --rotate-branches`,
/// then delete the new branch version's row. Before, the next store wrapped under the
/// rotated-out branch key, silently. Now the trail's record of the rotation refuses it.
#[test]
fn a_branch_rotation_rolled_back_is_refused() {
    for mut t in Target::all() {
        let backend = t.backend();
        t.env.set("LLM_ACCOUNTING_KMS_HIERARCHY", "service");
        t.store("alice", A1);
        t.env.run(&["keys", "rewrap", "--rotate-branches"]).ok();
        t.get("alice").ok();
        t.sql("DELETE FROM branch_keys WHERE version = 2");
        let r = t.env.run_stdin(
            &["keys", "store", "--service", "openai", "--user", "bob"],
            B1,
        );
        refused(&r, backend, "a store under the rotated-out branch key");
        assert!(r.stderr.contains("branch key"), "{backend}: {r:#?}");
        // Nothing was written.
        let r = t.env.run(&["keys", "list", "--format", "json"]).ok();
        assert!(!r.stdout.contains("bob"), "{backend}: {r:#?}");
    }
}

/// A restore of the whole database (keys, versions and the audit trail together, all
/// consistent) cannot be told from inside it; the anchor file, outside it, tells it. Without
/// the anchor the rolled-back key is served: the documented limit.
#[test]
fn a_whole_database_put_back_is_caught_by_the_anchor_file() {
    let tables = ["api_keys", "api_key_versions", "api_key_audit"];
    for mut t in Target::all() {
        let backend = t.backend();
        let anchor = t.env.dir().join("audit.head");
        t.env.set(
            "LLM_ACCOUNTING_AUDIT_ANCHOR_FILE",
            &anchor.to_string_lossy(),
        );
        t.store("alice", A1);
        t.snapshot(&tables);
        t.rotate("alice", A2).ok();
        // The anchor holds the head after the rotation, in the form `keys audit --head` prints.
        let kept = std::fs::read_to_string(&anchor).expect("the anchor file was written");
        let head = t.env.run(&["keys", "audit", "--head"]).ok().stdout;
        assert_eq!(kept, head, "{backend}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&anchor)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{backend}: mode {mode:o}");
        }
        assert_eq!(t.get("alice").ok().stdout, format!("{A2}\n"), "{backend}");

        t.restore(&tables);
        let r = t.get("alice");
        refused(&r, backend, "a database put back whole");
        assert!(r.stderr.contains("anchor"), "{backend}: {r:#?}");

        // Without the anchor, the restored database is all there is: it serves what it
        // served then (SECURITY.md says so).
        t.env.unset("LLM_ACCOUNTING_AUDIT_ANCHOR_FILE");
        assert_eq!(t.get("alice").ok().stdout, format!("{A1}\n"), "{backend}");
    }
}
