//! Writing values: store (a new key, or a new version of one) and rotate.

use std::sync::Arc;

use chrono::Utc;

use super::audit::ChangeAudit;
use super::batch::{Prepared, Times};
use super::conflict::{MAX_WRITE_ATTEMPTS, conflict_backoff};
use crate::audit::AuditEvent;
use crate::seal::{StateKeys, check_current};
use crate::{
    ApiKey, Error, KeyChange, KeyIdentity, Result, SecureKeyManager, StoreOutcome, WriteOptions,
};

/// What a write needs besides its value: the store's state keys (to seal the record) and how
/// its change is audited.
struct WriteAudit<'a> {
    keys: Option<Arc<StateKeys>>,
    plan: &'a ChangeAudit,
    event: &'a AuditEvent,
}

impl SecureKeyManager {
    /// Stores `key` under `identity`: a new key, or a new current version of an existing one
    /// (the old value stays as the previous version). On any failure nothing changes.
    pub async fn store(&self, identity: &KeyIdentity, key: &ApiKey) -> Result<StoreOutcome> {
        self.write_version(identity, key, false, &WriteOptions::default())
            .await
    }

    /// [`SecureKeyManager::store`] with options (an expiry time).
    pub async fn store_with(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        options: &WriteOptions,
    ) -> Result<StoreOutcome> {
        self.write_version(identity, key, false, options).await
    }

    /// Replaces the value of an existing key with a new version. [`Error::NotFound`] if there
    /// is no such key.
    pub async fn rotate(&self, identity: &KeyIdentity, key: &ApiKey) -> Result<StoreOutcome> {
        self.write_version(identity, key, true, &WriteOptions::default())
            .await
    }

    /// [`SecureKeyManager::rotate`] with options (an expiry time).
    pub async fn rotate_with(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        options: &WriteOptions,
    ) -> Result<StoreOutcome> {
        self.write_version(identity, key, true, options).await
    }

    async fn write_version(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        must_exist: bool,
        options: &WriteOptions,
    ) -> Result<StoreOutcome> {
        let op = if must_exist { "rotate" } else { "store" };
        let event = self.event(op, Some(identity)).key_ref(
            self.inner.provider.name(),
            &self.inner.provider.master_key_ref(),
        );
        // Refusals and bad input first: they touch neither the store nor the KMS.
        let checked = self
            .check_write(identity)
            .and_then(|()| key.validate())
            .and_then(|()| {
                if options.expires_at.is_some_and(|at| at <= Utc::now()) {
                    Err(Error::invalid("expiry", "it is not in the future"))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = checked {
            let event = event.outcome::<()>(&Err(e.clone()));
            return self.audited(event, Err(e)).await;
        }
        // A new store is sealed by its first write: before the audit row is made, so that
        // even that row is keyed.
        let keys = match self.state_keys_for_write().await {
            Ok(keys) => keys,
            Err(e) => {
                let event = event.outcome::<()>(&Err(e.clone()));
                return self.audited(event, Err(e)).await;
            }
        };
        let plan = self.begin_change(&event).await?;
        let audit = WriteAudit {
            keys,
            plan: &plan,
            event: &event,
        };
        let result = self
            .write_version_unaudited(identity, key, must_exist, options, audit)
            .await;
        let event = match &result {
            Ok(o) => event
                .detail(format!("version {}", o.version))
                .record(o.key_id, o.revision),
            Err(_) => event.outcome(&result),
        };
        self.end_change(plan, event, result).await
    }

    async fn write_version_unaudited(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        must_exist: bool,
        options: &WriteOptions,
        audit: WriteAudit<'_>,
    ) -> Result<StoreOutcome> {
        let WriteAudit { keys, plan, event } = audit;
        let repo = &self.inner.repo;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let existing = repo.load_current(identity).await?;
            if must_exist && existing.is_none() {
                return Err(Error::NotFound {
                    identity: identity.to_string(),
                });
            }
            if let Some((k, current)) = &existing {
                // Never build on state that was changed behind our back.
                let checked = self
                    .check_record(k)
                    .await
                    .and_then(|seal| seal.map_or(Ok(()), |s| check_current(s, current)));
                match checked {
                    Ok(()) => {}
                    // Changed by another writer since it was read: read it again.
                    Err(Error::Conflict { .. }) if attempt < MAX_WRITE_ATTEMPTS => continue,
                    Err(e) => return Err(e.with_identity(identity)),
                }
            }
            let at = Times::new(self.inner.previous_grace, options);
            let Prepared { change, outcome } = self
                .seal_item(identity, key, existing, at, keys.as_deref())
                .await?;
            // This attempt's row, when it commits with the change.
            let journal = Self::journal(
                plan,
                event
                    .clone()
                    .detail(format!("version {}", outcome.version))
                    .record(outcome.key_id, outcome.revision),
            );
            let written = match change {
                KeyChange::Create { key, first } => {
                    repo.create_key(&key, &first, journal.as_ref()).await
                }
                KeyChange::AddVersion {
                    expected_current,
                    version,
                    previous_retire_at,
                    write,
                    ..
                } => {
                    repo.add_version(
                        version.key_id,
                        expected_current,
                        &version,
                        previous_retire_at,
                        &write,
                        journal.as_ref(),
                    )
                    .await
                }
            };
            match written {
                Ok(()) => break outcome,
                Err(Error::Conflict { .. }) if attempt < MAX_WRITE_ATTEMPTS => {
                    tracing::debug!(%identity, attempt, "concurrent write; retrying");
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                    continue;
                }
                Err(Error::Conflict { .. }) => {
                    return Err(Error::Conflict {
                        identity: identity.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        };
        self.inner.cache.invalidate(identity);
        tracing::info!(%identity, version = outcome.version, "stored API key");
        if !outcome.created {
            // Older previous versions whose grace ended: wipe them now (best effort; reads
            // refuse them anyway).
            if let Err(e) = repo.retire_due(Some(outcome.key_id), Utc::now()).await {
                tracing::warn!(%identity, error = %e, "could not retire old versions");
            }
        }
        Ok(outcome)
    }
}
