//! Rollback resistance: a record put back from an older copy of the database is refused.
//!
//! A record's seal proves that its state was written by someone holding the state key, not
//! that it is the *latest* state written. The audit row of every change names the record and
//! the revision the change produced ([`crate::audit::RecordRevision`], under the row's MAC), so
//! a reader that loads a record asks the trail, in one indexed lookup for any number of
//! records, for the highest revision of it that a successful change produced. A record older
//! than that (a rotated key's, a disabled key's, a deleted key's record copied back, with its
//! versions and its old, valid seal) is refused with the integrity error. Hiding the later
//! row from the lookup means deleting or editing it, which breaks the keyed chain
//! (`keys audit --verify`); putting back the whole database, trail included, is what the
//! operator's anchor catches ([`super::anchor`]).
//!
//! The lookup runs after the record was read: a change committed by another writer in
//! between is told from a rollback by reading the record again (it moved on: a conflict,
//! tried again; it did not: a rollback).

use std::collections::HashMap;

use uuid::Uuid;

use crate::{Error, KeyRecord, LoadedCurrent, RecordSeal, Result, SecureKeyManager};

/// The highest revision the audit trail names for each of some records (read in one lookup).
#[derive(Debug, Default)]
pub(super) struct Latest(HashMap<Uuid, u64>);

impl SecureKeyManager {
    /// The highest revisions the trail names for `ids` (nothing without a trail).
    pub(super) async fn latest_revisions(&self, ids: &[Uuid]) -> Result<Latest> {
        let Some(audit) = &self.inner.audit else {
            return Ok(Latest::default());
        };
        if ids.is_empty() {
            return Ok(Latest::default());
        }
        audit.log().latest_revisions(ids).await.map(Latest)
    }

    /// [`SecureKeyManager::latest_revisions`] of the records a batched read found.
    pub(super) async fn latest_revisions_of(&self, rows: &[LoadedCurrent]) -> Result<Latest> {
        let ids: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| r.as_ref().and_then(|r| r.as_ref().ok()))
            .map(|(k, _)| k.id)
            .collect();
        self.latest_revisions(&ids).await
    }

    /// Checks a record as a reader or writer must before trusting it: its seal
    /// ([`SecureKeyManager::check_seal`]), and that the audit trail names no later revision
    /// of it. Returns the verified seal, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a seal that does not verify or a record rolled back;
    /// [`Error::Conflict`] when another writer changed the record since it was read.
    pub(super) async fn check_record<'k>(
        &self,
        key: &'k KeyRecord,
    ) -> Result<Option<&'k RecordSeal>> {
        let latest = self.latest_revisions(&[key.id]).await?;
        self.check_record_in(key, &latest).await
    }

    /// [`SecureKeyManager::check_record`] with the trail's revisions read beforehand (for a
    /// listing or a batch: one lookup for all).
    pub(super) async fn check_record_in<'k>(
        &self,
        key: &'k KeyRecord,
        latest: &Latest,
    ) -> Result<Option<&'k RecordSeal>> {
        let seal = self.check_seal(key).await?;
        let Some(&audited) = latest.0.get(&key.id) else {
            return Ok(seal);
        };
        if key.revision >= audited {
            return Ok(seal);
        }
        // Read again: a change that committed after the first read is not a rollback.
        let again = self.inner.repo.keys_by_id(&[key.id]).await?.pop();
        match again {
            Some(k) if k.revision == key.revision => {
                tracing::debug!(
                    identity = %key.identity,
                    stored = key.revision,
                    audited,
                    "a key record is older than the latest change the audit trail records for \
                     it: an older copy of it was put back"
                );
                Err(Error::Integrity {
                    identity: Some(format!(
                        "{} (the store holds revision {} of its record, the audit trail records \
                         revision {}: an older copy of the record was put back)",
                        key.identity, key.revision, audited
                    )),
                })
            }
            _ => Err(Error::Conflict {
                identity: key.identity.to_string(),
            }),
        }
    }
}
