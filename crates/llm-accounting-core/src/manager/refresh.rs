//! Cross-process freshness of the cache.
//!
//! Several processes (or hosts) may share one store. When one of them rotates, disables or
//! deletes a key, the others must stop serving their cached copy soon, not after the TTL. A
//! background task of each manager checks every cached entry against the store once per
//! `refresh_interval`: one indexed read of (id, state, current version) per
//! [`KEY_STAMPS_BATCH`] entries, whatever the traffic. Entries whose key is gone, disabled or
//! at another version are dropped; the next get reads the store again.
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
use crate::{KEY_STAMPS_BATCH, KeyRepository, KeyState, Result, SecureKeyManager};

impl SecureKeyManager {
    /// Starts the background check of cached keys against the store, once, on the Tokio
    /// runtime of the first cache miss. It ends when the last clone of the manager is dropped.
    pub(super) fn ensure_refresher(&self) {
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
                if let Err(e) = check_cached(&inner.cache, inner.repo.as_ref()).await {
                    tracing::warn!(error = %e, "could not check cached keys against the store");
                }
            }
        });
    }
}

/// Checks every cached entry against `repo` once; drops the ones that changed.
async fn check_cached(cache: &KeyCache, repo: &dyn KeyRepository) -> Result<()> {
    let started_ms = cache.now_ms();
    let entries = cache.snapshot();
    for chunk in entries.chunks(KEY_STAMPS_BATCH) {
        let ids: Vec<_> = chunk.iter().map(|(_, id, _)| *id).collect();
        let stamps: HashMap<_, _> = repo
            .key_stamps(&ids)
            .await?
            .into_iter()
            .map(|s| (s.key_id, s))
            .collect();
        for (identity, key_id, version) in chunk {
            let current = stamps
                .get(key_id)
                .is_some_and(|s| s.state == KeyState::Active && s.current_version == *version);
            if !current {
                tracing::debug!(%identity, "cached key changed in the store; dropped");
                cache.invalidate_if(identity, *key_id, *version);
            }
        }
    }
    cache.mark_verified(started_ms);
    Ok(())
}
