//! Database migrations of llm-accounting, for [sea-orm-migration].
//!
//! [`Migrator`] lists every migration in order. The store applies them automatically when it
//! opens a database; each one also has a working `down`.
//!
//! ```no_run
//! use llm_accounting_migration::Migrator;
//! use sea_orm_migration::MigratorTrait;
//!
//! # async fn example(db: &sea_orm_migration::sea_orm::DatabaseConnection)
//! # -> Result<(), sea_orm_migration::DbErr> {
//! Migrator::up(db, None).await?; // apply everything pending
//! Migrator::down(db, None).await?; // roll everything back
//! # Ok(())
//! # }
//! ```
//!
//! The schema is written with the portable schema builder only, so the same migrations run on
//! SQLite, PostgreSQL and MySQL/MariaDB. Timestamps are `timestamp with time zone` (text on
//! SQLite), except on MySQL, where they are `datetime(6)` holding UTC: MySQL's `timestamp` has
//! second precision and ends in 2038.
//!
//! [sea-orm-migration]: https://docs.rs/sea-orm-migration

use sea_orm_migration::prelude::*;

/// The trait that runs [`Migrator`] (`Migrator::up(db, None)`, `Migrator::down(db, None)`),
/// re-exported so that users need no direct dependency on sea-orm-migration.
pub use sea_orm_migration::MigratorTrait;

mod columns;
mod m20261128_000001_create_api_keys;
mod m20261128_000002_create_api_key_versions;
mod m20261129_000003_add_lifecycle;
mod m20261129_000004_create_api_key_audit;
mod m20261130_000005_seal_key_state;
mod m20261130_000006_add_audit_counts;
mod m20261201_000007_branch_keys;
mod m20261202_000001_create_usage_tables;
mod m20261202_000002_create_usage_entry_sources;
mod m20261206_000001_create_usage_counters;
mod m20261206_000002_create_gateway_keys;
mod m20261207_000001_add_audit_records;
mod m20261207_000002_index_api_keys_identity;

/// Every migration of the llm-accounting schema, oldest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_api_keys::Migration),
            Box::new(m20261128_000002_create_api_key_versions::Migration),
            Box::new(m20261129_000003_add_lifecycle::Migration),
            Box::new(m20261129_000004_create_api_key_audit::Migration),
            Box::new(m20261130_000005_seal_key_state::Migration),
            Box::new(m20261130_000006_add_audit_counts::Migration),
            Box::new(m20261201_000007_branch_keys::Migration),
            Box::new(m20261202_000001_create_usage_tables::Migration),
            Box::new(m20261202_000002_create_usage_entry_sources::Migration),
            Box::new(m20261206_000001_create_usage_counters::Migration),
            Box::new(m20261206_000002_create_gateway_keys::Migration),
            Box::new(m20261207_000001_add_audit_records::Migration),
            Box::new(m20261207_000002_index_api_keys_identity::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    //! The DDL each backend gets, checked without a server.

    use sea_orm_migration::sea_orm::DbBackend;

    use super::{
        m20261128_000001_create_api_keys as keys,
        m20261128_000002_create_api_key_versions as versions,
    };

    fn ddl(backend: DbBackend) -> String {
        let mut out = vec![
            backend.build(&keys::create_table(backend)).to_string(),
            backend.build(&versions::create_table(backend)).to_string(),
        ];
        for index in keys::create_indexes()
            .into_iter()
            .chain(versions::create_indexes())
        {
            out.push(backend.build(&index).to_string());
        }
        out.join(";\n")
    }

    #[test]
    fn postgres() {
        let sql = ddl(DbBackend::Postgres);
        assert!(sql.contains(r#""envelope" bytea NOT NULL"#), "{sql}");
        assert!(
            sql.contains(r#""created_at" timestamp with time zone NOT NULL"#),
            "{sql}"
        );
        assert!(
            sql.contains(r#"CREATE UNIQUE INDEX "idx_api_keys_scope_key""#),
            "{sql}"
        );
        assert!(sql.contains("ON DELETE CASCADE"), "{sql}");
    }

    #[test]
    fn mysql() {
        let sql = ddl(DbBackend::MySql);
        assert!(sql.contains("`envelope` blob NOT NULL"), "{sql}");
        assert!(sql.contains("`created_at` datetime(6) NOT NULL"), "{sql}");
        assert!(sql.contains("`last_used_at` datetime(6) NULL"), "{sql}");
        assert!(
            sql.contains("UNIQUE INDEX `idx_api_keys_scope_key`"),
            "{sql}"
        );
        assert!(sql.contains("ON DELETE CASCADE"), "{sql}");
        assert!(sql.contains("DEFAULT CHARSET=utf8mb4"), "{sql}");
        assert!(sql.contains("COLLATE=utf8mb4_bin"), "{sql}");
    }

    #[test]
    fn sqlite() {
        let sql = ddl(DbBackend::Sqlite);
        assert!(sql.contains(r#""envelope" blob NOT NULL"#), "{sql}");
        assert!(sql.contains("PRIMARY KEY"), "{sql}");
        assert!(sql.contains("ON DELETE CASCADE"), "{sql}");
    }
}
