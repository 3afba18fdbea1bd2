//! The repository and audit-log conformance suites and the migrations on every database this
//! build supports:
//! SQLite, and the PostgreSQL and MySQL/MariaDB servers (`LLM_ACCOUNTING_TEST_POSTGRES_URL`,
//! `LLM_ACCOUNTING_TEST_MYSQL_URL`; each test makes its own database and drops it).

use std::time::Duration;

use llm_accounting_core::{Error, KeyRepository};
use llm_accounting_migration::{Migrator, MigratorTrait};
use llm_accounting_store::{SeaOrmKeyRepository, StoreOptions};
use llm_accounting_testkit::{Backend, TestDatabase};
use sea_orm_migration_schema::has_tables;

mod sea_orm_migration_schema {
    use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

    /// Which of our tables exist, asked of the database's own catalog.
    pub(super) async fn has_tables(db: &DatabaseConnection) -> [bool; 2] {
        let mut out = [false; 2];
        for (i, table) in ["api_keys", "api_key_versions"].into_iter().enumerate() {
            let sql = match db.get_database_backend() {
                DbBackend::Sqlite => format!(
                    "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
                ),
                DbBackend::Postgres => format!(
                    "SELECT COUNT(*) AS n FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = '{table}'"
                ),
                _ => format!(
                    "SELECT COUNT(*) AS n FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = '{table}'"
                ),
            };
            let row = db
                .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .expect("catalog query")
                .expect("a row");
            out[i] = row.try_get::<i64>("", "n").expect("count") > 0;
        }
        out
    }
}

#[tokio::test]
async fn conformance_on_every_database() {
    for db in TestDatabase::create_all().await {
        eprintln!("conformance on {}", db.backend());
        let repo = db.repository().await;
        llm_accounting_core::conformance::repository::run(&repo).await;
        llm_accounting_core::conformance::repository::run(&repo).await;
    }
}

#[tokio::test]
async fn migrations_up_down_up_on_every_database() {
    for db in TestDatabase::create_all().await {
        // One connection: with several, a pooled SQLite connection can still read the schema
        // of a snapshot from before the `down`, and the `up` then finds an index "already"
        // there (seen under load). Migrations at open are not affected: they only go up.
        let options = StoreOptions {
            max_connections: 1,
            ..db.options()
        };
        let repo = SeaOrmKeyRepository::connect(db.url(), &options)
            .await
            .expect("open");
        let conn = repo.connection();
        assert_eq!(has_tables(conn).await, [true, true], "{}", db.backend());
        Migrator::up(conn, None).await.expect("up again is a no-op");
        Migrator::down(conn, None).await.expect("down");
        assert_eq!(has_tables(conn).await, [false, false], "{}", db.backend());
        Migrator::up(conn, None).await.expect("up after down");
        assert_eq!(has_tables(conn).await, [true, true], "{}", db.backend());
        // Down to the keys table alone: identity index, audit records, gateway keys, usage
        // counters, entry sources, usage tables, branch keys, audit counts, seal, audit,
        // lifecycle, versions.
        Migrator::down(conn, Some(12))
            .await
            .expect("twelve steps down");
        assert_eq!(has_tables(conn).await, [true, false], "{}", db.backend());
        drop(repo);
        // Opening applies what is pending.
        let repo = db.repository().await;
        assert_eq!(has_tables(repo.connection()).await, [true, true]);
        llm_accounting_core::conformance::repository::run(&repo).await;
    }
}

/// Eight pools open one new database at the same moment: every one of them must come up
/// (the losers of the race to create the tables wait for the winner).
#[tokio::test]
async fn concurrent_first_opens_all_succeed() {
    for db in TestDatabase::create_all().await {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let url = db.url().to_owned();
            let options = db.options();
            tasks.spawn(async move { SeaOrmKeyRepository::connect(&url, &options).await });
        }
        while let Some(opened) = tasks.join_next().await {
            let repo = opened
                .expect("task")
                .unwrap_or_else(|e| panic!("{}: concurrent open failed: {e}", db.backend()));
            assert!(repo.list_keys(&Default::default()).await.is_ok());
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_schema_option_keeps_tables_in_that_schema() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let plain = db.repository().await;
    plain
        .connection()
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "CREATE SCHEMA tenant_a",
        ))
        .await
        .expect("create schema");
    let options = StoreOptions {
        schema: Some("tenant_a".into()),
        ..db.options()
    };
    let repo = SeaOrmKeyRepository::connect(db.url(), &options)
        .await
        .expect("open with schema");
    llm_accounting_core::conformance::repository::run(&repo).await;
    let row = repo
        .connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = 'tenant_a' AND table_name = 'api_keys'",
        ))
        .await
        .expect("query")
        .expect("row");
    assert_eq!(row.try_get::<i64>("", "n").expect("n"), 1);
}

/// A server that is not there is "unavailable" (exit code 5 in the CLI), quickly, and the
/// message carries no password.
#[tokio::test]
async fn unreachable_servers_are_unavailable() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let options = StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    for backend in Backend::all() {
        let url = match backend {
            Backend::Sqlite => continue,
            Backend::Postgres => format!("postgres://u:hunter2@127.0.0.1:{port}/test"),
            Backend::MySql => format!("mysql://u:hunter2@127.0.0.1:{port}/test"),
        };
        match SeaOrmKeyRepository::connect(&url, &options).await {
            Err(e @ Error::DatabaseUnavailable { .. }) => {
                let chain = format!("{e} {:?}", std::error::Error::source(&e));
                assert!(!chain.contains("hunter2"), "{chain}");
            }
            other => panic!("{backend}: expected DatabaseUnavailable, got {other:?}"),
        }
    }
}

/// The audit-log conformance suite on every database, twice on the same log (the second run
/// finds rows already there).
#[tokio::test]
async fn audit_conformance_on_every_database() {
    for db in TestDatabase::create_all().await {
        eprintln!("audit conformance on {}", db.backend());
        let repo = db.repository().await;
        llm_accounting_core::conformance::audit::run(&repo).await;
        llm_accounting_core::conformance::audit::run(&repo).await;
    }
}

/// The audit log on every database: concurrent appenders (two pools) keep one unbroken chain,
/// filters are exact, and an edited or deleted row is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_on_every_database() {
    use llm_accounting_core::KeyIdentity;
    use llm_accounting_core::audit::{AuditChain, AuditEvent, AuditFilter, AuditLog, verify_chain};
    use sea_orm::{ConnectionTrait, Statement};
    for db in TestDatabase::create_all().await {
        let a = db.repository().await;
        let b = db.repository().await;
        let mut tasks = tokio::task::JoinSet::new();
        for (t, repo) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            tasks.spawn(async move {
                for i in 0..10 {
                    let id = KeyIdentity::from_parts("openai", Some(&format!("u{t}")), None)
                        .expect("id");
                    let e = AuditEvent::now("get", Some(&id), "-").detail(format!("n{i}"));
                    repo.append(&[e.clone(), e], &AuditChain::plain())
                        .await
                        .expect("append");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
        }
        let all = a.records(&AuditFilter::default()).await.expect("records");
        assert_eq!(all.len(), 80, "{}", db.backend());
        assert_eq!(verify_chain(&all), Ok(80), "{}", db.backend());
        let u2 = a
            .records(&AuditFilter {
                user: Some("u2".into()),
                ..AuditFilter::default()
            })
            .await
            .expect("filter");
        assert_eq!(u2.len(), 20);
        let upper = a
            .records(&AuditFilter {
                user: Some("U2".into()),
                ..AuditFilter::default()
            })
            .await
            .expect("filter");
        assert!(upper.is_empty(), "exact, case-sensitive filters");

        let conn = a.connection();
        // A count or a first time changed on a single-event row is found; put back, the row
        // verifies again.
        for (tamper, undo) in [
            (
                "UPDATE api_key_audit SET event_count = 1000 WHERE seq = 30",
                "UPDATE api_key_audit SET event_count = 1 WHERE seq = 30",
            ),
            (
                "UPDATE api_key_audit SET first_at = at WHERE seq = 30",
                "UPDATE api_key_audit SET first_at = NULL WHERE seq = 30",
            ),
        ] {
            for (sql, expected) in [(tamper, Err(30)), (undo, Ok(80))] {
                conn.execute_raw(Statement::from_string(conn.get_database_backend(), sql))
                    .await
                    .expect(sql);
                let all = a.records(&AuditFilter::default()).await.expect("records");
                assert_eq!(
                    verify_chain(&all).map_err(|b| b.seq),
                    expected,
                    "{}: {sql}",
                    db.backend()
                );
            }
        }
        conn.execute_raw(Statement::from_string(
            conn.get_database_backend(),
            "UPDATE api_key_audit SET outcome = 'not_found' WHERE seq = 17",
        ))
        .await
        .expect("tamper");
        let all = a.records(&AuditFilter::default()).await.expect("records");
        assert_eq!(verify_chain(&all).map_err(|b| b.seq), Err(17));
        conn.execute_raw(Statement::from_string(
            conn.get_database_backend(),
            "DELETE FROM api_key_audit WHERE seq = 5",
        ))
        .await
        .expect("delete");
        let all = a.records(&AuditFilter::default()).await.expect("records");
        assert_eq!(verify_chain(&all).map_err(|b| b.seq), Err(5));
    }
}
