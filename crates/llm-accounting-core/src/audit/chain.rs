//! How records are chained: the encoding, plain and keyed hashes, verification, and heads.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::digest::Update;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{AuditEvent, AuditRecord, GENESIS_HASH};
use crate::{KeyIdentity, Result};

fn put(h: &mut impl Update, field: Option<&str>) {
    match field {
        None => h.update(&[0u8]),
        Some(s) => {
            h.update(&[1u8]);
            h.update(&(s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// Feeds a record's encoding to a hash or a MAC: the previous hash, the sequence number and
/// every field, each length-prefixed (absent fields marked as such). The count and first time
/// of an aggregated row follow the other fields; a single event's encoding stops before them,
/// so that rows written before aggregation existed keep their hashes. The record a change
/// produced comes last, behind a tag of its own (so that it cannot be read as an aggregate's
/// fields), and only when there is one: rows written before it existed keep their hashes too.
fn encode(h: &mut impl Update, seq: u64, prev_hash: &str, e: &AuditEvent) {
    put(h, Some(prev_hash));
    h.update(&seq.to_be_bytes());
    put(h, Some(&e.at.timestamp_micros().to_string()));
    put(h, Some(&e.operation));
    put(h, e.identity.as_ref().map(KeyIdentity::service));
    put(h, e.identity.as_ref().and_then(KeyIdentity::user));
    put(h, e.identity.as_ref().and_then(KeyIdentity::project));
    put(h, Some(&e.principal));
    put(h, Some(&e.outcome));
    put(h, e.provider.as_deref());
    put(h, e.master_key_ref.as_deref());
    put(h, e.detail.as_deref());
    if e.is_aggregate() {
        put(h, Some(&e.count.to_string()));
        put(
            h,
            e.first_at
                .map(|t| t.timestamp_micros().to_string())
                .as_deref(),
        );
    }
    if let Some(record) = &e.record {
        put(h, Some("record"));
        put(h, Some(&record.id.to_string()));
        put(h, Some(&record.revision.to_string()));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The plain hash of a record: SHA-256 of its encoding (see the module docs).
pub fn record_hash(seq: u64, prev_hash: &str, e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    Update::update(&mut h, b"llm-accounting/audit/v1");
    encode(&mut h, seq, prev_hash, e);
    hex(&h.finalize())
}

/// How the records of a trail are hashed: plain SHA-256, or HMAC-SHA-256 under the audit key
/// of a sealed store (derived from its state key, which only the KMS can unwrap). The key is
/// wiped on drop; `Debug` shows only which kind.
#[derive(Clone, Default)]
pub struct AuditChain {
    key: Option<Arc<Zeroizing<[u8; 32]>>>,
}

impl fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_keyed() {
            "AuditChain(keyed, [REDACTED])"
        } else {
            "AuditChain(plain)"
        })
    }
}

impl AuditChain {
    /// Plain SHA-256 links: a store that is not sealed.
    pub fn plain() -> Self {
        AuditChain { key: None }
    }

    /// HMAC-SHA-256 links under `key`.
    pub(crate) fn keyed(key: &[u8; 32]) -> Self {
        AuditChain {
            key: Some(Arc::new(Zeroizing::new(*key))),
        }
    }

    /// Whether links are keyed.
    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    /// The hash of a record as this chain makes it.
    pub fn hash(&self, seq: u64, prev_hash: &str, e: &AuditEvent) -> String {
        match &self.key {
            None => record_hash(seq, prev_hash, e),
            Some(key) => keyed_hash(key, seq, prev_hash, e),
        }
    }

    /// Chains `event` after a record with `prev_seq` and `prev_hash`.
    pub fn link(&self, prev_seq: u64, prev_hash: &str, event: AuditEvent) -> AuditRecord {
        let seq = prev_seq + 1;
        let hash = self.hash(seq, prev_hash, &event);
        AuditRecord {
            seq,
            event,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

fn keyed_hash(key: &[u8; 32], seq: u64, prev_hash: &str, e: &AuditEvent) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    Update::update(&mut mac, b"llm-accounting/audit/keyed/v1");
    encode(&mut mac, seq, prev_hash, e);
    hex(&mac.finalize().into_bytes())
}

/// The last record of a trail, `SEQ:MAC` (the MAC in lowercase hex), for an operator to keep
/// outside the database: [`crate::SecureKeyManager::verify_audit_head`] given it then also
/// catches a trail cut short before that record, or replaced as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The record's sequence number.
    pub seq: u64,
    /// Its hash (the MAC in a sealed store).
    pub mac: String,
}

impl fmt::Display for AuditHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.mac)
    }
}

impl std::str::FromStr for AuditHead {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            crate::Error::invalid(
                "audit head",
                "expected SEQ:MAC, as an audit head displays: a record number, a colon, 64 \
                 lowercase hex digits",
            )
        };
        let (seq, mac) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let hex_ok = mac.len() == 64
            && mac
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        // `0:` + the genesis hash stands for an empty trail.
        if !hex_ok || (seq == 0 && mac != GENESIS_HASH) {
            return Err(bad());
        }
        Ok(AuditHead {
            seq,
            mac: mac.to_owned(),
        })
    }
}

impl AuditHead {
    /// The head of `records` (oldest first); `0:` + [`GENESIS_HASH`] for an empty trail.
    pub fn of(records: &[AuditRecord]) -> Self {
        records.last().map_or_else(
            || AuditHead {
                seq: 0,
                mac: GENESIS_HASH.to_owned(),
            },
            |r| AuditHead {
                seq: r.seq,
                mac: r.hash.clone(),
            },
        )
    }

    /// Checks that `records` (a verified chain, oldest first) still holds this head.
    ///
    /// # Errors
    ///
    /// The break: the record is missing (the trail was cut short) or is another one (the
    /// trail was replaced).
    pub fn check(&self, records: &[AuditRecord]) -> std::result::Result<(), ChainBreak> {
        if self.seq == 0 {
            // The empty trail's head: every trail grew from it.
            return Ok(());
        }
        let found = usize::try_from(self.seq - 1)
            .ok()
            .and_then(|i| records.get(i));
        match found {
            None => Err(ChainBreak {
                seq: self.seq,
                reason: format!(
                    "the expected head record {} is missing: the trail ends at {} (cut short)",
                    self.seq,
                    records.len()
                ),
            }),
            Some(r) if r.hash != self.mac => Err(ChainBreak {
                seq: self.seq,
                reason: "it is not the expected head record (the trail was replaced)".into(),
            }),
            Some(_) => Ok(()),
        }
    }
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

/// Verifies a whole plain chain, oldest first, from record 1 (see [`verify_chain_with`]).
///
/// # Errors
///
/// The first break, as [`verify_chain_with`].
pub fn verify_chain(records: &[AuditRecord]) -> std::result::Result<u64, ChainBreak> {
    verify_chain_with(records, &AuditChain::plain())
}

/// Verifies a whole chain, oldest first, from record 1.
///
/// With a keyed `chain` (a sealed store), records written before the store was sealed may
/// form a plain prefix, protected by the keyed record that follows it; after the first keyed
/// record every record must be keyed, and so must the last one: a plain record there (cleared
/// or recomputed without the key) is refused like a wrong one.
///
/// # Errors
///
/// The first break: a missing or extra record (sequence gap or repeat), a record whose
/// previous hash is not its predecessor's hash (deleted or inserted rows), or whose own hash
/// does not match its fields (an edited row).
pub fn verify_chain_with(
    records: &[AuditRecord],
    chain: &AuditChain,
) -> std::result::Result<u64, ChainBreak> {
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut keyed_seen = false;
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
        let keyed_ok = chain.is_keyed() && chain.hash(r.seq, &r.prev_hash, &r.event) == r.hash;
        let plain_ok =
            !keyed_ok && !keyed_seen && record_hash(r.seq, &r.prev_hash, &r.event) == r.hash;
        if !keyed_ok && !plain_ok {
            return Err(ChainBreak {
                seq: r.seq,
                reason: if chain.is_keyed() && keyed_seen {
                    "its contents were changed after it was written, or its MAC is missing"
                } else {
                    "its contents were changed after it was written"
                }
                .into(),
            });
        }
        keyed_seen |= keyed_ok;
        prev_hash.clone_from(&r.hash);
    }
    if chain.is_keyed()
        && let Some(last) = records.last()
        && !keyed_seen
    {
        return Err(ChainBreak {
            seq: last.seq,
            reason: "the store is sealed, but no record after it was sealed carries a MAC (the \
                     trail was cut back, or recomputed without the key)"
                .into(),
        });
    }
    Ok(records.len() as u64)
}
