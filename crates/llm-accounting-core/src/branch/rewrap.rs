//! Branch-key maintenance for a rewrap: moving branch keys under the inner provider's
//! current master key (O(branches) KMS calls, whatever the number of records) and rotating
//! branches (a new version per branch; records move onto it in the same rewrap).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::crypto::BranchRef;
use super::{BranchKeyProvider, BranchKeyRecord};
use crate::{EncryptionContext, KmsProvider, Result};

/// What a rewrap did to branch keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BranchRewrapReport {
    /// Branch key versions moved under the current master key (with `check_only`: that need
    /// to be).
    pub rewrapped: u64,
    /// Branches given a new version (with `check_only`: that would be).
    pub rotated: u64,
}

/// Branch rows read per query.
const PAGE: usize = 200;

impl BranchKeyProvider {
    /// Moves every branch key version not under the inner provider's current master key
    /// under it (one unwrap and one wrap each); with `rotate`, also makes the next version of
    /// every branch. With `check_only`, counts and changes nothing.
    ///
    /// The branch part of a rewrap: [`crate::SecureKeyManager::rewrap`] calls it first on the
    /// layer given to [`crate::SecureKeyManagerBuilder::branch_keys`], so that records then
    /// move onto the current branch versions.
    pub async fn rewrap_branch_keys(
        &self,
        rotate: bool,
        check_only: bool,
    ) -> Result<BranchRewrapReport> {
        self.rewrap_branch_keys_listed(rotate, check_only)
            .await
            .map(|(report, _)| report)
    }

    /// [`BranchKeyProvider::rewrap_branch_keys`], also returning each branch version a
    /// rotation made (branch id, version): what the audit trail records of it.
    pub async fn rewrap_branch_keys_listed(
        &self,
        rotate: bool,
        check_only: bool,
    ) -> Result<(BranchRewrapReport, Vec<(Uuid, u32)>)> {
        let mut report = BranchRewrapReport::default();
        let mut made = Vec::new();
        // The newest version of each branch, for rotation.
        let mut newest: BTreeMap<Uuid, BranchKeyRecord> = BTreeMap::new();
        let mut after = None;
        loop {
            let page = self.store.branch_keys(after, PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some((last.branch_id, last.version));
            for row in page {
                let context = row.context();
                if !self.inner.is_current(&row.wrapped, &context).await? {
                    report.rewrapped += 1;
                    if !check_only {
                        self.rewrap_row(&row, &context).await?;
                    }
                }
                if rotate
                    && newest
                        .get(&row.branch_id)
                        .is_none_or(|n| n.version < row.version)
                {
                    newest.insert(row.branch_id, row);
                }
            }
        }
        for row in newest.values() {
            report.rotated += 1;
            if check_only {
                continue;
            }
            let next = BranchRef {
                id: row.branch_id,
                version: row.version + 1,
            };
            // None: a concurrent rotation made it; that is as good.
            if let Some(key) = self.make_branch(next, &row.scope).await? {
                self.keys.insert(next, key);
            }
            made.push((next.id, next.version));
            self.current
                .evict_where(|k, _| *k == row.scope.lookup_key());
        }
        if report != BranchRewrapReport::default() {
            tracing::info!(
                rewrapped = report.rewrapped,
                rotated = report.rotated,
                check_only,
                "branch keys"
            );
        }
        Ok((report, made))
    }

    /// Rewraps one branch key version under the inner provider (compare-and-set on its old
    /// wrapping; a row a concurrent run moved is left as it is).
    async fn rewrap_row(&self, row: &BranchKeyRecord, context: &EncryptionContext) -> Result<()> {
        let key = self.open_row(row).await?;
        let rewrapped = self.inner.wrap_key(&key, context).await?;
        self.store
            .replace_branch_key_wrapping(
                row.branch_id,
                row.version,
                &rewrapped,
                &row.wrapped.provider,
                &row.wrapped.master_key_ref,
            )
            .await?;
        Ok(())
    }
}
