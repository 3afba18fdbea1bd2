//! Adds an index on the names of a key (`service`, `user_id`, `project`): a lookup that
//! finds nothing by the lookup key checks that no row holds the same names under another
//! lookup key (a damaged row), and without this index that check read every key of the
//! service (a batch of new keys for one service became quadratic).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261128_000001_create_api_keys::ApiKeys;

/// The index `idx_api_keys_identity` on `api_keys (service, user_id, project)`.
#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const INDEX: &str = "idx_api_keys_identity";

/// Characters of each name that MySQL indexes: the three columns whole (512 characters, 4
/// bytes each) would pass InnoDB's 3,072-byte limit on a key; names that agree on their first
/// 128 characters are told apart by the rows themselves.
const MYSQL_PREFIX: u32 = 128;

// async-trait needs the elided lifetime of the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut index = Index::create();
        index.name(INDEX).table(ApiKeys::Table);
        if manager.get_database_backend() == DbBackend::MySql {
            index
                .col((ApiKeys::Service, MYSQL_PREFIX))
                .col((ApiKeys::UserId, MYSQL_PREFIX))
                .col((ApiKeys::Project, MYSQL_PREFIX));
        } else {
            index
                .col(ApiKeys::Service)
                .col(ApiKeys::UserId)
                .col(ApiKeys::Project);
        }
        manager.create_index(index.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(ApiKeys::Table).to_owned())
            .await
    }
}
