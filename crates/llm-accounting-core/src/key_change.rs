//! Batches of key writes ([`KeyRepository::write_batch`](crate::KeyRepository::write_batch)):
//! what one change of a batch is, and what a batched read returns.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{KeyIdentity, KeyRecord, KeyWrite, Result, VersionRecord};

/// One change of a batch written in one transaction: a new key, or a new current version of
/// an existing one. Each has the meaning of the single-key method it is named after.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeyChange {
    /// A new key with its first version (version 1, current), as
    /// [`KeyRepository::create_key`](crate::KeyRepository::create_key).
    Create {
        /// The new record.
        key: KeyRecord,
        /// Its first version.
        first: VersionRecord,
    },
    /// A new current version of an existing key, as
    /// [`KeyRepository::add_version`](crate::KeyRepository::add_version).
    AddVersion {
        /// The key's identity (to name it in a conflict).
        identity: KeyIdentity,
        /// The current version the key must still have.
        expected_current: u32,
        /// The new version (its `key_id` names the key).
        version: VersionRecord,
        /// When the version it replaces retires.
        previous_retire_at: DateTime<Utc>,
        /// How the record moves forward (expected revision, new seal).
        write: KeyWrite,
    },
}

impl KeyChange {
    /// The id of the key the change writes.
    pub fn key_id(&self) -> Uuid {
        match self {
            KeyChange::Create { key, .. } => key.id,
            KeyChange::AddVersion { version, .. } => version.key_id,
        }
    }

    /// The identity of the key the change writes.
    pub fn identity(&self) -> &KeyIdentity {
        match self {
            KeyChange::Create { key, .. } => &key.identity,
            KeyChange::AddVersion { identity, .. } => identity,
        }
    }
}

/// What [`KeyRepository::load_current_many`](crate::KeyRepository::load_current_many) found
/// for one identity: `None` when there is no such key, `Some(Err(_))` (the integrity error)
/// for a row that cannot be read or lacks its current version, otherwise the record and its
/// current version.
pub type LoadedCurrent = Option<Result<(KeyRecord, VersionRecord)>>;
