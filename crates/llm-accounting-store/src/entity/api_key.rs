//! The `api_keys` table: one row per stored key.

use sea_orm::entity::prelude::*;

/// One `api_keys` row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub(crate) struct Model {
    /// UUID, hyphenated lowercase text.
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: String,
    /// `KeyIdentity::scope_key()`: unique, never NULL.
    #[sea_orm(unique)]
    pub(crate) scope_key: String,
    pub(crate) service: String,
    pub(crate) user_id: Option<String>,
    pub(crate) project: Option<String>,
    /// `active` or `disabled`.
    pub(crate) state: String,
    pub(crate) current_version: i32,
    pub(crate) hint: Option<String>,
    pub(crate) created_at: DateTimeUtc,
    pub(crate) updated_at: DateTimeUtc,
    pub(crate) last_used_at: Option<DateTimeUtc>,
    /// Expiry of the current value.
    pub(crate) expires_at: Option<DateTimeUtc>,
    /// Grows by one with every change of the record.
    pub(crate) revision: i64,
    /// Digest of the current version's state (sealed records).
    pub(crate) current_digest: Option<Vec<u8>>,
    /// Digest of the latest previous version's state (sealed, rotated records).
    pub(crate) previous_digest: Option<Vec<u8>>,
    /// HMAC of the record's state under the store's state key (sealed records).
    pub(crate) state_mac: Option<Vec<u8>>,
}

/// Relations of `api_keys`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {
    /// Every version of the key.
    #[sea_orm(has_many = "super::api_key_version::Entity")]
    Versions,
}

impl Related<super::api_key_version::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Versions.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
