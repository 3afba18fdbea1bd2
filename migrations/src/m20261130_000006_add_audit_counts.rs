//! Adds what an aggregated audit row needs: how many events it stands for, and when the first
//! of them happened (`at` holds the last).

use sea_orm_migration::prelude::*;

use crate::columns::timestamp_utc;
use crate::m20261129_000004_create_api_key_audit::ApiKeyAudit;

/// `event_count` (1 for a single event) and `first_at` (null for a single event) on
/// `api_key_audit`.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The new columns.
#[derive(DeriveIden)]
enum AuditCounts {
    EventCount,
    FirstAt,
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        // One column per statement: SQLite's ALTER TABLE adds one at a time. Existing rows
        // each stand for one event.
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeyAudit::Table)
                    .add_column(
                        ColumnDef::new(AuditCounts::EventCount)
                            .big_integer()
                            .not_null()
                            .default(1),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeyAudit::Table)
                    .add_column(timestamp_utc(backend, AuditCounts::FirstAt).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [AuditCounts::FirstAt, AuditCounts::EventCount] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeyAudit::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
