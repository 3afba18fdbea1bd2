//! The audit trail: one row per operation on a key, hash-chained so that a deleted, inserted or
//! edited row is detected.
//!
//! Each [`AuditRecord`] carries a sequence number, the hash of the previous record and its own
//! hash: SHA-256 over the previous hash and every field in a length-prefixed encoding. The
//! first record's previous hash is [`GENESIS_HASH`]. [`verify_chain`] recomputes the chain and
//! names the first record where it breaks. Rows never hold a secret: identities, outcomes,
//! provider and master-key references only.
//!
//! A row usually stands for one event. It may stand for several ([`AuditEvent::count`] > 1):
//! repeated cache hits of one identity by one principal within an aggregation interval, with
//! the first one's time in [`AuditEvent::first_at`] and the last one's in [`AuditEvent::at`];
//! or the events a full queue had to drop (operation [`DROPPED_OPERATION`]). Such a row's hash
//! also covers its count and first time.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};

use crate::{ErrorKind, KeyIdentity, Result};

/// The previous hash of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
    /// Chains `event` after a record with `prev_seq` and `prev_hash`.
    pub fn chain(prev_seq: u64, prev_hash: &str, event: AuditEvent) -> Self {
        let seq = prev_seq + 1;
        let hash = record_hash(seq, prev_hash, &event);
        AuditRecord {
            seq,
            event,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

fn put(h: &mut Sha256, field: Option<&str>) {
    match field {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// The hash of a record: SHA-256 over the previous hash, the sequence number and every field,
/// each length-prefixed (absent fields marked as such). The count and first time of an
/// aggregated row follow the other fields; a single event's encoding stops before them, so
/// that rows written before aggregation existed keep their hashes.
pub fn record_hash(seq: u64, prev_hash: &str, e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    h.update(b"llm-accounting/audit/v1");
    put(&mut h, Some(prev_hash));
    h.update(seq.to_be_bytes());
    put(&mut h, Some(&e.at.timestamp_micros().to_string()));
    put(&mut h, Some(&e.operation));
    put(&mut h, e.identity.as_ref().map(KeyIdentity::service));
    put(&mut h, e.identity.as_ref().and_then(KeyIdentity::user));
    put(&mut h, e.identity.as_ref().and_then(KeyIdentity::project));
    put(&mut h, Some(&e.principal));
    put(&mut h, Some(&e.outcome));
    put(&mut h, e.provider.as_deref());
    put(&mut h, e.master_key_ref.as_deref());
    put(&mut h, e.detail.as_deref());
    if e.is_aggregate() {
        put(&mut h, Some(&e.count.to_string()));
        put(
            &mut h,
            e.first_at
                .map(|t| t.timestamp_micros().to_string())
                .as_deref(),
        );
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number of the first record that does not fit (or that is missing).
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit chain broken at record {}: {}",
            self.seq, self.reason
        )
    }
}

/// Verifies a whole chain, oldest first, from record 1.
///
/// # Errors
///
/// The first break: a missing or extra record (sequence gap or repeat), a record whose
/// previous hash is not its predecessor's hash (deleted or inserted rows), or whose own hash
/// does not match its fields (an edited row).
pub fn verify_chain(records: &[AuditRecord]) -> std::result::Result<u64, ChainBreak> {
    let mut prev_hash = GENESIS_HASH.to_owned();
    for (i, r) in records.iter().enumerate() {
        let expected = i as u64 + 1;
        if r.seq != expected {
            return Err(ChainBreak {
                seq: expected,
                reason: format!("record {expected} is missing (found {} next)", r.seq),
            });
        }
        if r.prev_hash != prev_hash {
            return Err(ChainBreak {
                seq: r.seq,
                reason: "it does not follow the previous record (a record before it was deleted, \
                         inserted or replaced)"
                    .into(),
            });
        }
        if record_hash(r.seq, &r.prev_hash, &r.event) != r.hash {
            return Err(ChainBreak {
                seq: r.seq,
                reason: "its contents were changed after it was written".into(),
            });
        }
        prev_hash.clone_from(&r.hash);
    }
    Ok(records.len() as u64)
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
    /// Appends events at the end of the chain, atomically and in order.
    async fn append(&self, events: &[AuditEvent]) -> Result<()>;

    /// Records matching the filter, oldest first.
    async fn records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
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
    async fn append(&self, events: &[AuditEvent]) -> Result<()> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            let (seq, hash) = records
                .last()
                .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            records.push(AuditRecord::chain(seq, &hash, e.clone()));
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
    async fn append(&self, events: &[AuditEvent]) -> Result<()> {
        (**self).append(events).await
    }
    async fn records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        (**self).records(filter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let id = KeyIdentity::from_parts("openai", Some(&format!("u{i}")), None).expect("id");
            let (seq, hash) = out
                .last()
                .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            out.push(AuditRecord::chain(
                seq,
                &hash,
                AuditEvent::now("get", Some(&id), "-"),
            ));
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), Ok(5));
        assert_eq!(verify_chain(&[]), Ok(0));
    }

    /// A fixed cache-hit event at 2026-11-30T00:00:00.123456Z.
    fn fixed_hit() -> AuditEvent {
        let id = KeyIdentity::from_parts("openai", Some("alice"), None).expect("id");
        let mut e = AuditEvent::now("get", Some(&id), "-").detail("cache hit");
        e.at = DateTime::from_timestamp_micros(1_795_996_800_123_456).expect("time");
        e
    }

    #[test]
    fn a_single_event_hashes_as_before_aggregation_existed() {
        // Computed independently from the v1 encoding: rows written before aggregation rows
        // existed must still verify.
        assert_eq!(
            record_hash(1, GENESIS_HASH, &fixed_hit()),
            "fa2813ba3fcc71acc7522015212bad86697d7c8f32ffe2743a6f2676d4fa03d2"
        );
        let first = DateTime::from_timestamp_micros(1_795_996_795_123_456).expect("time");
        assert_eq!(
            record_hash(1, GENESIS_HASH, &fixed_hit().aggregated(42, first)),
            "e8cdb68d7d64480601b9cc32f494f12f8a2a1905856124864fadfdd97738a2a9",
            "an aggregated row's hash covers its count and first time"
        );
    }

    #[test]
    fn an_edited_count_or_first_time_is_found() {
        let first = fixed_hit().at - chrono::Duration::seconds(5);
        let record = AuditRecord::chain(0, GENESIS_HASH, fixed_hit().aggregated(42, first));
        assert_eq!(verify_chain(std::slice::from_ref(&record)), Ok(1));
        let edits: [fn(&mut AuditEvent); 4] = [
            |e| e.count = 41,
            |e| e.count = 1,
            |e| e.first_at = None,
            |e| e.first_at = e.first_at.map(|t| t + chrono::Duration::microseconds(1)),
        ];
        for edit in edits {
            let mut edited = record.clone();
            edit(&mut edited.event);
            assert_eq!(
                verify_chain(&[edited.clone()]).map_err(|b| b.seq),
                Err(1),
                "{:?}",
                edited.event
            );
        }
        // Turning a single event into an aggregate is found too.
        let single = AuditRecord::chain(0, GENESIS_HASH, fixed_hit());
        let mut inflated = single.clone();
        inflated.event.count = 1000;
        assert!(verify_chain(&[inflated]).is_err());
    }

    #[test]
    fn a_dropped_row_counts_and_spans_the_dropped_events() {
        let first = fixed_hit().at;
        let last = first + chrono::Duration::milliseconds(1500);
        let e = AuditEvent::dropped(17, first, last);
        assert_eq!(e.operation, DROPPED_OPERATION);
        assert_eq!(e.outcome, "dropped");
        assert_eq!((e.count, e.first_at, e.at), (17, Some(first), last));
        assert_eq!(e.detail.as_deref(), Some("17 events dropped"));
        assert!(e.is_aggregate() && e.identity.is_none());
    }

    #[test]
    fn deleted_inserted_and_edited_rows_are_named() {
        let mut deleted = chain(5);
        deleted.remove(2);
        assert_eq!(verify_chain(&deleted).map_err(|b| b.seq), Err(3));

        // A deleted row with the later ones renumbered: the hash link breaks.
        let mut renumbered = chain(5);
        renumbered.remove(2);
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert_eq!(verify_chain(&renumbered).map_err(|b| b.seq), Err(3));

        let mut inserted = chain(5);
        let forged = AuditRecord::chain(
            2,
            "f".repeat(64).as_str(),
            AuditEvent::now("get", None, "-"),
        );
        inserted.insert(2, forged);
        assert!(verify_chain(&inserted).is_err());

        let mut edited = chain(5);
        edited[3].event.outcome = "not_found".into();
        let b = verify_chain(&edited).expect_err("edited");
        assert_eq!(b.seq, 4);
        assert!(b.to_string().contains("changed"), "{b}");

        // Editing and re-hashing one row breaks the link of the next.
        let mut rehashed = chain(5);
        rehashed[1].event.principal = "mallory".into();
        rehashed[1].hash = record_hash(2, &rehashed[1].prev_hash, &rehashed[1].event);
        assert_eq!(verify_chain(&rehashed).map_err(|b| b.seq), Err(3));
    }
}
