//! Creates the usage accounting tables: `usage_events`, `quota_limits` and
//! `quota_reservations`. Times are whole microseconds since the Unix epoch (UTC) in 64-bit
//! integers, money is integer micro-dollars: exact, and compared and summed the same way on
//! every database.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::with_table_options;

/// Creates the three tables and their indexes.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `usage_events`: one row per call.
#[derive(DeriveIden)]
pub(crate) enum UsageEvents {
    Table,
    Id,
    AtUs,
    Model,
    Service,
    UserId,
    Project,
    Caller,
    Session,
    KeyIdentity,
    KeyVersion,
    PromptTokens,
    CompletionTokens,
    CachedTokens,
    ReasoningTokens,
    CostMicros,
    ExecutionUs,
}

/// `quota_limits`: one row per limit.
#[derive(DeriveIden)]
pub(crate) enum QuotaLimits {
    Table,
    Id,
    Kind,
    MaxValue,
    WindowKind,
    WindowUnit,
    WindowCount,
    Service,
    Model,
    UserId,
    Project,
    Caller,
    KeyIdentity,
    CreatedAtUs,
}

/// `quota_reservations`: budget held for calls in flight.
#[derive(DeriveIden)]
pub(crate) enum QuotaReservations {
    Table,
    Id,
    CreatedAtUs,
    ExpiresAtUs,
    Service,
    Model,
    UserId,
    Project,
    Caller,
    KeyIdentity,
    Requests,
    InputTokens,
    OutputTokens,
    CostMicros,
}

/// Names are at most 256 characters; a key identity (service, user, project) up to 1,600.
const NAME: u32 = 256;
const KEY: u32 = 1_600;

fn events(backend: DbBackend) -> TableCreateStatement {
    let t = Table::create()
        .table(UsageEvents::Table)
        .col(big_integer(UsageEvents::Id).auto_increment().primary_key())
        .col(big_integer(UsageEvents::AtUs))
        .col(string_len(UsageEvents::Model, NAME))
        .col(string_len_null(UsageEvents::Service, NAME))
        .col(string_len_null(UsageEvents::UserId, NAME))
        .col(string_len_null(UsageEvents::Project, NAME))
        .col(string_len_null(UsageEvents::Caller, NAME))
        .col(string_len_null(UsageEvents::Session, NAME))
        .col(string_len_null(UsageEvents::KeyIdentity, KEY))
        .col(integer_null(UsageEvents::KeyVersion))
        .col(big_integer(UsageEvents::PromptTokens))
        .col(big_integer(UsageEvents::CompletionTokens))
        .col(big_integer(UsageEvents::CachedTokens))
        .col(big_integer(UsageEvents::ReasoningTokens))
        .col(big_integer(UsageEvents::CostMicros))
        .col(big_integer_null(UsageEvents::ExecutionUs))
        .to_owned();
    with_table_options(backend, t)
}

fn limits(backend: DbBackend) -> TableCreateStatement {
    let t = Table::create()
        .table(QuotaLimits::Table)
        .col(big_integer(QuotaLimits::Id).auto_increment().primary_key())
        .col(string_len(QuotaLimits::Kind, 32))
        .col(big_integer(QuotaLimits::MaxValue))
        .col(string_len(QuotaLimits::WindowKind, 16))
        .col(string_len_null(QuotaLimits::WindowUnit, 16))
        .col(big_integer(QuotaLimits::WindowCount))
        .col(string_len_null(QuotaLimits::Service, NAME))
        .col(string_len_null(QuotaLimits::Model, NAME))
        .col(string_len_null(QuotaLimits::UserId, NAME))
        .col(string_len_null(QuotaLimits::Project, NAME))
        .col(string_len_null(QuotaLimits::Caller, NAME))
        .col(string_len_null(QuotaLimits::KeyIdentity, KEY))
        .col(big_integer(QuotaLimits::CreatedAtUs))
        .to_owned();
    with_table_options(backend, t)
}

fn reservations(backend: DbBackend) -> TableCreateStatement {
    let t = Table::create()
        .table(QuotaReservations::Table)
        .col(string_len(QuotaReservations::Id, 36).primary_key())
        .col(big_integer(QuotaReservations::CreatedAtUs))
        .col(big_integer(QuotaReservations::ExpiresAtUs))
        .col(string_len_null(QuotaReservations::Service, NAME))
        .col(string_len_null(QuotaReservations::Model, NAME))
        .col(string_len_null(QuotaReservations::UserId, NAME))
        .col(string_len_null(QuotaReservations::Project, NAME))
        .col(string_len_null(QuotaReservations::Caller, NAME))
        .col(string_len_null(QuotaReservations::KeyIdentity, KEY))
        .col(big_integer(QuotaReservations::Requests))
        .col(big_integer(QuotaReservations::InputTokens))
        .col(big_integer(QuotaReservations::OutputTokens))
        .col(big_integer(QuotaReservations::CostMicros))
        .to_owned();
    with_table_options(backend, t)
}

fn indexes() -> Vec<IndexCreateStatement> {
    vec![
        Index::create()
            .name("idx_usage_events_at")
            .table(UsageEvents::Table)
            .col(UsageEvents::AtUs)
            .to_owned(),
        Index::create()
            .name("idx_usage_events_model_at")
            .table(UsageEvents::Table)
            .col(UsageEvents::Model)
            .col(UsageEvents::AtUs)
            .to_owned(),
        Index::create()
            .name("idx_usage_events_user_at")
            .table(UsageEvents::Table)
            .col(UsageEvents::UserId)
            .col(UsageEvents::AtUs)
            .to_owned(),
        Index::create()
            .name("idx_quota_reservations_expires")
            .table(QuotaReservations::Table)
            .col(QuotaReservations::ExpiresAtUs)
            .to_owned(),
    ]
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager.create_table(events(backend)).await?;
        manager.create_table(limits(backend)).await?;
        manager.create_table(reservations(backend)).await?;
        for index in indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            QuotaReservations::Table.into_iden(),
            QuotaLimits::Table.into_iden(),
            UsageEvents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
