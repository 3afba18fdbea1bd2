//! Persistence of key records and versions. No crypto happens here.

use std::fmt::{self, Debug};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, KeyChange, KeyIdentity, LoadedCurrent, Result};

/// Whether a key may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyState {
    /// Readable.
    Active,
    /// Kept, but refused on read until enabled again.
    Disabled,
}

impl KeyState {
    /// The stored name (`active`, `disabled`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Disabled => "disabled",
        }
    }

    /// Parses a stored name; anything unknown is a corrupted row.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(KeyState::Active),
            "disabled" => Ok(KeyState::Disabled),
            _ => Err(Error::integrity()),
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role of one version of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VersionState {
    /// The value handed out by `get`.
    Current,
    /// Replaced by a newer version, kept for a grace period.
    Previous,
    /// No longer readable.
    Retired,
}

impl VersionState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Current => "current",
            VersionState::Previous => "previous",
            VersionState::Retired => "retired",
        }
    }

    /// Parses a stored name; anything unknown is a corrupted row.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "current" => Ok(VersionState::Current),
            "previous" => Ok(VersionState::Previous),
            "retired" => Ok(VersionState::Retired),
            _ => Err(Error::integrity()),
        }
    }
}

/// One stored key (the `api_keys` row): identity, state and non-secret metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Stable id, made before the insert; part of every version's encryption context.
    pub id: Uuid,
    /// Who the key belongs to.
    pub identity: KeyIdentity,
    /// Active or disabled.
    pub state: KeyState,
    /// The version `get` returns.
    pub current_version: u32,
    /// Short non-secret hint of the current value (`…wxyz`), if the key is long enough.
    pub hint: Option<String>,
    /// When the key was first stored.
    pub created_at: DateTime<Utc>,
    /// When the key was last changed (new version, state).
    pub updated_at: DateTime<Utc>,
    /// When the key was last read (updated lazily: see `SecureKeyManager`).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the current value expires (reads are refused from then on), if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// Grows by one with every change of the record (new version, state, rewrap, sealing);
    /// part of what the seal authenticates.
    pub revision: u64,
    /// The authentication of the record's state, under the store's state key; `None` for a
    /// record written before its store was sealed.
    pub seal: Option<RecordSeal>,
}

impl KeyRecord {
    /// Whether the current value has expired at `now` (reads are refused from then on).
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The state a reader meets at `now`: `disabled`, else `expired` when the current value
    /// expired, else `active`. What listings show; [`KeyRecord::state`] is only the stored part.
    pub fn effective_state(&self, now: DateTime<Utc>) -> &'static str {
        match self.state {
            KeyState::Active if self.is_expired_at(now) => "expired",
            state => state.as_str(),
        }
    }
}

/// The authentication of a key record's state (see the manager's `seal` module): digests of
/// the versions that can be served, and a MAC over the record and those digests under the
/// store's state key, which the database does not hold. Nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSeal {
    /// Digest of the current version's state (number, expiry, provider, master key).
    pub current: Vec<u8>,
    /// Digest of the latest previous version's state (with its retirement time), when the
    /// key was rotated.
    pub previous: Option<Vec<u8>>,
    /// HMAC-SHA-256 of the record's state and both digests.
    pub mac: Vec<u8>,
}

/// One row of a key listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A record that could be read.
    Key(KeyRecord),
    /// A row that could not be read as a record (corrupted, or edited by hand).
    Broken(BrokenKeyRow),
}

/// What a key row that could not be read names, as stored, so that it can be reported (the
/// strings come from the database as they are: escape them before printing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenKeyRow {
    /// The row's id, as stored.
    pub id: String,
    /// The service, as stored.
    pub service: String,
    /// The user, as stored.
    pub user: Option<String>,
    /// The project, as stored.
    pub project: Option<String>,
}

impl BrokenKeyRow {
    /// Whether the row passes `filter` (compared as stored).
    pub fn matches(&self, filter: &KeyFilter) -> bool {
        filter.service.as_deref().is_none_or(|s| s == self.service)
            && filter
                .user
                .as_deref()
                .is_none_or(|u| Some(u) == self.user.as_deref())
            && filter
                .project
                .as_deref()
                .is_none_or(|p| Some(p) == self.project.as_deref())
    }
}

impl fmt::Display for BrokenKeyRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {:?}", self.service)?;
        if let Some(u) = &self.user {
            write!(f, ", user {u:?}")?;
        }
        if let Some(p) = &self.project {
            write!(f, ", project {p:?}")?;
        }
        Ok(())
    }
}

/// The audit row of a key change, to be appended in the change's own transaction, so that
/// the change and its row commit together or not at all (a crash cannot leave an unaudited
/// change). Passed only to a repository whose database also holds the audit trail.
#[derive(Debug, Clone)]
pub struct Journal {
    /// The row.
    pub event: crate::audit::AuditEvent,
    /// How it is linked to the trail.
    pub chain: crate::audit::AuditChain,
}

/// How a write moves a key record forward: only if its revision is still
/// `expected_revision` (optimistic concurrency), to `expected_revision + 1`, with this seal
/// (`None` in a store that is not sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    /// The revision the record must still have.
    pub expected_revision: u64,
    /// The record's seal after the write.
    pub seal: Option<RecordSeal>,
}

/// A store-wide key kept, wrapped by the KMS, in the store itself: the state key that
/// authenticates record state and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreKeyRecord {
    /// Which key (`state`).
    pub name: String,
    /// The store's id, part of the key's encryption context.
    pub store_id: Uuid,
    /// The key, wrapped by the KMS.
    pub wrapped: crate::WrappedKey,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// One sealed version of a key (the `api_key_versions` row).
#[derive(Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// The key this version belongs to.
    pub key_id: Uuid,
    /// Version number, from 1.
    pub version: u32,
    /// Current, previous or retired.
    pub state: VersionState,
    /// The encoded [`crate::Envelope`].
    pub envelope: Vec<u8>,
    /// Provider that wrapped the data key (also in the envelope; kept here for queries).
    pub provider: String,
    /// Master-key reference (also in the envelope; kept here for queries).
    pub master_key_ref: String,
    /// Non-secret hint of this version's value.
    pub hint: Option<String>,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
    /// When this value expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// For a previous version: the end of its grace period, after which it is retired.
    pub retire_at: Option<DateTime<Utc>>,
}

impl Debug for VersionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionRecord")
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("envelope_len", &self.envelope.len())
            .field("provider", &self.provider)
            .field("master_key_ref", &self.master_key_ref)
            .field("hint", &self.hint)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("retire_at", &self.retire_at)
            .finish()
    }
}

/// Which keys to list. `None` matches anything; `Some` matches exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// Only this service.
    pub service: Option<String>,
    /// Only this user.
    pub user: Option<String>,
    /// Only this project.
    pub project: Option<String>,
}

impl KeyFilter {
    /// Whether `identity` passes the filter.
    pub fn matches(&self, identity: &KeyIdentity) -> bool {
        self.service
            .as_deref()
            .is_none_or(|s| s == identity.service())
            && self
                .user
                .as_deref()
                .is_none_or(|u| Some(u) == identity.user())
            && self
                .project
                .as_deref()
                .is_none_or(|p| Some(p) == identity.project())
    }
}

/// Storage of keys and versions. Implementations hold no secrets and do no crypto; every
/// multi-row change is atomic.
#[async_trait]
pub trait KeyRepository: Send + Sync + Debug {
    /// The key and its current version, in one read.
    async fn load_current(
        &self,
        identity: &KeyIdentity,
    ) -> Result<Option<(KeyRecord, VersionRecord)>>;

    /// The key record alone.
    async fn find_key(&self, identity: &KeyIdentity) -> Result<Option<KeyRecord>>;

    /// Inserts a new key with its first version (which must be version 1, state current).
    /// [`Error::Conflict`] if the identity already exists.
    async fn create_key(
        &self,
        key: &KeyRecord,
        first: &VersionRecord,
        journal: Option<&Journal>,
    ) -> Result<()>;

    /// Adds `version` as the new current version of `key_id`, turning the old current version
    /// into a previous one that retires at `previous_retire_at`, if and only if the key's
    /// current version is still `expected_current` and its revision still
    /// `write.expected_revision` (optimistic concurrency); otherwise [`Error::Conflict`] and
    /// nothing changes. Updates the key's hint, `expires_at` and `updated_at` from the
    /// version, and its revision and seal from `write`.
    async fn add_version(
        &self,
        key_id: Uuid,
        expected_current: u32,
        version: &VersionRecord,
        previous_retire_at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<()>;

    /// Writes `changes` in one transaction: all of them or, on any error, none. `journal` is
    /// empty, or holds one audit row per change (in the same order), appended in the same
    /// transaction. Statements are chunked under the database's parameter limits.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] naming the identity of a [`KeyChange::Create`] that already exists
    /// or of a [`KeyChange::AddVersion`] whose key moved on (or the audit trail, when another
    /// writer took its next row); [`Error::NotFound`] for a version of a key that is gone;
    /// [`Error::InvalidInput`] for a malformed batch (two changes of one key, a first version
    /// that is not 1, a journal of another length). Nothing is written in any of these cases.
    async fn write_batch(&self, changes: &[KeyChange], journal: &[Journal]) -> Result<()>;

    /// [`KeyRepository::load_current`] of many identities, one result per identity in the
    /// same order, read in as few queries as the database allows (not one per key). A row
    /// that cannot be read is that identity's error; an unreachable database fails the whole
    /// call. The default reads them one by one.
    async fn load_current_many(&self, identities: &[KeyIdentity]) -> Result<Vec<LoadedCurrent>> {
        let mut out = Vec::with_capacity(identities.len());
        for identity in identities {
            out.push(match self.load_current(identity).await {
                Ok(found) => found.map(Ok),
                Err(e @ Error::Integrity { .. }) => Some(Err(e)),
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

    /// Every version of a key, oldest first (retired ones included, with empty envelopes).
    async fn list_versions(&self, key_id: Uuid) -> Result<Vec<VersionRecord>>;

    /// Retires the previous versions whose grace period ended by `now` (of one key, or of
    /// every key), wiping their envelopes. Returns how many were retired.
    async fn retire_due(&self, key_id: Option<Uuid>, now: DateTime<Utc>) -> Result<u64>;

    /// Up to `limit` readable (current or previous) versions, with their keys, that are not
    /// wrapped by `provider` under `master_key_ref`, in (key id, version) order after `after`.
    /// For rewrapping in batches.
    async fn versions_to_rewrap(
        &self,
        provider: &str,
        master_key_ref: &str,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<(KeyRecord, VersionRecord)>>;

    /// Replaces the envelope, provider and master-key reference of one version with those of
    /// `rewrapped`, if and only if it is still wrapped by `old_provider` under `old_ref`
    /// (compare-and-set, so concurrent rewraps cannot undo each other), and, with `key`, moves
    /// the key record forward as [`KeyWrite`] says in the same transaction (only if its
    /// revision is still the expected one). Returns whether it was replaced.
    async fn replace_wrapping(
        &self,
        rewrapped: &VersionRecord,
        old_provider: &str,
        old_ref: &str,
        key: Option<&KeyWrite>,
        journal: Option<&Journal>,
    ) -> Result<bool>;

    /// Sets the state of a key and moves it forward as `write` says, if its revision is still
    /// `write.expected_revision`. Returns whether a record was changed (false: no such key, or
    /// another writer changed it first).
    async fn set_state(
        &self,
        key_id: Uuid,
        state: KeyState,
        at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<bool>;

    /// Deletes a key and every version of it for good. Returns whether the key existed.
    async fn delete_key(&self, key_id: Uuid, journal: Option<&Journal>) -> Result<bool>;

    /// Keys matching the filter, ordered by service, user, project (absent first). A row that
    /// cannot be read as a record is listed as [`Listed::Broken`], so that one corrupted row
    /// hides none of the others.
    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Listed>>;

    /// Records last-use times (a batch); keys that no longer exist are ignored. A time older
    /// than the stored one does not move it back.
    async fn record_last_used(&self, uses: &[(Uuid, DateTime<Utc>)]) -> Result<()>;

    /// The records of these keys, in any order; keys that no longer exist are left out. One
    /// read of the `api_keys` table, used to check cached keys against the store (called
    /// with at most [`KEY_STAMPS_BATCH`] ids at a time).
    async fn keys_by_id(&self, key_ids: &[Uuid]) -> Result<Vec<KeyRecord>>;

    /// Whether the store holds no key at all.
    async fn is_empty(&self) -> Result<bool>;

    /// The store-wide key `name`, if it was made.
    async fn store_key(&self, name: &str) -> Result<Option<StoreKeyRecord>>;

    /// Inserts a store-wide key unless one of that name exists. Returns whether it was
    /// inserted (false: another writer made it first; read that one).
    async fn insert_store_key(&self, key: &StoreKeyRecord) -> Result<bool>;

    /// Replaces the wrapping of store key `name` with `rewrapped` if it is still wrapped by
    /// `old_provider` under `old_ref` (compare-and-set). Returns whether it was replaced.
    async fn replace_store_key_wrapping(
        &self,
        name: &str,
        rewrapped: &crate::WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool>;
}

/// Largest number of ids passed to one [`KeyRepository::keys_by_id`] call.
pub const KEY_STAMPS_BATCH: usize = 500;

/// Implements [`KeyRepository`] for a smart pointer by forwarding every method; the impl denies
/// `clippy::missing_trait_methods`, so a new trait method cannot be left out.
macro_rules! forward_repository {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: KeyRepository + ?Sized> KeyRepository for $ty {
            async fn load_current(
                &self,
                identity: &KeyIdentity,
            ) -> Result<Option<(KeyRecord, VersionRecord)>> {
                (**self).load_current(identity).await
            }
            async fn find_key(&self, identity: &KeyIdentity) -> Result<Option<KeyRecord>> {
                (**self).find_key(identity).await
            }
            async fn create_key(
                &self,
                key: &KeyRecord,
                first: &VersionRecord,
                journal: Option<&Journal>,
            ) -> Result<()> {
                (**self).create_key(key, first, journal).await
            }
            async fn add_version(
                &self,
                key_id: Uuid,
                expected_current: u32,
                version: &VersionRecord,
                previous_retire_at: DateTime<Utc>,
                write: &KeyWrite,
                journal: Option<&Journal>,
            ) -> Result<()> {
                (**self)
                    .add_version(
                        key_id,
                        expected_current,
                        version,
                        previous_retire_at,
                        write,
                        journal,
                    )
                    .await
            }
            async fn write_batch(&self, changes: &[KeyChange], journal: &[Journal]) -> Result<()> {
                (**self).write_batch(changes, journal).await
            }
            async fn load_current_many(
                &self,
                identities: &[KeyIdentity],
            ) -> Result<Vec<LoadedCurrent>> {
                (**self).load_current_many(identities).await
            }
            async fn list_versions(&self, key_id: Uuid) -> Result<Vec<VersionRecord>> {
                (**self).list_versions(key_id).await
            }
            async fn retire_due(&self, key_id: Option<Uuid>, now: DateTime<Utc>) -> Result<u64> {
                (**self).retire_due(key_id, now).await
            }
            async fn versions_to_rewrap(
                &self,
                provider: &str,
                master_key_ref: &str,
                after: Option<(Uuid, u32)>,
                limit: usize,
            ) -> Result<Vec<(KeyRecord, VersionRecord)>> {
                (**self)
                    .versions_to_rewrap(provider, master_key_ref, after, limit)
                    .await
            }
            async fn replace_wrapping(
                &self,
                rewrapped: &VersionRecord,
                old_provider: &str,
                old_ref: &str,
                key: Option<&KeyWrite>,
                journal: Option<&Journal>,
            ) -> Result<bool> {
                (**self)
                    .replace_wrapping(rewrapped, old_provider, old_ref, key, journal)
                    .await
            }
            async fn set_state(
                &self,
                key_id: Uuid,
                state: KeyState,
                at: DateTime<Utc>,
                write: &KeyWrite,
                journal: Option<&Journal>,
            ) -> Result<bool> {
                (**self).set_state(key_id, state, at, write, journal).await
            }
            async fn delete_key(&self, key_id: Uuid, journal: Option<&Journal>) -> Result<bool> {
                (**self).delete_key(key_id, journal).await
            }
            async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Listed>> {
                (**self).list_keys(filter).await
            }
            async fn record_last_used(&self, uses: &[(Uuid, DateTime<Utc>)]) -> Result<()> {
                (**self).record_last_used(uses).await
            }
            async fn keys_by_id(&self, key_ids: &[Uuid]) -> Result<Vec<KeyRecord>> {
                (**self).keys_by_id(key_ids).await
            }
            async fn is_empty(&self) -> Result<bool> {
                (**self).is_empty().await
            }
            async fn store_key(&self, name: &str) -> Result<Option<StoreKeyRecord>> {
                (**self).store_key(name).await
            }
            async fn insert_store_key(&self, key: &StoreKeyRecord) -> Result<bool> {
                (**self).insert_store_key(key).await
            }
            async fn replace_store_key_wrapping(
                &self,
                name: &str,
                rewrapped: &crate::WrappedKey,
                old_provider: &str,
                old_ref: &str,
            ) -> Result<bool> {
                (**self)
                    .replace_store_key_wrapping(name, rewrapped, old_provider, old_ref)
                    .await
            }
        }
    };
}

forward_repository!(Arc<T>);
forward_repository!(Box<T>);
