//! Where branch keys are kept: one row per branch version, the key wrapped by the KMS.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::BranchScope;
use crate::{Result, WrappedKey};

/// One version of one branch key (a `branch_keys` row). Nothing here is secret: the key is
/// wrapped by the KMS under the branch's context, and `commitment` binds the row's fields to
/// the key (see [`crate::branch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchKeyRecord {
    /// The branch, the same for all its versions.
    pub branch_id: Uuid,
    /// The version, from 1; a rotation adds the next one.
    pub version: u32,
    /// What the branch serves.
    pub scope: BranchScope,
    /// The branch key, wrapped by the KMS under the branch's context.
    pub wrapped: WrappedKey,
    /// HMAC-SHA-256 of the branch id, version and scope under a key derived from the branch
    /// key: an edited row fails it even under a KMS that binds no context (Azure).
    pub commitment: Vec<u8>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl BranchKeyRecord {
    /// The context this branch key version is wrapped under (see
    /// [`BranchScope::key_context`]).
    pub fn context(&self) -> crate::EncryptionContext {
        self.scope.key_context(self.branch_id, self.version)
    }
}

/// Persistence of branch keys: implemented by the sea-orm store and by
/// [`crate::MemoryKeyRepository`]. No crypto happens here.
#[async_trait]
pub trait BranchKeyStore: Send + Sync + Debug {
    /// The newest version of the branch serving `scope` (found by
    /// [`BranchScope::lookup_key`]), if there is one.
    async fn current_branch_key(&self, scope: &BranchScope) -> Result<Option<BranchKeyRecord>>;

    /// Version `version` of branch `branch_id`, if it exists.
    async fn branch_key(&self, branch_id: Uuid, version: u32) -> Result<Option<BranchKeyRecord>>;

    /// Inserts a branch version unless that branch version, or that version of a branch of
    /// the same scope, exists (a concurrent writer made it); returns whether it was inserted.
    async fn insert_branch_key(&self, key: &BranchKeyRecord) -> Result<bool>;

    /// Up to `limit` branch versions after `after` (by branch id, then version), in that
    /// order.
    async fn branch_keys(
        &self,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<BranchKeyRecord>>;

    /// Replaces a branch version's wrapping by compare-and-set, if it is still wrapped by
    /// `old_provider` under `old_ref`; returns whether it did.
    async fn replace_branch_key_wrapping(
        &self,
        branch_id: Uuid,
        version: u32,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool>;
}

#[async_trait]
impl<T: BranchKeyStore + ?Sized> BranchKeyStore for Arc<T> {
    async fn current_branch_key(&self, scope: &BranchScope) -> Result<Option<BranchKeyRecord>> {
        (**self).current_branch_key(scope).await
    }
    async fn branch_key(&self, branch_id: Uuid, version: u32) -> Result<Option<BranchKeyRecord>> {
        (**self).branch_key(branch_id, version).await
    }
    async fn insert_branch_key(&self, key: &BranchKeyRecord) -> Result<bool> {
        (**self).insert_branch_key(key).await
    }
    async fn branch_keys(
        &self,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<BranchKeyRecord>> {
        (**self).branch_keys(after, limit).await
    }
    async fn replace_branch_key_wrapping(
        &self,
        branch_id: Uuid,
        version: u32,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool> {
        (**self)
            .replace_branch_key_wrapping(branch_id, version, rewrapped, old_provider, old_ref)
            .await
    }
}
