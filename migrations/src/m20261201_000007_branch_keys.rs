//! `branch_keys`: the branch keys of `kms.hierarchy`, one row per branch version, each wrapped
//! by the KMS.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{timestamp_utc, with_table_options};

/// Creates `branch_keys` and its scope index.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The `branch_keys` table.
#[derive(DeriveIden)]
pub(crate) enum BranchKeys {
    Table,
    /// The branch (UUID text), the same for all its versions.
    BranchId,
    /// From 1; a rotation adds the next.
    Version,
    /// `store`, `service`, `project` or `user`.
    ScopeKind,
    /// The name the branch serves (null: the store, or records without that part).
    ScopeValue,
    /// SHA-256 (hex) of kind and value: finds a scope's branch on every database.
    ScopeKey,
    Provider,
    MasterKeyRef,
    /// The branch key, wrapped by the KMS.
    Wrapped,
    /// HMAC of id, version and scope under a key derived from the branch key.
    Commitment,
    CreatedAt,
}

/// `CREATE TABLE branch_keys`.
pub(crate) fn create_table(backend: DbBackend) -> TableCreateStatement {
    let table = Table::create()
        .table(BranchKeys::Table)
        .col(string_len(BranchKeys::BranchId, 36))
        .col(integer(BranchKeys::Version))
        .col(string_len(BranchKeys::ScopeKind, 16))
        .col(string_len_null(BranchKeys::ScopeValue, 512))
        .col(string_len(BranchKeys::ScopeKey, 64))
        .col(string_len(BranchKeys::Provider, 64))
        .col(string_len(BranchKeys::MasterKeyRef, 512))
        .col(blob(BranchKeys::Wrapped))
        .col(blob(BranchKeys::Commitment))
        .col(timestamp_utc(backend, BranchKeys::CreatedAt).not_null())
        .primary_key(
            Index::create()
                .name("pk_branch_keys")
                .col(BranchKeys::BranchId)
                .col(BranchKeys::Version),
        )
        .to_owned();
    with_table_options(backend, table)
}

/// One version number per scope: two processes making a scope's first branch (or rotating it)
/// at once cannot both win.
pub(crate) fn create_index() -> IndexCreateStatement {
    Index::create()
        .name("idx_branch_keys_scope_key_version")
        .table(BranchKeys::Table)
        .col(BranchKeys::ScopeKey)
        .col(BranchKeys::Version)
        .unique()
        .to_owned()
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(create_table(manager.get_database_backend()))
            .await?;
        manager.create_index(create_index()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BranchKeys::Table).to_owned())
            .await
    }
}
