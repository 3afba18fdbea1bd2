//! The `store_keys` table: store-wide keys (the state key), wrapped by the KMS.

use sea_orm::entity::prelude::*;

/// One `store_keys` row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "store_keys")]
pub(crate) struct Model {
    /// Which key (`state`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) name: String,
    /// The store's id (UUID text), part of the key's encryption context.
    pub(crate) store_id: String,
    /// Provider that wrapped the key.
    pub(crate) provider: String,
    /// Master key it is wrapped under.
    pub(crate) master_key_ref: String,
    /// The wrapped key (not secret: useless without the master key).
    pub(crate) wrapped: Vec<u8>,
    pub(crate) created_at: DateTimeUtc,
}

/// `store_keys` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
