//! The provider conformance suite over the branch-key layer (see [`crate::branch`]), on top of
//! a real provider: every provider crate runs it beside its own run of
//! [`super::provider::run`].

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::branch::{
    BranchKeyProvider, BranchKeyRecord, BranchKeyStore, BranchScope, Hierarchy, ScopeKind,
};
use crate::layers::{self, KmsMetrics, LayerOptions};
use crate::{DataKey, EncryptionContext, Error, KeyIdentity, KmsProvider, MemoryKeyRepository};

/// Runs [`super::provider::run`] over a branch layer on `inner` for every hierarchy, with
/// branch keys in a [`MemoryKeyRepository`], and checks what the layer adds:
///
/// - the whole suite costs one call to `inner` (the branch key's wrap): data keys are wrapped
///   locally, and the layer binds the context whatever `inner` does (so it passes with the
///   default expectations even over a KMS that binds none);
/// - a fresh layer (cold cache) unwraps through `inner` once, with the branch's context;
/// - a branch row moved to another scope fails as [`Error::Integrity`].
pub async fn run(inner: Arc<dyn KmsProvider>) {
    for hierarchy in [
        Hierarchy::Store,
        Hierarchy::Service,
        Hierarchy::Project,
        Hierarchy::User,
    ] {
        run_one(Arc::clone(&inner), hierarchy).await;
    }
}

fn layer(
    inner: &Arc<dyn KmsProvider>,
    store: &Arc<MemoryKeyRepository>,
    hierarchy: Hierarchy,
) -> (BranchKeyProvider, Arc<KmsMetrics>) {
    let metrics = Arc::new(KmsMetrics::new());
    let options = LayerOptions {
        timeout: Some(Duration::from_secs(10)),
        ..LayerOptions::default()
    };
    let counted = layers::stack(Arc::clone(inner), &options, Arc::clone(&metrics));
    let branch = BranchKeyProvider::new(
        counted,
        Arc::clone(store) as Arc<dyn BranchKeyStore>,
        hierarchy,
        Duration::from_secs(600),
    );
    (branch, metrics)
}

async fn run_one(inner: Arc<dyn KmsProvider>, hierarchy: Hierarchy) {
    let store = Arc::new(MemoryKeyRepository::new());
    let (branch, metrics) = layer(&inner, &store, hierarchy);
    super::provider::run(&branch).await;
    let m = metrics.snapshot();
    assert_eq!(
        (m.wraps + m.generates, m.unwraps),
        (1, 0),
        "{hierarchy}: the suite over the branch layer makes one KMS call (its branch key's wrap): {m:?}"
    );
    assert_eq!(
        branch.name(),
        format!("{}{}", inner.name(), crate::branch::BRANCH_PROVIDER_SUFFIX)
    );

    let context = EncryptionContext::new(
        Uuid::from_u128(0x4242),
        KeyIdentity::from_parts("conformance", Some("alice"), Some("proj")).expect("valid"),
        1,
    );
    let dek = DataKey::generate().expect("rng");
    let wrapped = branch.wrap_key(&dek, &context).await.expect("wrap");

    // A cold layer: one unwrap of the branch key by the KMS, then local work only.
    let (cold, metrics) = layer(&inner, &store, hierarchy);
    for _ in 0..3 {
        let back = cold
            .unwrap_key(&wrapped, &context)
            .await
            .expect("cold unwrap");
        assert_eq!(back.expose_secret(), dek.expose_secret(), "{hierarchy}");
    }
    assert_eq!(metrics.snapshot().calls(), 1, "{hierarchy}: one KMS unwrap");

    // The branch row moved to another scope: refused, by the KMS or by the commitment.
    let rows = store.branch_keys(None, 10).await.expect("rows");
    assert_eq!(rows.len(), 1, "{hierarchy}: one branch");
    let row = rows.into_iter().next().expect("row");
    let kind = match row.scope.kind() {
        ScopeKind::Store => ScopeKind::Service,
        other => other,
    };
    let moved = BranchScope::new(kind, Some("elsewhere".into())).expect("scope");
    store.overwrite_branch_key(BranchKeyRecord {
        scope: moved,
        ..row.clone()
    });
    let (cold, _) = layer(&inner, &store, hierarchy);
    match cold.unwrap_key(&wrapped, &context).await {
        Err(Error::Integrity { .. }) => {}
        other => panic!("{hierarchy}: a branch row moved to another scope: {other:?}"),
    }
    store.overwrite_branch_key(row);
}
