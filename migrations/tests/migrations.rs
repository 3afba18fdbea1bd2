//! Runs every migration up, down and up again on a temporary SQLite file.

use llm_accounting_migration::Migrator;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use sea_orm_migration::{MigratorTrait, SchemaManager};

const TABLES: [&str; 2] = ["api_keys", "api_key_versions"];

async fn tables_present(db: &DatabaseConnection) -> Vec<bool> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for table in TABLES {
        present.push(manager.has_table(table).await.expect("has_table"));
    }
    present
}

/// Whether `api_key_audit` has the columns `event_count`, `first_at` and `detail`.
async fn audit_columns(db: &DatabaseConnection) -> Vec<bool> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for column in ["event_count", "first_at", "detail"] {
        present.push(
            manager
                .has_column("api_key_audit", column)
                .await
                .expect("has_column"),
        );
    }
    present
}

/// Whether `usage_events`, `quota_limits` and `quota_reservations` exist.
async fn usage_tables(db: &DatabaseConnection) -> Vec<bool> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for table in ["usage_events", "quota_limits", "quota_reservations"] {
        present.push(manager.has_table(table).await.expect("has_table"));
    }
    present
}

#[tokio::test]
async fn up_down_up_on_sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let db = Database::connect(&url).await.expect("connect");

    assert_eq!(tables_present(&db).await, [false, false]);
    Migrator::up(&db, None).await.expect("up");
    assert_eq!(tables_present(&db).await, [true, true]);
    assert!(
        Migrator::get_pending_migrations(&db)
            .await
            .expect("pending")
            .is_empty()
    );
    assert_eq!(
        Migrator::get_applied_migrations(&db)
            .await
            .expect("applied")
            .len(),
        13
    );

    let manager = SchemaManager::new(&db);
    for (table, index) in [
        ("api_keys", "idx_api_keys_scope_key"),
        ("api_keys", "idx_api_keys_service"),
        (
            "api_key_versions",
            "idx_api_key_versions_provider_master_key_ref",
        ),
        ("branch_keys", "idx_branch_keys_scope_key_version"),
    ] {
        assert!(
            manager.has_index(table, index).await.expect("has_index"),
            "{index}"
        );
    }

    // Up again is a no-op.
    Migrator::up(&db, None).await.expect("up is idempotent");

    // The last migration adds the index on the names of a key; one step down removes it.
    let manager = SchemaManager::new(&db);
    assert!(
        manager
            .has_index("api_keys", "idx_api_keys_identity")
            .await
            .expect("has_index")
    );
    Migrator::down(&db, Some(1)).await.expect("one step down");
    assert!(
        !manager
            .has_index("api_keys", "idx_api_keys_identity")
            .await
            .expect("has_index")
    );

    // The one before adds the record and revision of each audit row, and their index; one
    // step down removes exactly them.
    let record_index = || manager.has_index("api_key_audit", "idx_api_key_audit_record");
    assert!(record_index().await.expect("has_index"));
    assert!(
        manager
            .has_column("api_key_audit", "revision")
            .await
            .expect("has_column")
    );
    Migrator::down(&db, Some(1)).await.expect("one step down");
    assert!(!record_index().await.expect("has_index"));
    for column in ["record_id", "revision"] {
        assert!(
            !manager
                .has_column("api_key_audit", column)
                .await
                .expect("has_column"),
            "{column}"
        );
    }
    assert!(manager.has_table("gateway_keys").await.expect("has_table"));

    // The one before adds the gateway's virtual keys; one step down removes exactly them.
    assert!(manager.has_table("gateway_keys").await.expect("has_table"));
    Migrator::down(&db, Some(1)).await.expect("one step down");
    assert!(!manager.has_table("gateway_keys").await.expect("has_table"));
    assert!(
        manager
            .has_table("usage_counters")
            .await
            .expect("has_table")
    );

    // The one before adds the usage counters, marks and rollups; one step down removes
    // exactly them.
    let counters = ["usage_counters", "usage_counter_marks", "usage_rollups"];
    for table in counters {
        assert!(
            manager.has_table(table).await.expect("has_table"),
            "{table}"
        );
    }
    Migrator::down(&db, Some(1)).await.expect("one step down");
    for table in counters {
        assert!(
            !manager.has_table(table).await.expect("has_table"),
            "{table}"
        );
    }
    // The one before adds the sources of entries written into the Python package's table;
    // the one before that, the usage tables. One step down each removes exactly them.
    assert!(
        manager
            .has_table("usage_entry_sources")
            .await
            .expect("has_table")
    );
    Migrator::down(&db, Some(1)).await.expect("one step down");
    assert!(
        !manager
            .has_table("usage_entry_sources")
            .await
            .expect("has_table")
    );
    assert_eq!(usage_tables(&db).await, [true; 3]);
    Migrator::down(&db, Some(1)).await.expect("one step down");
    assert_eq!(usage_tables(&db).await, [false; 3]);
    assert_eq!(tables_present(&db).await, [true, true]);
    Migrator::up(&db, None).await.expect("up again");
    assert_eq!(usage_tables(&db).await, [true; 3]);

    // The one before adds the branch keys: seven steps down from the top remove them too.
    assert!(manager.has_table("branch_keys").await.expect("has_table"));
    Migrator::down(&db, Some(7))
        .await
        .expect("seven steps down");
    assert!(!manager.has_table("branch_keys").await.expect("has_table"));
    // The one before adds the audit counts; the next step down removes exactly them.
    assert_eq!(audit_columns(&db).await, [true; 3]);
    Migrator::down(&db, Some(1))
        .await
        .expect("another step down");
    assert_eq!(audit_columns(&db).await, [false, false, true]);
    Migrator::up(&db, None).await.expect("up again");

    Migrator::down(&db, None).await.expect("down");
    assert_eq!(tables_present(&db).await, [false, false]);
    assert_eq!(
        Migrator::get_applied_migrations(&db)
            .await
            .expect("applied")
            .len(),
        0
    );

    Migrator::up(&db, None).await.expect("up again");
    assert_eq!(tables_present(&db).await, [true, true]);

    // Twelve steps down remove the identity index, the audit records, the gateway keys, the
    // usage counters, the entry sources, the usage tables, the branch keys, the audit counts,
    // the seal columns and store keys, the audit table, the lifecycle columns, then the
    // versions table.
    Migrator::down(&db, Some(12))
        .await
        .expect("twelve steps down");
    assert_eq!(tables_present(&db).await, [true, false]);
    Migrator::up(&db, None).await.expect("up after one step");
    assert_eq!(tables_present(&db).await, [true, true]);
}

#[tokio::test]
async fn scope_key_is_unique_and_versions_cascade() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let db = Database::connect(&url).await.expect("connect");
    Migrator::up(&db, None).await.expect("up");
    db.execute_unprepared("PRAGMA foreign_keys = ON")
        .await
        .expect("fk on");

    let insert_key = |id: &str| {
        Statement::from_string(
            DbBackend::Sqlite,
            format!(
                "INSERT INTO api_keys (id, scope_key, service, user_id, project, state, \
                 current_version, hint, created_at, updated_at, last_used_at) VALUES \
                 ('{id}', 'scope', 'openai', NULL, NULL, 'active', 1, NULL, \
                 '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', NULL)"
            ),
        )
    };
    db.execute_raw(insert_key("a")).await.expect("first key");
    assert!(
        db.execute_raw(insert_key("b")).await.is_err(),
        "a second row with the same scope_key must be refused, even with NULL user/project"
    );
    db.execute_unprepared(
        "INSERT INTO api_key_versions (key_id, version, state, envelope, provider, \
         master_key_ref, hint, created_at) VALUES ('a', 1, 'current', x'00', 'local', 'mk', \
         NULL, '2026-01-01T00:00:00+00:00')",
    )
    .await
    .expect("version");
    db.execute_unprepared("DELETE FROM api_keys WHERE id = 'a'")
        .await
        .expect("delete key");
    let left = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT COUNT(*) AS n FROM api_key_versions",
        ))
        .await
        .expect("count")
        .expect("row");
    assert_eq!(
        left.try_get::<i64>("", "n").expect("n"),
        0,
        "versions cascade"
    );
}
