//! The in-process cache of decrypted keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use uuid::Uuid;

use crate::{ApiKey, KeyIdentity, Result};

/// Cache settings. The defaults follow the original plan: one hour, and at most 10,000 keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long a decrypted key may be served without reading the store again.
    pub ttl: Duration,
    /// Most keys held at once; the least useful are evicted first.
    pub max_entries: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ttl: Duration::from_secs(3600),
            max_entries: 10_000,
        }
    }
}

/// One cached key. The secret is zeroized when the last clone of the [`ApiKey`] is dropped:
/// on eviction, invalidation or `clear()` if no caller still holds it.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) key: ApiKey,
    pub(crate) key_id: Uuid,
    /// Unix seconds of the last use handed to the last-used tracker (throttling).
    pub(crate) last_noted: AtomicI64,
}

/// A TTL- and size-bounded map from identity to decrypted key with single-flight loading.
///
/// Writers bump an epoch after they change the store; a load that started before a bump
/// removes what it inserted, so a rotate/disable/delete racing a cold read never leaves the old
/// value cached.
#[derive(Debug)]
pub(crate) struct KeyCache {
    map: moka::future::Cache<KeyIdentity, Arc<CachedKey>>,
    epoch: AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(options: CacheOptions) -> Self {
        KeyCache {
            map: moka::future::Cache::builder()
                .time_to_live(options.ttl)
                .max_capacity(options.max_entries)
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// A cached key, without loading.
    pub(crate) async fn get(&self, identity: &KeyIdentity) -> Option<Arc<CachedKey>> {
        self.map.get(identity).await
    }

    /// The cached key, or the result of `load`; concurrent callers for one identity share a
    /// single load. Errors are not cached.
    pub(crate) async fn get_or_load<F>(
        &self,
        identity: &KeyIdentity,
        load: F,
    ) -> Result<Arc<CachedKey>>
    where
        F: Future<Output = Result<Arc<CachedKey>>>,
    {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let out = self
            .map
            .try_get_with(identity.clone(), load)
            .await
            .map_err(Arc::unwrap_or_clone)?;
        if self.epoch.load(Ordering::SeqCst) != epoch {
            self.map.invalidate(identity).await;
        }
        Ok(out)
    }

    /// Drops one identity at once (after its stored state changed).
    pub(crate) async fn invalidate(&self, identity: &KeyIdentity) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.invalidate(identity).await;
        self.map.run_pending_tasks().await;
    }

    /// Drops every entry, wiping keys no caller holds.
    pub(crate) async fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.invalidate_all();
        self.map.run_pending_tasks().await;
    }

    /// Number of entries (after pending maintenance).
    pub(crate) async fn len(&self) -> u64 {
        self.map.run_pending_tasks().await;
        self.map.entry_count()
    }
}
