//! Writing many keys at once: [`SecureKeyManager::store_many`], one transaction for the whole
//! batch (imports).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use uuid::Uuid;

use super::audit::ChangeAudit;
use super::conflict::{MAX_WRITE_ATTEMPTS, conflict_backoff};
use crate::audit::AuditEvent;
use crate::seal::{StateKeys, check_current, version_digest};
use crate::{
    ApiKey, EncryptionContext, Error, Journal, KeyChange, KeyIdentity, KeyRecord, KeyState,
    KeyWrite, Result, SecureKeyManager, StoreOutcome, VersionRecord, VersionState, WriteOptions,
    envelope,
};

/// Data keys wrapped at the same time while a batch is sealed (a KMS round trip each, except
/// on the local provider).
const WRAPS_IN_FLIGHT: usize = 16;

/// How [`SecureKeyManager::store_many`] treats an identity that already has a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchMode {
    /// Every identity must be new: one that already has a key fails the whole batch with
    /// [`Error::InvalidInput`] naming it (field `identity`), and nothing is written.
    CreateOnly,
    /// An identity that already has a key gets a new current version (as
    /// [`SecureKeyManager::store`] does: the old value stays as the previous version).
    Upsert,
}

/// One item of a batch (or one store), sealed and ready to write.
pub(super) struct Prepared {
    pub(super) change: KeyChange,
    pub(super) outcome: StoreOutcome,
}

impl SecureKeyManager {
    /// Stores a batch of keys in one database transaction: all of them, or, on any error,
    /// none. Each key is sealed as [`SecureKeyManager::store`] seals it (its own data key,
    /// bound to its record) and audited as it is (one `store` row per key, committed in the
    /// same transaction when the audit trail is in the key database); `options` apply to
    /// every key. Returns one outcome per item, in order. Every key, identity and option is
    /// checked before the KMS or the database is touched; an empty batch does nothing.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use llm_accounting_core::*;
    /// # async fn demo(manager: SecureKeyManager) -> Result<()> {
    /// let items = vec![
    ///     (KeyIdentity::new("openai")?, ApiKey::new("sk-test-FAKE-1".into())),
    ///     (KeyIdentity::new("anthropic")?, ApiKey::new("sk-test-FAKE-2".into())),
    /// ];
    /// let outcomes = manager
    ///     .store_many(&items, BatchMode::CreateOnly, &WriteOptions::default())
    ///     .await?;
    /// assert!(outcomes.iter().all(|o| o.created));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key or expiry (naming the identity), an identity that
    /// appears twice in the batch, or, with [`BatchMode::CreateOnly`], an identity that
    /// already has a key; [`Error::Forbidden`] for an identity outside a bound handle's
    /// boundary; [`Error::Integrity`] when an existing record does not verify;
    /// [`Error::Conflict`] when other writers kept changing the same keys; KMS and database
    /// errors as for `store`.
    pub async fn store_many(
        &self,
        items: &[(KeyIdentity, ApiKey)],
        mode: BatchMode,
        options: &WriteOptions,
    ) -> Result<Vec<StoreOutcome>> {
        let provider = &self.inner.provider;
        let batch_event = self
            .event("store_many", None)
            .key_ref(provider.name(), &provider.master_key_ref())
            .detail(format!("{} keys", items.len()));
        if let Err(e) = self.check_batch(items, options) {
            let event = batch_event.outcome::<()>(&Err(e.clone()));
            return self.audited(event, Err(e)).await;
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let keys = match self.state_keys_for_write().await {
            Ok(keys) => keys,
            Err(e) => {
                let event = batch_event.outcome::<()>(&Err(e.clone()));
                return self.audited(event, Err(e)).await;
            }
        };
        let plan = self.begin_change(&batch_event).await?;
        let result = self
            .store_many_unaudited(items, mode, options, keys, &plan)
            .await;
        let Some(audit) = &self.inner.audit else {
            return result;
        };
        let result = self
            .audit_batch_outcome(audit, items, &plan, batch_event, result)
            .await;
        if result.is_ok() {
            self.advance_anchor().await;
        }
        result
    }

    /// Writes the outcome rows of a batch that was not journaled in its own transaction.
    async fn audit_batch_outcome(
        &self,
        audit: &super::audit::AuditTrail,
        items: &[(KeyIdentity, ApiKey)],
        plan: &ChangeAudit,
        batch_event: AuditEvent,
        result: Result<Vec<StoreOutcome>>,
    ) -> Result<Vec<StoreOutcome>> {
        match (plan, &result) {
            // The rows committed with the batch.
            (ChangeAudit::Journal(_), Ok(_)) => {}
            (_, Ok(outcomes)) => {
                for ((identity, _), outcome) in items.iter().zip(outcomes) {
                    let event = self.store_event(identity, outcome);
                    if let Err(e) = audit.record(event).await {
                        tracing::error!(error = %e, "the outcome row of a stored key was not written");
                    }
                }
            }
            (_, Err(_)) => {
                let event = AuditEvent {
                    at: Utc::now().trunc_subsecs(6),
                    ..batch_event.outcome(&result)
                };
                if let Err(e) = audit.record(event).await {
                    tracing::error!(error = %e, "the outcome row of a failed batch was not written");
                }
            }
        }
        result
    }

    /// The audit row of one key of a batch.
    fn store_event(&self, identity: &KeyIdentity, outcome: &StoreOutcome) -> AuditEvent {
        let provider = &self.inner.provider;
        self.event("store", Some(identity))
            .key_ref(provider.name(), &provider.master_key_ref())
            .detail(format!("version {} (batch)", outcome.version))
            .record(outcome.key_id, outcome.revision)
    }

    /// Refusals and bad input: before anything touches the KMS or the store.
    fn check_batch(&self, items: &[(KeyIdentity, ApiKey)], options: &WriteOptions) -> Result<()> {
        if options.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::invalid("expiry", "it is not in the future"));
        }
        let mut seen = HashSet::with_capacity(items.len());
        for (identity, key) in items {
            self.check_write(identity)?;
            key.validate().map_err(|e| match e {
                Error::InvalidInput { field, reason } => Error::InvalidInput {
                    field,
                    reason: format!("for {identity}: {reason}"),
                },
                other => other,
            })?;
            if !seen.insert(identity) {
                return Err(Error::invalid(
                    "batch",
                    format!("{identity} appears more than once; nothing was written"),
                ));
            }
        }
        Ok(())
    }

    async fn store_many_unaudited(
        &self,
        items: &[(KeyIdentity, ApiKey)],
        mode: BatchMode,
        options: &WriteOptions,
        keys: Option<Arc<StateKeys>>,
        plan: &ChangeAudit,
    ) -> Result<Vec<StoreOutcome>> {
        let identities: Vec<KeyIdentity> = items.iter().map(|(i, _)| i.clone()).collect();
        let mut attempt = 0;
        let prepared = loop {
            attempt += 1;
            let prepared = match self
                .prepare_batch(items, &identities, mode, options, keys.as_deref())
                .await
            {
                Ok(prepared) => prepared,
                // A key changed by another writer while being read: read them all again.
                Err(Error::Conflict { .. }) if attempt < MAX_WRITE_ATTEMPTS => {
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let changes: Vec<KeyChange> = prepared.iter().map(|p| p.change.clone()).collect();
            let journal: Vec<Journal> = prepared
                .iter()
                .filter_map(|p| {
                    let event = self.store_event(p.change.identity(), &p.outcome);
                    Self::journal(plan, event)
                })
                .collect();
            match self.inner.repo.write_batch(&changes, &journal).await {
                Ok(()) => break prepared,
                // Another writer came first: look again (with CreateOnly, an identity that
                // exists now is then refused by name).
                Err(Error::Conflict { identity }) if attempt < MAX_WRITE_ATTEMPTS => {
                    tracing::debug!(%identity, attempt, "concurrent write in a batch; retrying");
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        for identity in &identities {
            self.inner.cache.invalidate(identity);
        }
        let outcomes: Vec<StoreOutcome> = prepared.into_iter().map(|p| p.outcome).collect();
        tracing::info!(keys = outcomes.len(), "stored a batch of API keys");
        if outcomes.iter().any(|o| !o.created) {
            // Previous versions whose grace ended: wipe them now (best effort).
            if let Err(e) = self.inner.repo.retire_due(None, Utc::now()).await {
                tracing::warn!(error = %e, "could not retire old versions");
            }
        }
        Ok(outcomes)
    }

    /// Reads the batch's identities, checks the existing records, and seals every key.
    async fn prepare_batch(
        &self,
        items: &[(KeyIdentity, ApiKey)],
        identities: &[KeyIdentity],
        mode: BatchMode,
        options: &WriteOptions,
        keys: Option<&StateKeys>,
    ) -> Result<Vec<Prepared>> {
        let existing = self.inner.repo.load_current_many(identities).await?;
        if existing.len() != items.len() {
            return Err(Error::integrity());
        }
        let latest = self.latest_revisions_of(&existing).await?;
        let mut found = Vec::with_capacity(items.len());
        for (identity, current) in identities.iter().zip(existing) {
            let current = match current {
                None => None,
                Some(Err(e)) => return Err(e.with_identity(identity)),
                Some(Ok(_)) if mode == BatchMode::CreateOnly => {
                    return Err(Error::invalid(
                        "identity",
                        format!(
                            "{identity} already has a key (create-only batch); nothing was written"
                        ),
                    ));
                }
                Some(Ok((k, v))) => {
                    // Never build on state that was changed behind our back.
                    self.check_record_in(&k, &latest)
                        .await
                        .and_then(|seal| seal.map_or(Ok(()), |s| check_current(s, &v)))
                        .map_err(|e| e.with_identity(identity))?;
                    Some((k, v))
                }
            };
            found.push(current);
        }
        let at = Times::new(self.inner.previous_grace, options);
        // Owned items (an index and the record found): a closure over borrowed items would
        // make the future of `store_many` not `Send` (a limit of the compiler's inference).
        stream::iter(found.into_iter().enumerate())
            .map(|(i, existing)| {
                let (identity, key) = &items[i];
                self.seal_item(identity, key, existing, at, keys)
            })
            .buffered(WRAPS_IN_FLIGHT)
            .try_collect()
            .await
    }
}

/// The times every item of a batch is written with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    now: chrono::DateTime<Utc>,
    expires_at: Option<chrono::DateTime<Utc>>,
    retire_at: chrono::DateTime<Utc>,
}

impl Times {
    /// Now, the expiry `options` ask for, and when a version replaced now retires (after
    /// `previous_grace`); all to the microsecond, as every database keeps them.
    pub(super) fn new(previous_grace: std::time::Duration, options: &WriteOptions) -> Self {
        let now = Utc::now().trunc_subsecs(6);
        let retire_at = (now
            + chrono::Duration::from_std(previous_grace).unwrap_or(chrono::Duration::MAX))
        .trunc_subsecs(6);
        Times {
            now,
            expires_at: options.expires_at.map(|t| t.trunc_subsecs(6)),
            retire_at,
        }
    }
}

impl SecureKeyManager {
    /// Seals `key` as the next version of `identity`: a new key, or a new version of
    /// `existing` (store, rotate and each item of a batch).
    pub(super) async fn seal_item(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        existing: Option<(KeyRecord, VersionRecord)>,
        at: Times,
        keys: Option<&StateKeys>,
    ) -> Result<Prepared> {
        let (key_id, version, revision) = match &existing {
            Some((k, _)) => (k.id, k.current_version + 1, k.revision + 1),
            None => (Uuid::new_v4(), 1, 1),
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
            hint: key.hint(),
            created_at: at.now,
            expires_at: at.expires_at,
            retire_at: None,
        };
        let outcome = StoreOutcome {
            key_id,
            version,
            created: existing.is_none(),
            revision,
        };
        let change = match existing {
            Some((k, current)) => changed_key(k, current, row, at.retire_at, keys),
            None => new_key(identity, row, keys),
        };
        Ok(Prepared { change, outcome })
    }
}

/// A new key with `first` as its version 1, sealed under `keys` in a sealed store.
fn new_key(identity: &KeyIdentity, first: VersionRecord, keys: Option<&StateKeys>) -> KeyChange {
    let mut key = KeyRecord {
        id: first.key_id,
        identity: identity.clone(),
        state: KeyState::Active,
        current_version: 1,
        hint: first.hint.clone(),
        created_at: first.created_at,
        updated_at: first.created_at,
        last_used_at: None,
        expires_at: first.expires_at,
        revision: 1,
        seal: None,
    };
    key.seal = keys.map(|keys| keys.seal(&key, version_digest(&first), None));
    KeyChange::Create { key, first }
}

/// `row` as the new current version of `k`, whose current version `current` retires at
/// `retire_at`.
fn changed_key(
    k: KeyRecord,
    current: VersionRecord,
    row: VersionRecord,
    retire_at: chrono::DateTime<Utc>,
    keys: Option<&StateKeys>,
) -> KeyChange {
    let next = KeyRecord {
        current_version: row.version,
        hint: row.hint.clone(),
        expires_at: row.expires_at,
        revision: k.revision + 1,
        seal: None,
        ..k.clone()
    };
    let previous = VersionRecord {
        retire_at: Some(retire_at),
        ..current
    };
    let seal =
        keys.map(|keys| keys.seal(&next, version_digest(&row), Some(version_digest(&previous))));
    KeyChange::AddVersion {
        identity: k.identity,
        expected_current: k.current_version,
        version: row,
        previous_retire_at: retire_at,
        write: KeyWrite {
            expected_revision: k.revision,
            seal,
        },
    }
}
