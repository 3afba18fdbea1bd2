//! Adds to each audit row the record a key change produced and its revision, with an index
//! to find the latest revision of a record in one lookup (rollback resistance: a reader
//! refuses a record older than the trail's latest change of it).

use sea_orm_migration::prelude::*;

use crate::m20261129_000004_create_api_key_audit::ApiKeyAudit;

/// `record_id` and `revision` on `api_key_audit` (null on rows that name no record), and the
/// index `idx_api_key_audit_record`.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The new columns.
#[derive(DeriveIden)]
enum AuditRecords {
    RecordId,
    Revision,
}

const INDEX: &str = "idx_api_key_audit_record";

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeyAudit::Table)
                    .add_column(ColumnDef::new(AuditRecords::RecordId).string_len(36).null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeyAudit::Table)
                    .add_column(ColumnDef::new(AuditRecords::Revision).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(ApiKeyAudit::Table)
                    .col(AuditRecords::RecordId)
                    .col(AuditRecords::Revision)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(ApiKeyAudit::Table)
                    .to_owned(),
            )
            .await?;
        for column in [AuditRecords::Revision, AuditRecords::RecordId] {
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
