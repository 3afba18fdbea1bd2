//! The `api_key_versions` table: the sealed versions of every key.

use sea_orm::entity::prelude::*;

/// One `api_key_versions` row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_key_versions")]
pub(crate) struct Model {
    /// `api_keys.id` of the key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) key_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) version: i32,
    /// `current`, `previous` or `retired`.
    pub(crate) state: String,
    /// The encoded envelope (ciphertext, nonce, wrapped data key, ...).
    pub(crate) envelope: Vec<u8>,
    pub(crate) provider: String,
    pub(crate) master_key_ref: String,
    pub(crate) hint: Option<String>,
    pub(crate) created_at: DateTimeUtc,
    pub(crate) expires_at: Option<DateTimeUtc>,
    /// End of a previous version's grace period.
    pub(crate) retire_at: Option<DateTimeUtc>,
}

/// Relations of `api_key_versions`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {
    /// The key this version belongs to.
    #[sea_orm(
        belongs_to = "super::api_key::Entity",
        from = "Column::KeyId",
        to = "super::api_key::Column::Id",
        on_delete = "Cascade"
    )]
    Key,
}

impl Related<super::api_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Key.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
