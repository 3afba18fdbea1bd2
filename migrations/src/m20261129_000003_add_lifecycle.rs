//! Adds the key lifecycle columns: expiry of a value, and the end of a previous version's grace
//! period.

use sea_orm_migration::prelude::*;

use crate::columns::timestamp_utc;
use crate::m20261128_000001_create_api_keys::ApiKeys;
use crate::m20261128_000002_create_api_key_versions::ApiKeyVersions;

/// `expires_at` on keys and versions, `retire_at` on versions.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The new columns.
#[derive(DeriveIden)]
enum Lifecycle {
    ExpiresAt,
    RetireAt,
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(timestamp_utc(backend, Lifecycle::ExpiresAt).null())
                    .to_owned(),
            )
            .await?;
        for column in [Lifecycle::ExpiresAt, Lifecycle::RetireAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeyVersions::Table)
                        .add_column(timestamp_utc(backend, column).null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Lifecycle::RetireAt, Lifecycle::ExpiresAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeyVersions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(Lifecycle::ExpiresAt)
                    .to_owned(),
            )
            .await
    }
}
