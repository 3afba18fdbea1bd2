//! Creates `api_key_versions`: the sealed versions of every key.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{timestamp_utc, with_table_options};
use crate::m20261128_000001_create_api_keys::ApiKeys;

/// Creates the `api_key_versions` table, its foreign key and indexes.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The `api_key_versions` table and its columns.
#[derive(DeriveIden)]
pub(crate) enum ApiKeyVersions {
    Table,
    KeyId,
    Version,
    State,
    Envelope,
    Provider,
    MasterKeyRef,
    Hint,
    CreatedAt,
}

/// `CREATE TABLE api_key_versions`, with its primary and foreign keys.
pub(crate) fn create_table(backend: DbBackend) -> TableCreateStatement {
    let table = Table::create()
        .table(ApiKeyVersions::Table)
        .col(string_len(ApiKeyVersions::KeyId, 36))
        .col(integer(ApiKeyVersions::Version))
        .col(string_len(ApiKeyVersions::State, 16))
        // The encoded envelope; `blob` is bytea on PostgreSQL and holds 64 KiB on MySQL, far
        // more than an envelope needs.
        .col(blob(ApiKeyVersions::Envelope))
        .col(string_len(ApiKeyVersions::Provider, 64))
        .col(string_len(ApiKeyVersions::MasterKeyRef, 512))
        .col(string_len_null(ApiKeyVersions::Hint, 64))
        .col(timestamp_utc(backend, ApiKeyVersions::CreatedAt).not_null())
        .primary_key(
            Index::create()
                .name("pk_api_key_versions")
                .col(ApiKeyVersions::KeyId)
                .col(ApiKeyVersions::Version),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_api_key_versions_key_id")
                .from(ApiKeyVersions::Table, ApiKeyVersions::KeyId)
                .to(ApiKeys::Table, ApiKeys::Id)
                .on_delete(ForeignKeyAction::Cascade)
                .on_update(ForeignKeyAction::Cascade),
        )
        .to_owned();
    with_table_options(backend, table)
}

/// The indexes of `api_key_versions`: (provider, master_key_ref), for rewrapping.
pub(crate) fn create_indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name("idx_api_key_versions_provider_master_key_ref")
            .table(ApiKeyVersions::Table)
            .col(ApiKeyVersions::Provider)
            .col(ApiKeyVersions::MasterKeyRef)
            .to_owned(),
    ]
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(create_table(manager.get_database_backend()))
            .await?;
        for index in create_indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeyVersions::Table).to_owned())
            .await
    }
}
