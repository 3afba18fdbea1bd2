//! Branch keys: one KMS call per branch, local AES for every data key under it (the AWS
//! Encryption SDK's hierarchical keyring).
//!
//! [`BranchKeyProvider`] is a [`KmsProvider`] layer over the real (layered) provider, made by
//! [`BranchKeyLayer`] (a [`crate::layers::Layer`]), so the manager, the envelope and the
//! conformance suite are unchanged; what only branch keys have (rewrapping and rotating them,
//! evicting them) is on its own type, and a manager given it with
//! [`crate::SecureKeyManagerBuilder::branch_keys`] uses it in every rewrap:
//!
//! - a **branch key** is 256 random bits, wrapped by the inner provider under a context naming
//!   the branch ([`BranchScope::key_context`]: `purpose = branch-key`, the branch id, the
//!   scope kind, the scope's name under the key a record's context uses (`service`, `project`,
//!   `user`), the branch version), and kept in its own table ([`BranchKeyStore`]) with a
//!   commitment: HMAC-SHA-256 of id, version and scope under a key derived from the branch key;
//! - a **data key** is wrapped locally with AES-256-GCM under HKDF-SHA-256(branch key; branch
//!   id and version, and the record's canonical [`EncryptionContext`]), with the branch id and
//!   version as associated data. Its [`WrappedKey`] names the provider `INNER+branch` (so
//!   unwrapping tells it from a data key the inner provider wrapped directly, which keeps
//!   reading through this layer) and the master-key reference `branch/ID/vVERSION`;
//! - which branch a record uses is [`Hierarchy::scope_of`] its identity;
//! - unwrapped branch keys are cached in zeroizing types for the TTL given (single-flight:
//!   concurrent cold reads of one branch make one KMS call); [`BranchKeyProvider::evict`] and
//!   [`BranchKeyProvider::evict_all`] drop them at once.
//!
//! So a branch row that is swapped, moved to another scope or edited, and a data key moved
//! to another branch (or another record), fail as [`Error::Integrity`]; a branch key whose KMS
//! key is disabled fails as the inner provider reports it. Contexts that are not a record's
//! (the store's state key) always go straight to the inner provider.
//!
//! It is the outermost layer (the order is in [`crate::layers`]), so the metrics count the
//! KMS calls made for branch keys (and direct ones), not the local unwraps.

mod cache;
mod crypto;
mod layer;
mod rewrap;
mod scope;
mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

pub use self::layer::BranchKeyLayer;
pub use self::rewrap::BranchRewrapReport;
pub use self::scope::{BranchScope, Hierarchy, ScopeKind};
pub use self::store::{BranchKeyRecord, BranchKeyStore};

use self::cache::TtlCells;
use self::crypto::BranchRef;
use crate::{DataKey, EncryptionContext, Error, KmsProvider, Result, WrappedKey};

/// The suffix of the provider name branch-wrapped data keys record.
pub const BRANCH_PROVIDER_SUFFIX: &str = "+branch";

/// The branch-key layer (see the module docs).
#[derive(Debug)]
pub struct BranchKeyProvider {
    inner: Arc<dyn KmsProvider>,
    /// Providers that only unwrap branch keys they wrapped earlier (during a migration to
    /// another provider).
    decrypt_only: Vec<Arc<dyn KmsProvider>>,
    store: Arc<dyn BranchKeyStore>,
    hierarchy: Hierarchy,
    /// `INNER+branch`.
    branch_name: String,
    /// The name of this layer: the inner provider's when the hierarchy is off.
    name: String,
    /// Unwrapped branch keys by branch version.
    keys: TtlCells<BranchRef, Arc<DataKey>>,
    /// The current branch version of each scope, by [`BranchScope::lookup_key`].
    current: TtlCells<String, BranchRef>,
    /// The audit trail, which records each branch rotation (branch id and new version): a
    /// branch whose newest stored version is older than that was rolled back.
    trail: Option<Arc<dyn crate::audit::AuditLog>>,
}

impl BranchKeyProvider {
    /// A layer over `inner` keeping branch keys in `store`, grouping records as `hierarchy`
    /// says, keeping unwrapped branch keys for `ttl`. With [`Hierarchy::Off`] it wraps as
    /// `inner` does and only unwraps branch-wrapped keys (written before the hierarchy was
    /// turned off, until a rewrap moves them).
    pub fn new(
        inner: Arc<dyn KmsProvider>,
        store: Arc<dyn BranchKeyStore>,
        hierarchy: Hierarchy,
        ttl: Duration,
    ) -> Self {
        let branch_name = format!("{}{BRANCH_PROVIDER_SUFFIX}", inner.name());
        let name = if hierarchy == Hierarchy::Off {
            inner.name().to_owned()
        } else {
            branch_name.clone()
        };
        BranchKeyProvider {
            inner,
            decrypt_only: Vec::new(),
            store,
            hierarchy,
            branch_name,
            name,
            keys: TtlCells::new(ttl),
            current: TtlCells::new(ttl),
            trail: None,
        }
    }

    /// Checks the current version of each branch against `trail` when it is first used: the
    /// trail records every rotation ([`crate::SecureKeyManager::rewrap`] writes the rows), so
    /// a newer version deleted from the store (which would have new keys wrapped under the
    /// rotated-out one) is refused with the integrity error.
    pub fn with_audit_log(mut self, trail: Arc<dyn crate::audit::AuditLog>) -> Self {
        self.trail = Some(trail);
        self
    }

    /// Adds a provider used only to unwrap branch keys it wrapped (a migration from it to the
    /// inner provider; a rewrap moves them).
    pub fn with_decrypt_provider(mut self, provider: Arc<dyn KmsProvider>) -> Self {
        self.decrypt_only.push(provider);
        self
    }

    /// The hierarchy new data keys are wrapped under.
    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    /// The inner provider.
    pub fn inner(&self) -> &Arc<dyn KmsProvider> {
        &self.inner
    }

    /// Drops every cached version of branch `branch_id` (and the scope entries that point at
    /// it): the next use reads and unwraps it again. For revocation signals from elsewhere.
    pub fn evict(&self, branch_id: Uuid) {
        self.keys.evict_where(|k, _| k.id == branch_id);
        self.current
            .evict_where(|_, v| v.is_none_or(|r| r.id == branch_id));
    }

    /// Drops every cached branch key.
    pub fn evict_all(&self) {
        self.keys.clear();
        self.current.clear();
    }

    /// Number of unwrapped branch keys held.
    pub fn cached_branch_keys(&self) -> usize {
        self.keys.len()
    }

    /// Whether `context` is wrapped through a branch: a record's, with a hierarchy on.
    fn branch_scope(&self, context: &EncryptionContext) -> Option<BranchScope> {
        if !context.is_record() {
            return None;
        }
        self.hierarchy.scope_of(context.identity())
    }

    /// The provider that unwraps a branch row wrapped by `provider`.
    fn unwrapper(&self, provider: &str) -> Result<&Arc<dyn KmsProvider>> {
        std::iter::once(&self.inner)
            .chain(self.decrypt_only.iter())
            .find(|p| p.handles(provider))
            .ok_or_else(|| Error::ProviderNotConfigured {
                provider: provider.to_owned(),
            })
    }

    /// The branch key of a stored row, unwrapped and checked against the row's commitment.
    async fn open_row(&self, row: &BranchKeyRecord) -> Result<Arc<DataKey>> {
        let branch = BranchRef {
            id: row.branch_id,
            version: row.version,
        };
        let context = row.context();
        let key = self
            .unwrapper(&row.wrapped.provider)?
            .unwrap_key(&row.wrapped, &context)
            .await?;
        crypto::check_commitment(&key, branch, &row.scope, &row.commitment)?;
        Ok(Arc::new(key))
    }

    /// The unwrapped key of `branch`, from the cache or the store and the KMS.
    async fn branch_key(&self, branch: BranchRef) -> Result<Arc<DataKey>> {
        self.keys
            .get_or_load(&branch, || async {
                let row = self
                    .store
                    .branch_key(branch.id, branch.version)
                    .await?
                    // A data key naming a branch that is not there was not made here.
                    .ok_or_else(Error::integrity)?;
                if row.branch_id != branch.id || row.version != branch.version {
                    return Err(Error::integrity());
                }
                self.open_row(&row).await
            })
            .await
    }

    /// The current branch version of `scope` and its key: made (version 1) if the scope has
    /// no branch yet.
    async fn current_branch(&self, scope: &BranchScope) -> Result<(BranchRef, Arc<DataKey>)> {
        let branch = self
            .current
            .get_or_load(&scope.lookup_key(), || async {
                for _ in 0..3 {
                    if let Some(row) = self.store.current_branch_key(scope).await? {
                        if &row.scope != scope {
                            return Err(Error::integrity());
                        }
                        if !self.is_latest(&row, scope).await? {
                            // Rotated by another writer since it was read: read it again.
                            continue;
                        }
                        let branch = BranchRef {
                            id: row.branch_id,
                            version: row.version,
                        };
                        // Unwrapped (and its commitment checked) before any data key is
                        // wrapped under it.
                        self.keys
                            .get_or_load(&branch, || self.open_row(&row))
                            .await?;
                        return Ok(branch);
                    }
                    let branch = BranchRef {
                        id: Uuid::new_v4(),
                        version: 1,
                    };
                    if let Some(key) = self.make_branch(branch, scope).await? {
                        self.keys.insert(branch, key);
                        return Ok(branch);
                    }
                    // Another writer made this scope's branch meanwhile: use theirs.
                }
                Err(Error::Conflict {
                    identity: format!("branch key of {scope}"),
                })
            })
            .await?;
        Ok((branch, self.branch_key(branch).await?))
    }

    /// Whether `row`, read as the newest version of `scope`'s branch, is the latest version the
    /// audit trail records. `false` when the store moved on since (read it again).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when the trail records a later version the store no longer holds.
    async fn is_latest(&self, row: &BranchKeyRecord, scope: &BranchScope) -> Result<bool> {
        let Some(trail) = &self.trail else {
            return Ok(true);
        };
        let latest = trail.latest_revisions(&[row.branch_id]).await?;
        let Some(&audited) = latest.get(&row.branch_id) else {
            return Ok(true);
        };
        if u64::from(row.version) >= audited {
            return Ok(true);
        }
        let again = self.store.current_branch_key(scope).await?;
        if again.is_some_and(|a| a.branch_id != row.branch_id || a.version != row.version) {
            return Ok(false);
        }
        tracing::debug!(
            %scope,
            branch = %row.branch_id,
            stored = row.version,
            audited,
            "a branch key's newest version is older than the audit trail's latest rotation of it"
        );
        Err(Error::Integrity {
            identity: Some(format!(
                "the branch key of {scope} (the store's newest version is {}, the audit trail \
                 records version {audited}: a newer version was removed)",
                row.version
            )),
        })
    }

    /// Makes and stores version `branch` of a branch key for `scope`; `None` if that scope
    /// version exists already.
    async fn make_branch(
        &self,
        branch: BranchRef,
        scope: &BranchScope,
    ) -> Result<Option<Arc<DataKey>>> {
        let key = DataKey::generate()?;
        let context = scope.key_context(branch.id, branch.version);
        let wrapped = self.inner.wrap_key(&key, &context).await?;
        let row = BranchKeyRecord {
            branch_id: branch.id,
            version: branch.version,
            scope: scope.clone(),
            wrapped,
            commitment: crypto::commitment(&key, branch, scope)?,
            created_at: Utc::now(),
        };
        if !self.store.insert_branch_key(&row).await? {
            return Ok(None);
        }
        tracing::info!(scope = %scope, branch = %branch.id, version = branch.version, "made a branch key");
        Ok(Some(Arc::new(key)))
    }

    /// Wraps `key` under the current branch of `scope`.
    async fn wrap_in_branch(
        &self,
        scope: &BranchScope,
        key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let (branch, branch_key) = self.current_branch(scope).await?;
        let ciphertext = crypto::wrap(&branch_key, branch, key, context)?;
        Ok(WrappedKey::new(
            &self.branch_name,
            branch.to_master_key_ref(),
            ciphertext,
        ))
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl KmsProvider for BranchKeyProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// The inner provider's: branch keys are wrapped under it.
    fn master_key_ref(&self) -> String {
        self.inner.master_key_ref()
    }

    fn is_retired(&self, master_key_ref: &str) -> bool {
        BranchRef::parse(master_key_ref).is_none() && self.inner.is_retired(master_key_ref)
    }

    fn handles(&self, provider: &str) -> bool {
        provider == self.branch_name || self.inner.handles(provider)
    }

    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        match self.branch_scope(context) {
            Some(scope) => self.wrap_in_branch(&scope, key, context).await,
            None => self.inner.wrap_key(key, context).await,
        }
    }

    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        if wrapped.provider != self.branch_name {
            return self.inner.unwrap_key(wrapped, context).await;
        }
        if !context.is_record() {
            return Err(Error::integrity());
        }
        let branch = BranchRef::parse(&wrapped.master_key_ref).ok_or_else(Error::integrity)?;
        let key = self.branch_key(branch).await?;
        crypto::unwrap(&key, branch, &wrapped.ciphertext, context)
    }

    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey)> {
        match self.branch_scope(context) {
            Some(scope) => {
                let key = DataKey::generate()?;
                let wrapped = self.wrap_in_branch(&scope, &key, context).await?;
                Ok((key, wrapped))
            }
            None => self.inner.generate_data_key(context).await,
        }
    }

    async fn is_current(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<bool> {
        let Some(scope) = self.branch_scope(context) else {
            return self.inner.is_current(wrapped, context).await;
        };
        if wrapped.provider != self.branch_name {
            return Ok(false);
        }
        let Some(branch) = BranchRef::parse(&wrapped.master_key_ref) else {
            return Ok(false);
        };
        let current = match self.current.peek(&scope.lookup_key()) {
            Some(c) => Some(c),
            None => self
                .store
                .current_branch_key(&scope)
                .await?
                .map(|row| BranchRef {
                    id: row.branch_id,
                    version: row.version,
                }),
        };
        Ok(current == Some(branch))
    }
}

/// Revocation from elsewhere: a manager with a change feed (PostgreSQL) tells the layer when
/// any process made a new version of a branch or rewrapped it (`branch:<id>`), and the
/// cached versions of that branch are dropped at once instead of at the end of their TTL.
/// When the feed (re)connects, changes may have been missed: every cached branch key goes.
impl crate::ChangeSubscriber for BranchKeyProvider {
    fn changed(&self, change: &crate::Change) {
        if let crate::Change::Branch(id) = change
            && let Ok(id) = Uuid::parse_str(id)
        {
            self.evict(id);
        }
    }

    fn resync(&self) {
        self.evict_all();
    }
}
