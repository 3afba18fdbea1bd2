//! Moved or modified ciphertexts in the database file: exit code 4, no key printed.

use llm_accounting_testkit::Env;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use super::{BIN, KEY_BOB, KEY1, assert_no_secret, connect, runtime};

async fn key_id(db: &DatabaseConnection, user: &str) -> String {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT id FROM api_keys WHERE user_id = ?",
            [user.into()],
        ))
        .await
        .expect("query")
        .expect("key row");
    row.try_get("", "id").expect("id")
}

async fn current_envelope(db: &DatabaseConnection, key_id: &str) -> Vec<u8> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT v.envelope FROM api_key_versions v JOIN api_keys k \
             ON k.id = v.key_id AND k.current_version = v.version WHERE k.id = ?",
            [key_id.into()],
        ))
        .await
        .expect("query")
        .expect("version row");
    row.try_get("", "envelope").expect("envelope")
}

async fn set_current_envelope(db: &DatabaseConnection, key_id: &str, envelope: Vec<u8>) {
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "UPDATE api_key_versions SET envelope = ? WHERE key_id = ? AND version = \
             (SELECT current_version FROM api_keys WHERE id = ?)",
            [envelope.into(), key_id.into(), key_id.into()],
        ))
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 1);
}

#[test]
fn moved_or_modified_ciphertexts_exit_4() {
    let env = Env::new(BIN);
    for (user, key) in [("alice", KEY1), ("bob", KEY_BOB)] {
        env.run_stdin(
            &["keys", "store", "--service", "openai", "--user", user],
            key,
        )
        .ok();
    }
    let get = |user: &str| env.run(&["keys", "get", "--service", "openai", "--user", user]);
    assert_eq!(get("alice").ok().stdout, format!("{KEY1}\n"));

    let rt = runtime();
    let db = rt.block_on(connect(&env.db_path()));
    let alice = rt.block_on(key_id(&db, "alice"));
    let bob = rt.block_on(key_id(&db, "bob"));
    let original = rt.block_on(current_envelope(&db, &alice));

    // Bob's ciphertext moved into Alice's row.
    rt.block_on(db.execute_unprepared(&format!(
        "UPDATE api_key_versions SET envelope = \
         (SELECT envelope FROM api_key_versions WHERE key_id = '{bob}') WHERE key_id = '{alice}'"
    )))
    .expect("swap");
    let r = get("alice").code(4);
    assert!(r.stderr.contains("integrity"), "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");
    assert_no_secret(&r, &[KEY1, KEY_BOB], false);
    assert_eq!(get("bob").ok().stdout, format!("{KEY_BOB}\n"));

    // Restored, it reads again.
    rt.block_on(set_current_envelope(&db, &alice, original.clone()));
    assert_eq!(get("alice").ok().stdout, format!("{KEY1}\n"));

    // Any one flipped byte, anywhere in the envelope, fails as an integrity error.
    for i in 0..original.len() {
        let mut tampered = original.clone();
        tampered[i] ^= 0x01;
        rt.block_on(set_current_envelope(&db, &alice, tampered));
        let r = get("alice");
        assert_eq!(r.code, 4, "flipped byte {i} of {}: {r:#?}", original.len());
        assert!(r.stderr.contains("integrity"), "{r:#?}");
        assert!(r.stdout.is_empty(), "{r:#?}");
    }
    // Truncated and extended.
    for tampered in [original[..original.len() - 1].to_vec(), {
        let mut v = original.clone();
        v.push(0);
        v
    }] {
        rt.block_on(set_current_envelope(&db, &alice, tampered));
        get("alice").code(4);
    }
    rt.block_on(set_current_envelope(&db, &alice, original));
    assert_eq!(get("alice").ok().stdout, format!("{KEY1}\n"));
}
