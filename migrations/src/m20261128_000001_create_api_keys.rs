//! Creates `api_keys`: one row per stored key (identity, state, non-secret metadata).

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{timestamp_utc, with_table_options};

/// Creates the `api_keys` table and its indexes.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The `api_keys` table and its columns.
#[derive(DeriveIden)]
pub(crate) enum ApiKeys {
    Table,
    Id,
    ScopeKey,
    Service,
    UserId,
    Project,
    State,
    CurrentVersion,
    Hint,
    CreatedAt,
    UpdatedAt,
    LastUsedAt,
}

/// `CREATE TABLE api_keys`.
pub(crate) fn create_table(backend: DbBackend) -> TableCreateStatement {
    let table = Table::create()
        .table(ApiKeys::Table)
        // UUID, hyphenated text: the same on every backend.
        .col(string_len(ApiKeys::Id, 36).primary_key())
        // Hex SHA-256 of (service, user, project): unique without NULL holes.
        .col(string_len(ApiKeys::ScopeKey, 64))
        .col(string_len(ApiKeys::Service, 512))
        .col(string_len_null(ApiKeys::UserId, 512))
        .col(string_len_null(ApiKeys::Project, 512))
        .col(string_len(ApiKeys::State, 16))
        .col(integer(ApiKeys::CurrentVersion))
        .col(string_len_null(ApiKeys::Hint, 64))
        .col(timestamp_utc(backend, ApiKeys::CreatedAt).not_null())
        .col(timestamp_utc(backend, ApiKeys::UpdatedAt).not_null())
        .col(timestamp_utc(backend, ApiKeys::LastUsedAt).null())
        .to_owned();
    with_table_options(backend, table)
}

/// The indexes of `api_keys`: unique scope key, service.
pub(crate) fn create_indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name("idx_api_keys_scope_key")
            .table(ApiKeys::Table)
            .col(ApiKeys::ScopeKey)
            .unique()
            .to_owned(),
        Index::create()
            .name("idx_api_keys_service")
            .table(ApiKeys::Table)
            .col(ApiKeys::Service)
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
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
