//! Cross-process freshness of the cache.
//!
//! Several processes (or hosts) may share one store. When one of them rotates, disables or
//! deletes a key, the others must stop serving their cached copy soon, not after the TTL. A
//! background task of each manager checks every cached entry against the store once per
//! `refresh_interval`: one indexed read of the key records per [`KEY_STAMPS_BATCH`] entries,
//! whatever the traffic. Entries whose key is gone, disabled, at another version, or (in a
//! sealed store) whose record no longer verifies are dropped; the next get reads the store
//! again.
//!
//! With a change feed ([`crate::changes`]) the check reads nothing while the feed is live:
//! changes are pushed, and the interval is only the pace of polling while the feed is down.
//!
//! If the check cannot run (the store is down, or no Tokio runtime drives the task), entries
//! that went unchecked for three intervals are not served: gets read the store, and fail with
//! "database unavailable" while it is down, rather than serve a key that may have been
//! revoked meanwhile.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::Inner;
use crate::cache::KeyCache;
use crate::seal::StateKeys;
use crate::{KEY_STAMPS_BATCH, KeyRepository, KeyState, Result, SecureKeyManager};

impl SecureKeyManager {
    /// Starts the background check of cached keys against the store, once, on the Tokio
    /// runtime of the first cache miss. It ends when the last clone of the manager is dropped.
    pub(super) fn ensure_refresher(&self) {
        self.ensure_listener();
        let interval = self.inner.refresh_interval;
        if interval.is_zero() || self.inner.refresher_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                if inner.listener.is_live() {
                    // Every change is being delivered: nothing to read.
                    inner.cache.mark_verified(inner.cache.now_ms());
                    continue;
                }
                let keys = inner.state.cached();
                if let Err(e) =
                    check_cached(&inner.cache, inner.repo.as_ref(), keys.as_deref()).await
                {
                    tracing::warn!(error = %e, "could not check cached keys against the store");
                }
            }
        });
    }
}

/// Checks every cached entry against `repo` once; drops the ones that changed, and, in a
/// sealed store (`keys`), the ones whose record does not verify: a record set back to
/// active behind the manager's back is not served from the cache either.
pub(super) async fn check_cached(
    cache: &KeyCache,
    repo: &dyn KeyRepository,
    keys: Option<&StateKeys>,
) -> Result<()> {
    let started_ms = cache.now_ms();
    let entries = cache.snapshot();
    for chunk in entries.chunks(KEY_STAMPS_BATCH) {
        let ids: Vec<_> = chunk.iter().map(|(_, id, _)| *id).collect();
        let records: HashMap<_, _> = repo
            .keys_by_id(&ids)
            .await?
            .into_iter()
            .map(|k| (k.id, k))
            .collect();
        for (identity, key_id, version) in chunk {
            let current = records.get(key_id).is_some_and(|k| {
                let verified = match (keys, &k.seal) {
                    (Some(keys), _) => keys.verify(k).is_ok(),
                    (None, seal) => seal.is_none(),
                };
                verified && k.state == KeyState::Active && k.current_version == *version
            });
            if !current {
                tracing::debug!(%identity, "cached key changed in the store; dropped");
                cache.invalidate_if(identity, *key_id, *version);
            }
        }
    }
    cache.mark_verified(started_ms);
    Ok(())
}
