//! Creates `usage_entry_sources`: for usage written into the Python llm-accounting package's
//! `accounting_entries` table (which has no such columns), the service and the stored key and
//! version that served the call. That table is never altered.

use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::with_table_options;

/// Creates the table.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `usage_entry_sources`: one row per `accounting_entries` row written by this project.
#[derive(DeriveIden)]
pub(crate) enum UsageEntrySources {
    Table,
    EntryId,
    Service,
    KeyIdentity,
    KeyVersion,
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let t = Table::create()
            .table(UsageEntrySources::Table)
            .col(big_integer(UsageEntrySources::EntryId).primary_key())
            .col(string_len_null(UsageEntrySources::Service, 256))
            .col(string_len_null(UsageEntrySources::KeyIdentity, 1_600))
            .col(integer_null(UsageEntrySources::KeyVersion))
            .to_owned();
        manager
            .create_table(with_table_options(manager.get_database_backend(), t))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UsageEntrySources::Table).to_owned())
            .await
    }
}
