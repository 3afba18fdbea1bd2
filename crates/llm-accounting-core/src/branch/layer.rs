//! [`BranchKeyLayer`]: the settings of the branch-key layer, as a [`Layer`].

use std::sync::Arc;
use std::time::Duration;

use super::{BranchKeyProvider, BranchKeyStore, Hierarchy};
use crate::KmsProvider;
use crate::audit::AuditLog;
use crate::layers::Layer;

/// What a [`BranchKeyProvider`] is made of, but the provider it wraps: where branch keys are
/// kept, how records are grouped, how long unwrapped branch keys are cached, and the
/// providers that only unwrap branch keys they wrapped earlier. Outermost in the stack (see
/// [`crate::layers`]).
#[derive(Debug, Clone)]
pub struct BranchKeyLayer {
    store: Arc<dyn BranchKeyStore>,
    hierarchy: Hierarchy,
    ttl: Duration,
    decrypt_only: Vec<Arc<dyn KmsProvider>>,
    trail: Option<Arc<dyn AuditLog>>,
}

impl BranchKeyLayer {
    /// Branch keys kept in `store`, records grouped as `hierarchy` says, unwrapped branch keys
    /// kept for `ttl` (see [`BranchKeyProvider::new`]).
    pub fn new(store: Arc<dyn BranchKeyStore>, hierarchy: Hierarchy, ttl: Duration) -> Self {
        BranchKeyLayer {
            store,
            hierarchy,
            ttl,
            decrypt_only: Vec::new(),
            trail: None,
        }
    }

    /// Checks branches against the audit trail (see [`BranchKeyProvider::with_audit_log`]).
    pub fn with_audit_log(mut self, trail: Arc<dyn AuditLog>) -> Self {
        self.trail = Some(trail);
        self
    }

    /// Adds a provider used only to unwrap branch keys it wrapped (see
    /// [`BranchKeyProvider::with_decrypt_provider`]).
    pub fn with_decrypt_provider(mut self, provider: Arc<dyn KmsProvider>) -> Self {
        self.decrypt_only.push(provider);
        self
    }
}

impl Layer<Arc<dyn KmsProvider>> for BranchKeyLayer {
    type Layered = BranchKeyProvider;

    fn layer(&self, inner: Arc<dyn KmsProvider>) -> BranchKeyProvider {
        let layered =
            BranchKeyProvider::new(inner, Arc::clone(&self.store), self.hierarchy, self.ttl);
        let layered = match &self.trail {
            Some(trail) => layered.with_audit_log(Arc::clone(trail)),
            None => layered,
        };
        self.decrypt_only
            .iter()
            .fold(layered, |l, p| l.with_decrypt_provider(Arc::clone(p)))
    }
}
