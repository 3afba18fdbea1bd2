//! Sealing a store: the explicit, audited step after which every record's state is
//! authenticated (see [`crate::seal`]).
//!
//! A store made by this release is sealed from its first write. A store written before is
//! sealed once with [`SecureKeyManager::seal`]: it makes the state key and seals every record
//! as it stands then. From then on a record without a seal is refused like one with a wrong
//! seal, so clearing the seal columns gains a database writer nothing; that is also why
//! sealing an already sealed store seals nothing new, and only verifies.

use chrono::{SubsecRound, Utc};

use super::checked_envelope;
use crate::seal::{StateKeys, version_digest};
use crate::{
    BrokenKey, BrokenKeyRow, Error, KeyFilter, KeyRecord, KeyWrite, Listed, Result,
    SecureKeyManager, VersionState,
};

/// What sealing did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SealReport {
    /// Whether this run made the state key (the store was not sealed before).
    pub made_state_key: bool,
    /// Records sealed by this run.
    pub sealed: u64,
    /// Records that were sealed already and verify.
    pub verified: u64,
    /// Records that could not be sealed, or whose seal does not verify (left as they are:
    /// delete and store them again).
    pub broken: Vec<BrokenKey>,
}

impl SecureKeyManager {
    /// Seals the store (see the module docs): makes its state key if it has none and seals
    /// every record, or, in a store sealed already, verifies every record. Needs an unbound
    /// manager. Run it while no other writer of an unsealed store is running, or run it
    /// twice.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for a bound manager; KMS and database failures. Records that
    /// cannot be sealed or do not verify are in the report, not errors.
    pub async fn seal(&self) -> Result<SealReport> {
        let result = self.seal_unaudited().await;
        let event = self.event("seal", None).outcome(&result);
        let event = match &result {
            Ok(r) => {
                let e = event.detail(format!(
                    "sealed {}, verified {}, broken {}",
                    r.sealed,
                    r.verified,
                    r.broken.len()
                ));
                if r.broken.is_empty() {
                    e
                } else {
                    e.failed(crate::ErrorKind::Integrity)
                }
            }
            Err(_) => event,
        };
        let result = self.audited(event, result).await;
        if result.is_ok() {
            self.advance_anchor().await;
        }
        result
    }

    async fn seal_unaudited(&self) -> Result<SealReport> {
        self.check_unbound("seal")?;
        let mut report = SealReport::default();
        let keys = match self.state_keys(true).await? {
            Some(keys) => keys,
            None => {
                // Sealing again would adopt whatever state the records were put back in.
                if let Some(evidence) = self.sealed_before().await? {
                    return Err(Self::state_key_removed(&evidence));
                }
                report.made_state_key = true;
                self.make_state_key().await?
            }
        };
        // Two passes when this run made the key: a writer that looked just before the key
        // existed may still have written an unsealed record during the first.
        let passes = if report.made_state_key { 2 } else { 1 };
        for pass in 0..passes {
            for row in self.inner.repo.list_keys(&KeyFilter::default()).await? {
                let k = match row {
                    Listed::Key(k) => k,
                    Listed::Broken(row) => {
                        if pass == 0 {
                            report.broken.push(BrokenKey {
                                row,
                                error: Error::integrity(),
                            });
                        }
                        continue;
                    }
                };
                let outcome = match (&k.seal, report.made_state_key) {
                    (Some(_), _) if pass == 0 => keys.verify(&k).map(|_| false),
                    (Some(_), _) => continue,
                    // Adopted only while sealing a store for the first time.
                    (None, true) => self.seal_record(&keys, &k).await.map(|_| true),
                    (None, false) => Err(Error::integrity()),
                };
                match outcome {
                    Ok(true) => report.sealed += 1,
                    Ok(false) => report.verified += 1,
                    Err(error) => report.broken.push(BrokenKey {
                        row: BrokenKeyRow {
                            id: k.id.to_string(),
                            service: k.identity.service().to_owned(),
                            user: k.identity.user().map(str::to_owned),
                            project: k.identity.project().map(str::to_owned),
                        },
                        error: error.with_identity(&k.identity),
                    }),
                }
            }
        }
        self.inner.cache.clear();
        tracing::info!(
            sealed = report.sealed,
            verified = report.verified,
            broken = report.broken.len(),
            "sealed the store"
        );
        Ok(report)
    }

    /// Seals one record as it stands: its current version must be there and agree with its
    /// envelope; the latest previous version (if any) is sealed with its retirement time.
    async fn seal_record(&self, keys: &StateKeys, k: &KeyRecord) -> Result<()> {
        let versions = self.inner.repo.list_versions(k.id).await?;
        let current = versions
            .iter()
            .find(|v| v.version == k.current_version)
            .ok_or_else(Error::integrity)?;
        if current.state != VersionState::Current {
            return Err(Error::integrity());
        }
        checked_envelope(k, current)?;
        let previous = versions
            .iter()
            .filter(|v| v.version < k.current_version)
            .max_by_key(|v| v.version);
        let next = KeyRecord {
            revision: k.revision + 1,
            seal: None,
            ..k.clone()
        };
        let seal = keys.seal(&next, version_digest(current), previous.map(version_digest));
        let write = KeyWrite {
            expected_revision: k.revision,
            seal: Some(seal),
        };
        let now = Utc::now().trunc_subsecs(6);
        if self
            .inner
            .repo
            .set_state(k.id, k.state, now, &write, None)
            .await?
        {
            Ok(())
        } else {
            Err(Error::Conflict {
                identity: k.identity.to_string(),
            })
        }
    }
}
