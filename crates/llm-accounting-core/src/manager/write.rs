//! Writing values: store (a new key, or a new version of one) and rotate.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use std::sync::Arc;

use super::audit::ChangeAudit;
use crate::audit::AuditEvent;
use crate::seal::{StateKeys, check_current, version_digest};
use crate::{
    ApiKey, EncryptionContext, Error, KeyIdentity, KeyRecord, KeyState, KeyWrite, Result,
    SecureKeyManager, StoreOutcome, VersionRecord, VersionState, WriteOptions, envelope,
};

/// How many times a write that lost an optimistic-concurrency race is tried in all.
pub(super) const MAX_WRITE_ATTEMPTS: u32 = 8;

/// A random pause before trying a lost write again: up to 2^attempt ms (at most 128 ms), so
/// that writers racing for one key spread out instead of colliding again.
pub(super) fn conflict_backoff(attempt: u32) -> Duration {
    let mut b = [0u8; 2];
    let r = crate::random_bytes(&mut b).map_or(0, |()| u16::from_le_bytes(b));
    let cap_ms = 1u64 << attempt.min(7);
    Duration::from_micros(u64::from(r) * cap_ms * 1000 / u64::from(u16::MAX))
}

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
            Ok(o) => event.detail(format!("version {}", o.version)),
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
        let hint = key.hint();
        let expires_at = options.expires_at.map(|t| t.trunc_subsecs(6));
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
                self.check_record(k)
                    .await
                    .and_then(|seal| seal.map_or(Ok(()), |s| check_current(s, current)))
                    .map_err(|e| e.with_identity(identity))?;
            }
            let now = Utc::now().trunc_subsecs(6);
            let (key_id, version) = match &existing {
                Some((k, _)) => (k.id, k.current_version + 1),
                None => (Uuid::new_v4(), 1),
            };
            let context = EncryptionContext::new(key_id, identity.clone(), version);
            let sealed = envelope::seal(self.inner.provider.as_ref(), &context, key).await?;
            let row = VersionRecord {
                key_id,
                version,
                state: VersionState::Current,
                envelope: sealed.to_bytes()?,
                provider: sealed.wrapped.provider.clone(),
                master_key_ref: sealed.wrapped.master_key_ref.clone(),
                hint: hint.clone(),
                created_at: now,
                expires_at,
                retire_at: None,
            };
            // This attempt's row, when it commits with the change.
            let journal = Self::journal(plan, event.clone().detail(format!("version {version}")));
            let written = match &existing {
                Some((k, current)) => {
                    let retire_at = now
                        + chrono::Duration::from_std(self.inner.previous_grace)
                            .unwrap_or(chrono::Duration::MAX);
                    let retire_at = retire_at.trunc_subsecs(6);
                    let next = KeyRecord {
                        current_version: version,
                        hint: hint.clone(),
                        expires_at,
                        revision: k.revision + 1,
                        seal: None,
                        ..k.clone()
                    };
                    let previous = VersionRecord {
                        retire_at: Some(retire_at),
                        ..current.clone()
                    };
                    let seal = keys.as_ref().map(|keys| {
                        keys.seal(&next, version_digest(&row), Some(version_digest(&previous)))
                    });
                    let write = KeyWrite {
                        expected_revision: k.revision,
                        seal,
                    };
                    repo.add_version(
                        k.id,
                        k.current_version,
                        &row,
                        retire_at,
                        &write,
                        journal.as_ref(),
                    )
                    .await
                }
                None => {
                    let mut record = KeyRecord {
                        id: key_id,
                        identity: identity.clone(),
                        state: KeyState::Active,
                        current_version: 1,
                        hint: hint.clone(),
                        created_at: now,
                        updated_at: now,
                        last_used_at: None,
                        expires_at,
                        revision: 1,
                        seal: None,
                    };
                    record.seal = keys
                        .as_ref()
                        .map(|keys| keys.seal(&record, version_digest(&row), None));
                    repo.create_key(&record, &row, journal.as_ref()).await
                }
            };
            match written {
                Ok(()) => {
                    break StoreOutcome {
                        key_id,
                        version,
                        created: existing.is_none(),
                    };
                }
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
