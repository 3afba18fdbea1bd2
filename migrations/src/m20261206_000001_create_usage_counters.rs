//! Creates `usage_counters`, `usage_counter_marks` and `usage_rollups`: each limit's usage
//! kept per window bucket, so that a quota check reads a handful of rows whatever the number
//! of events; how far the counters have read the Python llm-accounting package's
//! `accounting_entries`; and hourly and daily sums for statistics.
//!
//! A counter row is the whole usage of one limit in one bucket (its start, in microseconds)
//! as of the last write: it is created once from the events and then kept up to date in the
//! transactions that add usage. `signature` names the limit's scope and window when the row
//! was built, so that a limit changed in place gets fresh counters.

use sea_orm_migration::{prelude::*, schema::*};

use crate::columns::with_table_options;

/// Creates the tables.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `usage_counters`: one row per limit and bucket.
#[derive(DeriveIden)]
pub(crate) enum UsageCounters {
    Table,
    LimitId,
    BucketUs,
    Signature,
    Requests,
    InputTokens,
    OutputTokens,
    CostMicros,
    OldestUs,
}

/// `usage_rollups`: this project's events summed per hour and per day (`span_us`, `start_us`)
/// and per everything `usage stats` groups by (named by a hash of those values), for
/// statistics over long periods.
#[derive(DeriveIden)]
pub(crate) enum UsageRollups {
    Table,
    SpanUs,
    StartUs,
    GroupHash,
    Model,
    Service,
    UserId,
    Project,
    Caller,
    KeyIdentity,
    KeyVersion,
    Requests,
    PromptTokens,
    CompletionTokens,
    CachedTokens,
    ReasoningTokens,
    CostMicros,
}

/// `usage_counter_marks`: the highest id of an events table already counted.
#[derive(DeriveIden)]
pub(crate) enum UsageCounterMarks {
    Table,
    Name,
    LastId,
}

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let counters = Table::create()
            .table(UsageCounters::Table)
            .col(big_integer(UsageCounters::LimitId))
            .col(big_integer(UsageCounters::BucketUs))
            .col(string_len(UsageCounters::Signature, 64))
            .col(big_integer(UsageCounters::Requests))
            .col(big_integer(UsageCounters::InputTokens))
            .col(big_integer(UsageCounters::OutputTokens))
            .col(big_integer(UsageCounters::CostMicros))
            .col(big_integer_null(UsageCounters::OldestUs))
            .primary_key(
                Index::create()
                    .col(UsageCounters::LimitId)
                    .col(UsageCounters::BucketUs),
            )
            .to_owned();
        manager
            .create_table(with_table_options(backend, counters))
            .await?;
        let marks = Table::create()
            .table(UsageCounterMarks::Table)
            .col(string_len(UsageCounterMarks::Name, 64).primary_key())
            .col(big_integer(UsageCounterMarks::LastId))
            .to_owned();
        manager
            .create_table(with_table_options(backend, marks))
            .await?;
        let rollups = Table::create()
            .table(UsageRollups::Table)
            .col(big_integer(UsageRollups::SpanUs))
            .col(big_integer(UsageRollups::StartUs))
            .col(string_len(UsageRollups::GroupHash, 32))
            .col(string_len(UsageRollups::Model, 256))
            .col(string_len_null(UsageRollups::Service, 256))
            .col(string_len_null(UsageRollups::UserId, 256))
            .col(string_len_null(UsageRollups::Project, 256))
            .col(string_len_null(UsageRollups::Caller, 256))
            .col(string_len_null(UsageRollups::KeyIdentity, 1_600))
            .col(integer_null(UsageRollups::KeyVersion))
            .col(big_integer(UsageRollups::Requests))
            .col(big_integer(UsageRollups::PromptTokens))
            .col(big_integer(UsageRollups::CompletionTokens))
            .col(big_integer(UsageRollups::CachedTokens))
            .col(big_integer(UsageRollups::ReasoningTokens))
            .col(big_integer(UsageRollups::CostMicros))
            .primary_key(
                Index::create()
                    .col(UsageRollups::SpanUs)
                    .col(UsageRollups::StartUs)
                    .col(UsageRollups::GroupHash),
            )
            .to_owned();
        manager
            .create_table(with_table_options(backend, rollups))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UsageRollups::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(UsageCounterMarks::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(UsageCounters::Table).to_owned())
            .await
    }
}
