//! The audit trail: one row per operation on a key, chained so that a deleted, inserted or
//! edited row is detected.
//!
//! Each [`AuditRecord`] carries a sequence number, the hash of the previous record and its own
//! hash over the previous hash and every field in a length-prefixed encoding. The first
//! record's previous hash is [`GENESIS_HASH`]. How a record is hashed is its [`AuditChain`]'s
//! business: in a sealed store (see [`crate::SecureKeyManager::seal`]) an HMAC-SHA-256 under a
//! key only the KMS can unwrap, so that rewriting the chain needs the KMS; in a store not
//! sealed yet, plain SHA-256. [`verify_chain_with`] recomputes the chain and names the first
//! record where it breaks; an [`AuditHead`] kept elsewhere (`SEQ:MAC`) also catches a
//! truncated or replaced chain. Rows never hold a secret: identities, outcomes, provider and
//! master-key references only.
//!
//! A row usually stands for one event. It may stand for several ([`AuditEvent::count`] > 1):
//! repeated cache hits of one identity by one principal within an aggregation interval, with
//! the first one's time in [`AuditEvent::first_at`] and the last one's in [`AuditEvent::at`];
//! or the events a full queue had to drop (operation [`DROPPED_OPERATION`]). Such a row's hash
//! also covers its count and first time.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

mod chain;

pub use chain::{AuditChain, AuditHead, ChainBreak, record_hash, verify_chain, verify_chain_with};

use crate::{ErrorKind, KeyIdentity, Result};

/// The previous hash of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The outcome of a key change's *intent* row, written before the change when the trail is in
/// another database than the keys: a crash between the two leaves at least the intent.
pub const INTENT_OUTCOME: &str = "intent";

/// The operation of a row that counts events dropped because the queue of rows waiting to be
/// written was full (fail-open mode only): a counted gap, never a silent one.
pub const DROPPED_OPERATION: &str = "dropped";

/// One operation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When (UTC, microseconds).
    pub at: DateTime<Utc>,
    /// What: `store`, `rotate`, `get`, `get_previous`, `list`, `versions`, `disable`,
    /// `enable`, `delete`, `rewrap`.
    pub operation: String,
    /// Whose key (absent for `list` and `rewrap`).
    pub identity: Option<KeyIdentity>,
    /// Who asked: the bound principal, or `-` for an unbound manager.
    pub principal: String,
    /// `ok`, the [`ErrorKind`] name of the failure, or `dropped` on a row counting dropped
    /// events.
    pub outcome: String,
    /// Provider of the key version involved, when known.
    pub provider: Option<String>,
    /// Master-key reference of the key version involved, when known.
    pub master_key_ref: Option<String>,
    /// A short non-secret note (`cache hit`, `cache miss`, `version 3`, counts...).
    pub detail: Option<String>,
    /// How many events this row stands for: 1 for a single event; more for repeated events
    /// aggregated over an interval, or for a row counting dropped events.
    pub count: u64,
    /// When a row stands for several events: when the first of them happened (`at` is when
    /// the last did). `None` for a single event.
    pub first_at: Option<DateTime<Utc>>,
    /// The record a key change left behind, and its revision (a deleted record's is the
    /// revision after its last): what a reader checks a record it loads against, so that
    /// an older copy of the record put back into the database is refused.
    pub record: Option<RecordRevision>,
}

/// Which record (a key record, or a branch key) a change produced at which revision (for a
/// branch, its version). Carried by the audit row of the change and covered by its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRevision {
    /// The record's id (a key record's or a branch's).
    pub id: uuid::Uuid,
    /// The revision the change produced.
    pub revision: u64,
}

impl AuditEvent {
    /// An event happening now.
    pub fn now(operation: &str, identity: Option<&KeyIdentity>, principal: &str) -> Self {
        AuditEvent {
            at: Utc::now().trunc_subsecs(6),
            operation: operation.to_owned(),
            identity: identity.cloned(),
            principal: principal.to_owned(),
            outcome: "ok".to_owned(),
            provider: None,
            master_key_ref: None,
            detail: None,
            count: 1,
            first_at: None,
            record: None,
        }
    }

    /// The row for `count` dropped events, the first at `first_at`, the last at `last_at`.
    pub fn dropped(count: u64, first_at: DateTime<Utc>, last_at: DateTime<Utc>) -> Self {
        let mut event = AuditEvent::now(DROPPED_OPERATION, None, "-")
            .detail(format!("{count} events dropped"))
            .aggregated(count, first_at);
        event.outcome = DROPPED_OPERATION.to_owned();
        event.at = last_at.trunc_subsecs(6);
        event
    }

    /// Makes this the row of `count` events, the first at `first_at` (this event's `at` being
    /// the last one's time).
    pub fn aggregated(mut self, count: u64, first_at: DateTime<Utc>) -> Self {
        self.count = count;
        self.first_at = Some(first_at.trunc_subsecs(6));
        self
    }

    /// Whether this row stands for something other than one single event (its hash then also
    /// covers the count and the first time).
    pub fn is_aggregate(&self) -> bool {
        self.count != 1 || self.first_at.is_some()
    }

    /// The intent row of this (key change) event: outcome [`INTENT_OUTCOME`], no detail, at
    /// the event's own (start) time.
    pub fn intent(&self) -> Self {
        AuditEvent {
            outcome: INTENT_OUTCOME.to_owned(),
            detail: None,
            ..self.clone()
        }
    }

    /// Sets the outcome from a result.
    pub fn outcome<T>(mut self, result: &Result<T>) -> Self {
        self.outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.kind().as_str().to_owned(),
        };
        self
    }

    /// Sets the outcome to a failure kind.
    pub fn failed(mut self, kind: ErrorKind) -> Self {
        self.outcome = kind.as_str().to_owned();
        self
    }

    /// Sets the detail note.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Names the record the change produced, at `revision`.
    pub fn record(mut self, id: uuid::Uuid, revision: u64) -> Self {
        self.record = Some(RecordRevision { id, revision });
        self
    }

    /// Sets provider and master-key reference.
    pub fn key_ref(mut self, provider: &str, master_key_ref: &str) -> Self {
        self.provider = Some(provider.to_owned());
        self.master_key_ref = Some(master_key_ref.to_owned());
        self
    }
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
    /// Hash of the previous record ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This record's hash (hex SHA-256).
    pub hash: String,
}

impl AuditRecord {
    /// Chains `event` after a record with `prev_seq` and `prev_hash`, with plain SHA-256 (see
    /// [`AuditChain::link`] for a sealed store's keyed chain).
    pub fn chain(prev_seq: u64, prev_hash: &str, event: AuditEvent) -> Self {
        AuditChain::plain().link(prev_seq, prev_hash, event)
    }
}

/// Which audit records to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this service.
    pub service: Option<String>,
    /// Only this user.
    pub user: Option<String>,
    /// Only this operation.
    pub operation: Option<String>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// Whether `r` passes.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let id = r.event.identity.as_ref();
        self.service
            .as_deref()
            .is_none_or(|s| id.is_some_and(|i| i.service() == s))
            && self
                .user
                .as_deref()
                .is_none_or(|u| id.and_then(KeyIdentity::user) == Some(u))
            && self
                .operation
                .as_deref()
                .is_none_or(|o| r.event.operation == o)
            && self.since.is_none_or(|t| r.event.at >= t)
    }
}

/// Storage of the audit trail (the store's repository, possibly on another database).
#[async_trait]
pub trait AuditLog: Send + Sync + fmt::Debug {
    /// Appends events at the end of the chain, atomically and in order, linked by `chain`.
    async fn append(&self, events: &[AuditEvent], chain: &AuditChain) -> Result<()>;

    /// Records matching the filter, oldest first.
    async fn records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    /// For each of `ids` that any successful change names ([`AuditEvent::record`], outcome
    /// `ok`), the highest revision named. The store answers from an index; this default
    /// reads the whole trail.
    async fn latest_revisions(&self, ids: &[uuid::Uuid]) -> Result<HashMap<uuid::Uuid, u64>> {
        let mut latest = HashMap::new();
        for r in self.records(&AuditFilter::default()).await? {
            if let Some(rr) = r.event.record
                && r.event.outcome == "ok"
                && ids.contains(&rr.id)
            {
                let at = latest.entry(rr.id).or_insert(rr.revision);
                *at = (*at).max(rr.revision);
            }
        }
        Ok(latest)
    }

    /// The record at `seq`, if there is one. The store reads one row; this default reads the
    /// whole trail.
    async fn record_at(&self, seq: u64) -> Result<Option<AuditRecord>> {
        Ok(self
            .records(&AuditFilter::default())
            .await?
            .into_iter()
            .find(|r| r.seq == seq))
    }

    /// The last record, if any. The store reads one row; this default reads the whole trail.
    async fn last(&self) -> Result<Option<AuditRecord>> {
        Ok(self.records(&AuditFilter::default()).await?.pop())
    }
}

/// An in-memory audit log, for tests.
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAuditLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn append(&self, events: &[AuditEvent], chain: &AuditChain) -> Result<()> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            let (seq, hash) = records
                .last()
                .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            records.push(chain.link(seq, &hash, e.clone()));
        }
        Ok(())
    }

    async fn records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(records
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl<T: AuditLog + ?Sized> AuditLog for Arc<T> {
    async fn append(&self, events: &[AuditEvent], chain: &AuditChain) -> Result<()> {
        (**self).append(events, chain).await
    }
    async fn records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        (**self).records(filter).await
    }
    async fn latest_revisions(&self, ids: &[uuid::Uuid]) -> Result<HashMap<uuid::Uuid, u64>> {
        (**self).latest_revisions(ids).await
    }
    async fn record_at(&self, seq: u64) -> Result<Option<AuditRecord>> {
        (**self).record_at(seq).await
    }
    async fn last(&self) -> Result<Option<AuditRecord>> {
        (**self).last().await
    }
}

#[cfg(test)]
mod tests;
