//! Creates `gateway_keys`: the gateway's virtual keys (tokens applications send instead of a
//! provider key).
//!
//! A token is never stored: `token_mac` is an HMAC of it under a key derived from the store's
//! state key, and `row_mac` an HMAC of the row's attributes (who, what it may call, until
//! when, whether it was revoked) under the same key, so that a database writer can neither
//! read a token, mint one, nor widen or revive one by editing its row. Times are microseconds
//! since the Unix epoch (UTC).

use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::with_table_options;

/// Creates the table.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `gateway_keys`: one row per virtual key.
#[derive(DeriveIden)]
pub(crate) enum GatewayKeys {
    Table,
    Id,
    UserId,
    Project,
    Caller,
    Services,
    Models,
    CreatedUs,
    ExpiresUs,
    RevokedUs,
    TokenMac,
    RowMac,
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let table = Table::create()
            .table(GatewayKeys::Table)
            .col(big_integer(GatewayKeys::Id).auto_increment().primary_key())
            .col(string_len(GatewayKeys::UserId, 256))
            .col(string_len_null(GatewayKeys::Project, 256))
            .col(string_len_null(GatewayKeys::Caller, 256))
            .col(text_null(GatewayKeys::Services))
            .col(text_null(GatewayKeys::Models))
            .col(big_integer(GatewayKeys::CreatedUs))
            .col(big_integer_null(GatewayKeys::ExpiresUs))
            .col(big_integer_null(GatewayKeys::RevokedUs))
            .col(string_len(GatewayKeys::TokenMac, 64))
            .col(string_len(GatewayKeys::RowMac, 64))
            .to_owned();
        manager
            .create_table(with_table_options(backend, table))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(GatewayKeys::Table).to_owned())
            .await
    }
}
