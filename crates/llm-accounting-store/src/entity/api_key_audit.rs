//! The `api_key_audit` table: the hash-chained audit trail.

use sea_orm::entity::prelude::*;

/// One `api_key_audit` row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_key_audit")]
pub(crate) struct Model {
    /// Position in the chain, from 1.
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) seq: i64,
    pub(crate) at: DateTimeUtc,
    pub(crate) operation: String,
    pub(crate) service: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) project: Option<String>,
    pub(crate) principal: String,
    pub(crate) outcome: String,
    pub(crate) provider: Option<String>,
    pub(crate) master_key_ref: Option<String>,
    pub(crate) detail: Option<String>,
    /// How many events the row stands for (1 for a single event).
    pub(crate) event_count: i64,
    /// When the first of several events happened (`at` is the last); null for one event.
    pub(crate) first_at: Option<DateTimeUtc>,
    /// The record a key change produced (a key record's or a branch's id), if any.
    pub(crate) record_id: Option<String>,
    /// The revision it produced (a branch's version).
    pub(crate) revision: Option<i64>,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// `api_key_audit` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
