//! Settings of a manager and of one write, and what writes and listings return.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::{CacheOptions, VersionRecord, VersionState};

/// Settings of a [`SecureKeyManager`](crate::SecureKeyManager).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerOptions {
    /// Cache of decrypted keys.
    pub cache: CacheOptions,
    /// `last_used_at` is written at most once per key per this interval (default 60 s).
    pub last_used_interval: Duration,
    /// After a rotation the previous value stays readable (`get_previous`) this long, then is
    /// retired and its ciphertext wiped (default 24 h).
    pub previous_grace: Duration,
    /// Refuse a store that is not sealed (default false: an unsealed store is read with a
    /// warning, so that a store written before sealing existed keeps working until
    /// `seal` is run). Set it once the store is sealed: then a database writer who deletes
    /// the state key and every seal (which makes the store look unsealed) gets refusals, not
    /// warnings.
    pub require_sealed: bool,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            cache: CacheOptions::default(),
            last_used_interval: Duration::from_secs(60),
            previous_grace: Duration::from_secs(24 * 3600),
            require_sealed: false,
        }
    }
}

/// How the audit trail writes its rows (see
/// [`SecureKeyManagerBuilder::audit_with`](crate::SecureKeyManagerBuilder::audit_with)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    /// Every operation, cache hits included, waits for its own row and fails if the row
    /// cannot be written (a get then returns no key). Off: rows are written in the
    /// background, and a failure to write them never fails an operation.
    pub fail_closed: bool,
    /// Fail-open: most rows waiting to be written (default 10,000), and most cache-hit
    /// aggregates open at once. An event that finds the queue full is dropped and counted:
    /// one `dropped` row records how many, where they went missing.
    pub max_pending: usize,
    /// Fail-open: cache hits of one identity by one principal within this interval become
    /// one row with their count and their first and last time (default 10 s).
    pub aggregate_interval: Duration,
    /// Fail-open: one row per cache hit instead of aggregates.
    pub every_hit: bool,
    /// The audit log is the key repository's own database: a key change and its row commit in
    /// one transaction (a crash cannot leave an unaudited change). Off (the default, and for
    /// a log in another database): an intent row is written before the change and the outcome
    /// after, so a crash leaves at least the intent.
    pub same_transaction: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            fail_closed: false,
            max_pending: 10_000,
            aggregate_interval: Duration::from_secs(10),
            every_hit: false,
            same_transaction: false,
        }
    }
}

/// Options of one store or rotate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// When the new value expires: from then on `get` refuses it with [`Error::Expired`](crate::Error::Expired).
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

/// One version of a key, without its ciphertext (for listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Current, previous or retired.
    pub state: VersionState,
    /// Provider that wrapped the data key.
    pub provider: String,
    /// Master key the data key is wrapped under.
    pub master_key_ref: String,
    /// Non-secret hint of the value.
    pub hint: Option<String>,
    /// When this version was stored.
    pub created_at: chrono::DateTime<Utc>,
    /// When the value expires, if it does.
    pub expires_at: Option<chrono::DateTime<Utc>>,
    /// For a previous version: when its grace period ends.
    pub retire_at: Option<chrono::DateTime<Utc>>,
}

impl From<&VersionRecord> for VersionInfo {
    fn from(v: &VersionRecord) -> Self {
        VersionInfo {
            version: v.version,
            state: v.state,
            provider: v.provider.clone(),
            master_key_ref: v.master_key_ref.clone(),
            hint: v.hint.clone(),
            created_at: v.created_at,
            expires_at: v.expires_at,
            retire_at: v.retire_at,
        }
    }
}

/// What a store or rotate produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The key's record id.
    pub key_id: Uuid,
    /// The version just written (1 for a new key).
    pub version: u32,
    /// Whether the identity was new.
    pub created: bool,
    /// The record's revision after the write (1 for a new key).
    pub revision: u64,
}
