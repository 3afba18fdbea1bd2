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

use crate::cache::KeyCache;
use crate::{KEY_STAMPS_BATCH, KeyRepository, KeyState, Result};

/// Checks every cached entry against `repo` once; drops the ones that changed.
pub(crate) async fn check_cached(cache: &KeyCache, repo: &dyn KeyRepository) -> Result<()> {
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
