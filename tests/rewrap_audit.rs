//! A rewrap built by the [`Stack`] audits each moved version in the move's own transaction:
//! on SQLite, PostgreSQL and MariaDB, a trigger that refuses those audit rows leaves every
//! version where it was (nothing moves unaudited), and without it each moved version has its
//! row, in a trail that verifies.

use llm_accounting::{
    ApiKey, AuditFilter, KeyIdentity, LocalKmsProvider, RewrapOptions, RewrapTarget,
    SecureKeyManager, Settings, Stack,
};
use llm_accounting_testkit::{Backend, TestDatabase};

const KEYS: [&str; 3] = [
    "sk-test-FAKE-rewrap-audit-0000000000001",
    "sk-test-FAKE-rewrap-audit-0000000000002",
    "sk-test-FAKE-rewrap-audit-0000000000003",
];

fn settings(db: &TestDatabase, dir: &tempfile::TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.database_url = Some(db.url().to_owned());
    settings.data_dir = Some(dir.path().to_owned());
    settings.create_if_missing = true;
    settings
}

fn identity(i: usize) -> KeyIdentity {
    KeyIdentity::from_parts("openai", Some(&format!("user{i}")), None).expect("id")
}

/// The master key reference of every stored version.
async fn refs(manager: &SecureKeyManager) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..KEYS.len() {
        for v in manager.versions(&identity(i)).await.expect("versions") {
            out.push(v.master_key_ref);
        }
    }
    out
}

/// A trigger that refuses the audit row of a single version's rewrap (the run's summary row,
/// which names no key, still goes through).
fn refuse_rows(backend: Backend) -> Vec<&'static str> {
    match backend {
        Backend::Sqlite => vec![
            "CREATE TRIGGER refuse_rewrap_rows BEFORE INSERT ON api_key_audit \
             WHEN NEW.operation = 'rewrap' AND NEW.service IS NOT NULL \
             BEGIN SELECT RAISE(ABORT, 'audit row refused'); END",
        ],
        Backend::Postgres => vec![
            "CREATE FUNCTION refuse_rewrap_rows() RETURNS trigger AS $body$ BEGIN \
             IF NEW.operation = 'rewrap' AND NEW.service IS NOT NULL THEN \
             RAISE EXCEPTION 'audit row refused'; END IF; RETURN NEW; END $body$ \
             LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_rewrap_rows BEFORE INSERT ON api_key_audit \
             FOR EACH ROW EXECUTE FUNCTION refuse_rewrap_rows()",
        ],
        _ => vec![
            "CREATE TRIGGER refuse_rewrap_rows BEFORE INSERT ON api_key_audit FOR EACH ROW \
             BEGIN IF NEW.operation = 'rewrap' AND NEW.service IS NOT NULL THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit row refused'; END IF; END",
        ],
    }
}

fn drop_trigger(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "DROP TRIGGER refuse_rewrap_rows ON api_key_audit",
        _ => "DROP TRIGGER refuse_rewrap_rows",
    }
}

async fn rewrap_stack(settings: &Settings) -> Stack {
    Stack::builder(settings)
        .accounting(false)
        .rewrap_to(RewrapTarget::default())
        .build()
        .await
        .expect("rewrap stack")
}

#[tokio::test]
async fn rewrap_audit_rows_commit_with_the_rewrapped_versions() {
    for db in TestDatabase::create_all().await {
        let backend = db.backend();
        let dir = tempfile::tempdir().expect("dir");
        let settings = settings(&db, &dir);

        let stack = Stack::builder(&settings)
            .accounting(false)
            .build()
            .await
            .expect("stack");
        for (i, key) in KEYS.iter().enumerate() {
            stack
                .manager()
                .store(&identity(i), &ApiKey::new((*key).into()))
                .await
                .expect("store");
        }
        let before = refs(stack.manager()).await;
        stack.shutdown().await.expect("shutdown");
        let (path, _) = settings.master_key_file().expect("master key file");
        let new_ref = LocalKmsProvider::add_master_key_version(&path).expect("new master key");
        assert!(
            before.iter().all(|r| *r != new_ref),
            "{backend}: {before:?}"
        );

        // The rows of the moves are refused: no version moves.
        for sql in refuse_rows(backend) {
            db.execute(sql, vec![]).await;
        }
        let stack = rewrap_stack(&settings).await;
        let report = stack
            .manager()
            .rewrap(&RewrapOptions::default(), |_| {})
            .await
            .expect("rewrap runs");
        assert_eq!(
            (report.done, report.failed.len()),
            (0, KEYS.len()),
            "{backend}: {report:?}"
        );
        assert_eq!(refs(stack.manager()).await, before, "{backend}");
        stack.shutdown().await.expect("shutdown");

        // Allowed again: every version moves, each with its row.
        db.execute(drop_trigger(backend), vec![]).await;
        let stack = rewrap_stack(&settings).await;
        let manager = stack.manager();
        let report = manager
            .rewrap(&RewrapOptions::default(), |_| {})
            .await
            .expect("rewrap");
        assert_eq!(
            (report.done, report.failed.len()),
            (KEYS.len() as u64, 0),
            "{backend}"
        );
        assert!(
            refs(manager).await.iter().all(|r| *r == new_ref),
            "{backend}"
        );
        manager.flush().await.expect("flush");
        let rows = manager
            .audit_records(&AuditFilter {
                operation: Some("rewrap".into()),
                ..AuditFilter::default()
            })
            .await
            .expect("audit");
        let mut moved: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                let id = r.event.identity.as_ref()?;
                assert_eq!(r.event.outcome, "ok", "{backend}: {r:?}");
                assert_eq!(r.event.master_key_ref.as_deref(), Some(new_ref.as_str()));
                Some(format!("{id} {}", r.event.detail.as_deref().unwrap_or("")))
            })
            .collect();
        moved.sort();
        let expected: Vec<String> = (0..KEYS.len())
            .map(|i| format!("{} version 1", identity(i)))
            .collect();
        assert_eq!(moved, expected, "{backend}");
        manager.verify_audit().await.expect("the trail verifies");
        for (i, key) in KEYS.iter().enumerate() {
            let got = manager.get(&identity(i)).await.expect("get");
            assert_eq!(got.expose_secret(), *key, "{backend}");
        }
        stack.shutdown().await.expect("shutdown");
    }
}
