//! The `branch_keys` table: branch keys of `kms.hierarchy`, wrapped by the KMS.

use sea_orm::entity::prelude::*;

/// One `branch_keys` row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "branch_keys")]
pub(crate) struct Model {
    /// The branch (UUID text).
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) branch_id: String,
    /// The branch version.
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) version: i32,
    /// `store`, `service`, `project` or `user`.
    pub(crate) scope_kind: String,
    /// The name the branch serves, if any.
    pub(crate) scope_value: Option<String>,
    /// SHA-256 (hex) of kind and value, for lookups.
    pub(crate) scope_key: String,
    /// Provider that wrapped the branch key.
    pub(crate) provider: String,
    /// Master key it is wrapped under.
    pub(crate) master_key_ref: String,
    /// The wrapped branch key (not secret: useless without the master key).
    pub(crate) wrapped: Vec<u8>,
    /// HMAC binding the row to the key.
    pub(crate) commitment: Vec<u8>,
    pub(crate) created_at: DateTimeUtc,
}

/// `branch_keys` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
