//! Creates `api_key_audit`: the hash-chained audit trail (one row per operation on a key).

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{timestamp_utc, with_table_options};

/// Creates the `api_key_audit` table and its indexes.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The `api_key_audit` table and its columns.
#[derive(DeriveIden)]
pub(crate) enum ApiKeyAudit {
    Table,
    Seq,
    At,
    Operation,
    Service,
    UserId,
    Project,
    Principal,
    Outcome,
    Provider,
    MasterKeyRef,
    Detail,
    PrevHash,
    Hash,
}

/// `CREATE TABLE api_key_audit`. `seq` is assigned by the writer (the chain's order), not by
/// the database, so that two writers racing for the same position conflict instead of forking
/// the chain.
pub(crate) fn create_table(backend: DbBackend) -> TableCreateStatement {
    let table = Table::create()
        .table(ApiKeyAudit::Table)
        .col(big_integer(ApiKeyAudit::Seq).primary_key())
        .col(timestamp_utc(backend, ApiKeyAudit::At).not_null())
        .col(string_len(ApiKeyAudit::Operation, 32))
        .col(string_len_null(ApiKeyAudit::Service, 512))
        .col(string_len_null(ApiKeyAudit::UserId, 512))
        .col(string_len_null(ApiKeyAudit::Project, 512))
        .col(string_len(ApiKeyAudit::Principal, 1100))
        .col(string_len(ApiKeyAudit::Outcome, 32))
        .col(string_len_null(ApiKeyAudit::Provider, 64))
        .col(string_len_null(ApiKeyAudit::MasterKeyRef, 512))
        .col(string_len_null(ApiKeyAudit::Detail, 256))
        .col(string_len(ApiKeyAudit::PrevHash, 64))
        .col(string_len(ApiKeyAudit::Hash, 64))
        .to_owned();
    with_table_options(backend, table)
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(create_table(manager.get_database_backend()))
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_key_audit_service")
                    .table(ApiKeyAudit::Table)
                    .col(ApiKeyAudit::Service)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeyAudit::Table).to_owned())
            .await
    }
}
