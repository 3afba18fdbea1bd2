//! Moving every data key under another master key (a new master-key version, another key, or
//! another provider), online and resumable.
//!
//! The target is the manager's provider and its current master key; the providers the old
//! records name must be configured too (as the main provider or with
//! [`crate::SecureKeyManagerBuilder::decrypt_provider`]). For each readable version not yet
//! under the target, the data key is unwrapped with its provider and context and wrapped by
//! the target under the same context; the new envelope replaces the old one in one
//! compare-and-set update. So:
//!
//! - readers never fail: a version is always either wholly old (still unwrappable by the old
//!   provider) or wholly new; the API key's ciphertext is untouched unless re-encryption is
//!   asked for, and the cached values stay valid;
//! - it is idempotent and resumable: a run killed at any point leaves every version old or new,
//!   and the next run does the rest;
//! - concurrent runs cannot undo each other (the update only applies to a version still under
//!   the master key it was read with).

use std::sync::Arc;

use super::checked_envelope;
use crate::seal::{STATE_KEY, check_current, check_previous, version_digest};
use crate::{
    EncryptionContext, Envelope, Error, Journal, KeyIdentity, KeyRecord, KeyWrite, KmsProvider,
    Result, SecureKeyManager, VersionRecord, envelope,
};

/// How often one version's move is tried again when its audit row lost the race for the
/// trail's next position to another process's write (with a random pause of up to 128 ms).
const MAX_AUDIT_RACES: u32 = 64;

/// How to rewrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapOptions {
    /// Versions read from the store per batch (default 200).
    pub batch_size: usize,
    /// Versions processed at once, i.e. concurrent KMS requests (default 8).
    pub concurrency: usize,
    /// Also re-encrypt the API keys under fresh data keys (default: no, only the data keys are
    /// rewrapped).
    pub reencrypt: bool,
    /// Only count what would be done; change nothing.
    pub check_only: bool,
    /// Give every branch key a new version, and move the records onto it (see
    /// [`crate::branch`]); old versions stay readable until then. Without a branch-key layer
    /// ([`crate::SecureKeyManagerBuilder::branch_keys`]): nothing.
    pub rotate_branches: bool,
}

impl Default for RewrapOptions {
    fn default() -> Self {
        RewrapOptions {
            batch_size: 200,
            concurrency: 8,
            reencrypt: false,
            check_only: false,
            rotate_branches: false,
        }
    }
}

/// One version that could not be rewrapped.
#[derive(Debug, Clone)]
pub struct RewrapFailure {
    /// Whose key.
    pub identity: KeyIdentity,
    /// Which version.
    pub version: u32,
    /// Why.
    pub error: Error,
}

/// What a rewrap did.
#[derive(Debug, Clone, Default)]
pub struct RewrapReport {
    /// The target: provider name.
    pub target_provider: String,
    /// The target: master-key reference.
    pub target_master_key_ref: String,
    /// Versions moved under the target master key (with `check_only`: that need it).
    pub done: u64,
    /// Versions another writer changed meanwhile (rewrapped by a concurrent run, deleted,
    /// retired); nothing to do for them.
    pub skipped: u64,
    /// Versions that failed, with reasons. Left as they were: still readable if their old
    /// master key is.
    pub failed: Vec<RewrapFailure>,
    /// With `check_only`: versions under a master key its provider reports as retired (below
    /// its minimum decryptable version): unreadable until rewrapped... which needs that old key.
    pub under_retired_keys: u64,
    /// Whether the store's state key (see [`crate::SecureKeyManager::seal`]) was moved under
    /// the target (with `check_only`: needs to be). It is not counted in `done`.
    pub state_key_moved: bool,
    /// What happened to branch keys (see [`crate::branch`]): versions moved under the
    /// target master key, branches rotated. Not counted in `done`.
    pub branch_keys: crate::branch::BranchRewrapReport,
}

/// Progress of a running rewrap, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapProgress {
    /// Versions handled so far (done, skipped or failed).
    pub handled: u64,
    /// Versions found so far that needed handling.
    pub seen: u64,
}

enum Outcome {
    Done,
    Skipped,
}

impl SecureKeyManager {
    /// Rewraps every readable version that is not under this manager's provider and current
    /// master key (see the module docs). `progress` is called after each batch.
    ///
    /// # Errors
    ///
    /// Only when the store cannot be read; failures of single versions are in the report.
    pub async fn rewrap(
        &self,
        options: &RewrapOptions,
        progress: impl FnMut(RewrapProgress),
    ) -> Result<RewrapReport> {
        let result = self.rewrap_unaudited(options, progress).await;
        let op = if options.check_only {
            "rewrap_check"
        } else {
            "rewrap"
        };
        let event = self.event(op, None).outcome(&result);
        let event = match &result {
            Ok(r) => event
                .detail(format!(
                    "done {}, skipped {}, failed {}, branch keys rewrapped {}, rotated {}",
                    r.done,
                    r.skipped,
                    r.failed.len(),
                    r.branch_keys.rewrapped,
                    r.branch_keys.rotated
                ))
                .key_ref(&r.target_provider, &r.target_master_key_ref),
            Err(_) => event,
        };
        let result = self.audited(event, result).await;
        if result.is_ok() {
            self.advance_anchor().await;
        }
        result
    }

    /// Records each branch version a rotation made (`rotate_branch`, naming the branch and
    /// its new version), written before any record moves onto it: a reader then refuses the
    /// branch if that version is removed from the store.
    async fn audit_branch_rotations(&self, made: &[(uuid::Uuid, u32)]) -> Result<()> {
        let Some(audit) = &self.inner.audit else {
            return Ok(());
        };
        if made.is_empty() {
            return Ok(());
        }
        for &(branch, version) in made {
            let event = self
                .event("rotate_branch", None)
                .detail(format!("branch {branch} version {version}"))
                .record(branch, u64::from(version));
            audit.record(event).await?;
        }
        audit.flush().await
    }

    async fn rewrap_unaudited(
        &self,
        options: &RewrapOptions,
        mut progress: impl FnMut(RewrapProgress),
    ) -> Result<RewrapReport> {
        self.check_unbound("rewrap")?;
        let target = Arc::clone(&self.inner.provider);
        let mut report = RewrapReport {
            target_provider: target.name().to_owned(),
            target_master_key_ref: target.master_key_ref(),
            ..RewrapReport::default()
        };
        let repo = &self.inner.repo;
        repo.retire_due(None, chrono::Utc::now()).await?;
        report.state_key_moved = self
            .rewrap_state_key(target.as_ref(), options.check_only)
            .await?;
        // Branch keys first: records then move onto the current branch versions.
        if let Some(branches) = &self.inner.branch_keys {
            let (branch_report, made) = branches
                .rewrap_branch_keys_listed(options.rotate_branches, options.check_only)
                .await?;
            report.branch_keys = branch_report;
            self.audit_branch_rotations(&made).await?;
        }
        let journal_turn = tokio::sync::Mutex::new(());
        let batch_size = options.batch_size.max(1);
        let mut after = None;
        let mut seen = 0u64;
        loop {
            let batch = repo
                .versions_to_rewrap(
                    &report.target_provider,
                    &report.target_master_key_ref,
                    after,
                    batch_size,
                )
                .await?;
            let Some((_, last)) = batch.last() else {
                break;
            };
            after = Some((last.key_id, last.version));
            // The store picks versions by provider and master key; a layer may know more
            // (a branch-wrapped key under its scope's current branch version is in place).
            let mut pending = Vec::with_capacity(batch.len());
            for (k, v) in batch {
                let wrapped =
                    crate::WrappedKey::new(&v.provider, v.master_key_ref.clone(), Vec::new());
                let context = EncryptionContext::new(k.id, k.identity.clone(), v.version);
                if !target.is_current(&wrapped, &context).await? {
                    pending.push((k, v));
                }
            }
            let batch = pending;
            seen += batch.len() as u64;
            if options.check_only {
                for (_, v) in &batch {
                    report.done += 1;
                    if self
                        .provider_named(&v.provider)
                        .is_ok_and(|p| p.is_retired(&v.master_key_ref))
                    {
                        report.under_retired_keys += 1;
                    }
                }
            } else {
                for chunk in batch.chunks(options.concurrency.max(1)) {
                    let results = futures_util::future::join_all(chunk.iter().map(|(k, v)| {
                        self.rewrap_one(target.as_ref(), k, v, options, &journal_turn)
                    }))
                    .await;
                    for ((k, v), result) in chunk.iter().zip(results) {
                        match result {
                            Ok(Outcome::Done) => report.done += 1,
                            Ok(Outcome::Skipped) => report.skipped += 1,
                            Err(error) => {
                                tracing::warn!(identity = %k.identity, version = v.version, %error, "rewrap failed");
                                report.failed.push(RewrapFailure {
                                    identity: k.identity.clone(),
                                    version: v.version,
                                    error,
                                });
                            }
                        }
                    }
                }
            }
            progress(RewrapProgress {
                handled: report.done + report.skipped + report.failed.len() as u64,
                seen,
            });
        }
        tracing::info!(
            done = report.done,
            skipped = report.skipped,
            failed = report.failed.len(),
            "rewrap finished"
        );
        Ok(report)
    }

    /// Moves the store's state key under `target`, if it is not there (with `check_only`:
    /// says whether it needs to be). Returns whether it was (or would be) moved.
    async fn rewrap_state_key(&self, target: &dyn KmsProvider, check_only: bool) -> Result<bool> {
        let Some(row) = self.inner.repo.store_key(STATE_KEY).await? else {
            return Ok(false);
        };
        let context = EncryptionContext::store_key(row.store_id);
        let under_target = target.is_current(&row.wrapped, &context).await?;
        if under_target || check_only {
            return Ok(!under_target);
        }
        let source = self.provider_named(&row.wrapped.provider)?;
        let root = source.unwrap_key(&row.wrapped, &context).await?;
        let rewrapped = target.wrap_key(&root, &context).await?;
        let moved = self
            .inner
            .repo
            .replace_store_key_wrapping(
                STATE_KEY,
                &rewrapped,
                &row.wrapped.provider,
                &row.wrapped.master_key_ref,
            )
            .await?;
        if moved {
            tracing::info!(
                provider = target.name(),
                "moved the state key under the target"
            );
        }
        Ok(moved)
    }

    async fn rewrap_one(
        &self,
        target: &dyn KmsProvider,
        key: &KeyRecord,
        version: &VersionRecord,
        options: &RewrapOptions,
        journal_turn: &tokio::sync::Mutex<()>,
    ) -> Result<Outcome> {
        let (env, context) =
            checked_envelope(key, version).map_err(|e| e.with_identity(&key.identity))?;
        // Only versions whose record verifies are moved (or reported).
        self.check_record(key)
            .await
            .map_err(|e| e.with_identity(&key.identity))?;
        let source = self.provider_named(&version.provider)?;
        let new_env = if options.reencrypt {
            let value = envelope::open(source.as_ref(), &context, &env)
                .await
                .map_err(|e| e.with_identity(&key.identity))?;
            envelope::seal(target, &context, &value).await?
        } else {
            let dek = source
                .unwrap_key(&env.wrapped, &context)
                .await
                .map_err(|e| e.with_identity(&key.identity))?;
            Envelope {
                wrapped: target.wrap_key(&dek, &context).await?,
                ..env
            }
        };
        let envelope = new_env.to_bytes()?;
        // With the trail in the key database, each moved version's row commits with the move
        // (the run's summary row follows at the end either way).
        let journal = self
            .change_journal(
                self.event("rewrap", Some(&key.identity))
                    .key_ref(&new_env.wrapped.provider, &new_env.wrapped.master_key_ref)
                    .detail(format!("version {}", version.version)),
            )
            .await?;
        let (mut key, mut version) = (key.clone(), version.clone());
        for _ in 0..super::conflict::MAX_WRITE_ATTEMPTS {
            let rewrapped = VersionRecord {
                envelope: envelope.clone(),
                provider: new_env.wrapped.provider.clone(),
                master_key_ref: new_env.wrapped.master_key_ref.clone(),
                ..version.clone()
            };
            let write = self.resealed(&key, &version, &rewrapped).await?;
            let replaced = self
                .replace_wrapping(
                    &rewrapped,
                    &version,
                    write.as_ref(),
                    journal.as_ref(),
                    journal_turn,
                )
                .await?;
            if replaced {
                return Ok(Outcome::Done);
            }
            // Another writer changed the record (its other version was moved, it rotated):
            // read both again, unless this version was moved, retired or deleted meanwhile.
            let fresh_key = self.inner.repo.keys_by_id(&[key.id]).await?.pop();
            let fresh_version = self
                .inner
                .repo
                .list_versions(key.id)
                .await?
                .into_iter()
                .find(|v| v.version == version.version);
            match (fresh_key, fresh_version) {
                (Some(k), Some(v))
                    if v.provider == version.provider
                        && v.master_key_ref == version.master_key_ref
                        && v.state != crate::VersionState::Retired =>
                {
                    self.check_record(&k)
                        .await
                        .map_err(|e| e.with_identity(&k.identity))?;
                    key = k;
                    version = v;
                }
                _ => return Ok(Outcome::Skipped),
            }
        }
        Err(Error::Conflict {
            identity: key.identity.to_string(),
        })
    }

    /// Replaces `old`'s wrapping by `rewrapped`'s, with its audit row when journaled. The
    /// run's journaled writes take turns (`journal_turn`): side by side, their rows would race
    /// for the trail's next position and all but one would be rolled back and retried. The
    /// KMS calls before them still run `concurrency` at a time. A write that lost the race to
    /// another process changed nothing and is tried again (after a random pause).
    async fn replace_wrapping(
        &self,
        rewrapped: &VersionRecord,
        old: &VersionRecord,
        write: Option<&KeyWrite>,
        journal: Option<&Journal>,
        journal_turn: &tokio::sync::Mutex<()>,
    ) -> Result<bool> {
        let _turn = match journal {
            Some(_) => Some(journal_turn.lock().await),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .inner
                .repo
                .replace_wrapping(
                    rewrapped,
                    &old.provider,
                    &old.master_key_ref,
                    write,
                    journal,
                )
                .await
            {
                Err(Error::Conflict { .. }) if journal.is_some() && attempt < MAX_AUDIT_RACES => {
                    tokio::time::sleep(super::conflict::conflict_backoff(attempt)).await;
                }
                result => return result,
            }
        }
    }

    /// How the record moves forward when `version` becomes `rewrapped`: in a sealed store, a
    /// version the seal names (current or previous) gets its new digest in a new seal; any
    /// other version, or an unsealed store, leaves the record as it is (`None`).
    async fn resealed(
        &self,
        key: &KeyRecord,
        version: &VersionRecord,
        rewrapped: &VersionRecord,
    ) -> Result<Option<KeyWrite>> {
        let (Some(seal), Some(keys)) = (&key.seal, self.state_keys(false).await?) else {
            return Ok(None);
        };
        let next = KeyRecord {
            revision: key.revision + 1,
            seal: None,
            ..key.clone()
        };
        let new = version_digest(rewrapped);
        let seal = if check_current(seal, version).is_ok() {
            keys.seal(&next, new, seal.previous.clone())
        } else if check_previous(seal, version).is_ok() {
            keys.seal(&next, seal.current.clone(), Some(new))
        } else {
            return Ok(None);
        };
        Ok(Some(KeyWrite {
            expected_revision: key.revision,
            seal: Some(seal),
        }))
    }
}
