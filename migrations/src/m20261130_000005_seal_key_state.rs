//! Authenticated key state: a revision and a seal on every key record, and `store_keys`, which
//! keeps the KMS-wrapped state key the seals are made with.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::{timestamp_utc, with_table_options};
use crate::m20261128_000001_create_api_keys::ApiKeys;

/// Adds `revision`, `current_digest`, `previous_digest` and `state_mac` to `api_keys`, and
/// creates `store_keys`.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The new `api_keys` columns.
#[derive(DeriveIden)]
enum Seal {
    /// Grows by one with every change of the record (0 for records written before).
    Revision,
    /// Digest of the current version's state.
    CurrentDigest,
    /// Digest of the latest previous version's state.
    PreviousDigest,
    /// HMAC of the record's state under the store's state key.
    StateMac,
}

/// The `store_keys` table: store-wide keys, wrapped by the KMS.
#[derive(DeriveIden)]
pub(crate) enum StoreKeys {
    Table,
    Name,
    StoreId,
    Provider,
    MasterKeyRef,
    Wrapped,
    CreatedAt,
}

/// `CREATE TABLE store_keys`.
pub(crate) fn create_store_keys(backend: DbBackend) -> TableCreateStatement {
    let table = Table::create()
        .table(StoreKeys::Table)
        .col(string_len(StoreKeys::Name, 32).primary_key())
        .col(string_len(StoreKeys::StoreId, 36))
        .col(string_len(StoreKeys::Provider, 64))
        .col(string_len(StoreKeys::MasterKeyRef, 512))
        .col(blob(StoreKeys::Wrapped))
        .col(timestamp_utc(backend, StoreKeys::CreatedAt).not_null())
        .to_owned();
    with_table_options(backend, table)
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        let columns = [
            ColumnDef::new(Seal::Revision)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
            blob_null(Seal::CurrentDigest),
            blob_null(Seal::PreviousDigest),
            blob_null(Seal::StateMac),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(create_store_keys(manager.get_database_backend()))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StoreKeys::Table).to_owned())
            .await?;
        for column in [
            Seal::StateMac,
            Seal::PreviousDigest,
            Seal::CurrentDigest,
            Seal::Revision,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
