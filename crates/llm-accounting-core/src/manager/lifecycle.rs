//! The life of a key: its versions, listing, disable, enable and delete.

use chrono::{SubsecRound, Utc};

use super::audit::ChangeAudit;
use crate::audit::{AuditEvent, RecordRevision};
use crate::seal::{check_current, check_previous};
use crate::{
    BrokenKeyRow, Error, KeyFilter, KeyIdentity, KeyRecord, KeyState, KeyWrite, Listed, Result,
    SecureKeyManager, VersionInfo,
};

/// A key listing: the keys whose records could be read and verified, and the others.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct KeyListing {
    /// Keys, ordered by service, user, project (absent parts first).
    pub keys: Vec<KeyRecord>,
    /// Rows that could not be read, or whose state does not verify: corrupted, or changed
    /// outside llm-accounting. Their names are as stored: escape them before printing.
    pub broken: Vec<BrokenKey>,
    /// With [`ListOptions::versions`](crate::ListOptions::versions): the versions of each key
    /// of `keys`, in the same order. Empty otherwise.
    pub versions: Vec<Vec<VersionInfo>>,
    /// How many readable keys matched the filter before
    /// [`ListOptions::expiring_within`](crate::ListOptions::expiring_within) left some out
    /// (from [`SecureKeyManager::list_with`]; for a message such as "none of the 12 stored
    /// expires soon").
    pub matched: usize,
}

/// A listed key that cannot be trusted.
#[derive(Debug, Clone)]
pub struct BrokenKey {
    /// What the row names, as stored.
    pub row: BrokenKeyRow,
    /// Why it cannot be trusted (the integrity error).
    pub error: Error,
}

impl SecureKeyManager {
    /// Every version of a key with its state, dates, hint and master key; never a value.
    /// Previous versions whose grace period ended are retired first.
    pub async fn versions(&self, identity: &KeyIdentity) -> Result<Vec<VersionInfo>> {
        let result = self.versions_unaudited(identity).await;
        let event = self.event("versions", Some(identity)).outcome(&result);
        self.audited(event, result).await
    }

    async fn versions_unaudited(&self, identity: &KeyIdentity) -> Result<Vec<VersionInfo>> {
        self.check_read(identity)?;
        let key = self.require_key(identity).await?;
        let seal = self
            .check_record(&key)
            .await
            .map_err(|e| e.with_identity(identity))?;
        self.inner.repo.retire_due(Some(key.id), Utc::now()).await?;
        let versions = self.inner.repo.list_versions(key.id).await?;
        if let Some(seal) = seal {
            // The versions that can be served must be the ones written.
            let current = versions.iter().find(|v| v.version == key.current_version);
            let previous = versions
                .iter()
                .filter(|v| v.version < key.current_version)
                .max_by_key(|v| v.version);
            let checked = current
                .ok_or_else(Error::integrity)
                .and_then(|c| check_current(seal, c))
                .and_then(|()| match (previous, &seal.previous) {
                    (Some(p), Some(_)) => check_previous(seal, p),
                    (None, None) => Ok(()),
                    _ => Err(Error::integrity()),
                });
            checked.map_err(|e| e.with_identity(identity))?;
        }
        Ok(versions.iter().map(VersionInfo::from).collect())
    }

    /// Keys matching `filter`, with non-secret metadata only. Every key whose record can be
    /// read and whose state verifies is listed; the others are named in
    /// [`KeyListing::broken`], so that one corrupted or tampered row hides none of the rest.
    pub async fn list(&self, filter: &KeyFilter) -> Result<KeyListing> {
        let result = self.list_unaudited(filter).await;
        let event = self.event("list", None).outcome(&result);
        let event = match &result {
            Ok(l) if l.broken.is_empty() => event.detail(format!("{} keys", l.keys.len())),
            Ok(l) => event.failed(crate::ErrorKind::Integrity).detail(format!(
                "{} keys, {} broken",
                l.keys.len(),
                l.broken.len()
            )),
            Err(_) => event,
        };
        self.audited(event, result).await
    }

    async fn list_unaudited(&self, filter: &KeyFilter) -> Result<KeyListing> {
        let mut listing = KeyListing::default();
        let rows = self.inner.repo.list_keys(filter).await?;
        let ids: Vec<uuid::Uuid> = rows
            .iter()
            .filter_map(|r| match r {
                Listed::Key(k) => Some(k.id),
                Listed::Broken(_) => None,
            })
            .collect();
        let latest = self.latest_revisions(&ids).await?;
        for row in rows {
            match row {
                Listed::Key(k) => match self.check_record_in(&k, &latest).await {
                    Ok(_) => listing.keys.push(k),
                    Err(error) => listing.broken.push(BrokenKey {
                        row: BrokenKeyRow {
                            id: k.id.to_string(),
                            service: k.identity.service().to_owned(),
                            user: k.identity.user().map(str::to_owned),
                            project: k.identity.project().map(str::to_owned),
                        },
                        error: error.with_identity(&k.identity),
                    }),
                },
                Listed::Broken(row) => listing.broken.push(BrokenKey {
                    row,
                    error: Error::integrity(),
                }),
            }
        }
        if let Some(p) = &self.principal {
            listing.keys.retain(|k| p.may_read(&k.identity));
            // A row whose names do not even parse is nobody's to see through a bound handle.
            listing.broken.retain(|b| {
                KeyIdentity::from_parts(
                    &b.row.service,
                    b.row.user.as_deref(),
                    b.row.project.as_deref(),
                )
                .is_ok_and(|id| p.may_read(&id))
            });
        }
        Ok(listing)
    }

    /// Refuses reads of the key until [`SecureKeyManager::enable`]; evicts it from the cache.
    pub async fn disable(&self, identity: &KeyIdentity) -> Result<()> {
        self.set_state(identity, KeyState::Disabled).await
    }

    /// Makes a disabled key readable again.
    pub async fn enable(&self, identity: &KeyIdentity) -> Result<()> {
        self.set_state(identity, KeyState::Active).await
    }

    async fn set_state(&self, identity: &KeyIdentity, state: KeyState) -> Result<()> {
        let op = if state == KeyState::Active {
            "enable"
        } else {
            "disable"
        };
        let event = self.event(op, Some(identity));
        let plan = self.begin_change(&event).await?;
        let result = self
            .set_state_unaudited(identity, state, &plan, &event)
            .await;
        let event = match &result {
            Ok(rr) => event.record(rr.id, rr.revision),
            Err(_) => event.outcome(&result),
        };
        self.end_change(plan, event, result.map(drop)).await
    }

    /// Returns the record and the revision the change produced.
    async fn set_state_unaudited(
        &self,
        identity: &KeyIdentity,
        state: KeyState,
        plan: &ChangeAudit,
        event: &AuditEvent,
    ) -> Result<RecordRevision> {
        self.check_write(identity)?;
        let mut attempt = 0;
        let produced = loop {
            attempt += 1;
            let key = self.require_key(identity).await?;
            // A write re-seals the record: never over state that does not verify.
            let seal = match self.check_record(&key).await {
                Ok(seal) => seal.cloned(),
                // Changed by another writer since it was read: read it again.
                Err(Error::Conflict { .. }) if attempt < super::conflict::MAX_WRITE_ATTEMPTS => {
                    continue;
                }
                Err(e) => return Err(e.with_identity(identity)),
            };
            let next = KeyRecord {
                state,
                revision: key.revision + 1,
                seal: None,
                ..key.clone()
            };
            let seal = match (seal, self.state_keys(false).await?) {
                (Some(seal), Some(keys)) => Some(keys.seal(&next, seal.current, seal.previous)),
                _ => None,
            };
            let write = KeyWrite {
                expected_revision: key.revision,
                seal,
            };
            let now = Utc::now().trunc_subsecs(6);
            let produced = RecordRevision {
                id: key.id,
                revision: next.revision,
            };
            let journal = Self::journal(plan, event.clone().record(key.id, next.revision));
            let changed = match self
                .inner
                .repo
                .set_state(key.id, state, now, &write, journal.as_ref())
                .await
            {
                Ok(changed) => changed,
                // Another writer took the audit row's place: try again.
                Err(Error::Conflict { .. }) => false,
                Err(e) => return Err(e),
            };
            self.inner.cache.invalidate(identity);
            if changed {
                break produced;
            }
            // Deleted or changed by another writer meanwhile: look again.
            if attempt >= super::conflict::MAX_WRITE_ATTEMPTS {
                return Err(Error::Conflict {
                    identity: identity.to_string(),
                });
            }
        };
        tracing::info!(%identity, %state, "changed API key state");
        Ok(produced)
    }

    /// Deletes the key and every version of it from the store, for good, and evicts it.
    pub async fn delete(&self, identity: &KeyIdentity) -> Result<()> {
        let event = self.event("delete", Some(identity));
        let plan = self.begin_change(&event).await?;
        let result = self.delete_unaudited(identity, &plan, &event).await;
        let event = match &result {
            Ok(rr) => event.record(rr.id, rr.revision),
            Err(_) => event.outcome(&result),
        };
        self.end_change(plan, event, result.map(drop)).await
    }

    /// Returns the record deleted and the revision after its last (what its audit row names:
    /// a copy of the record put back later is older than that).
    async fn delete_unaudited(
        &self,
        identity: &KeyIdentity,
        plan: &ChangeAudit,
        event: &AuditEvent,
    ) -> Result<RecordRevision> {
        self.check_write(identity)?;
        let key = self.require_key(identity).await?;
        let produced = RecordRevision {
            id: key.id,
            revision: key.revision + 1,
        };
        let journal = Self::journal(plan, event.clone().record(key.id, produced.revision));
        let journal = journal.as_ref();
        let mut attempt = 0;
        let found = loop {
            attempt += 1;
            match self.inner.repo.delete_key(key.id, journal).await {
                // Another writer took the audit row's place: try again.
                Err(Error::Conflict { .. }) if attempt < super::conflict::MAX_WRITE_ATTEMPTS => {}
                other => break other?,
            }
        };
        self.inner.cache.invalidate(identity);
        self.inner.last_used.forget(key.id);
        if !found {
            return Err(Error::NotFound {
                identity: identity.to_string(),
            });
        }
        tracing::info!(%identity, "deleted API key");
        Ok(produced)
    }
}
