//! The in-process cache of decrypted keys.
//!
//! A hit is one read lock, one hash lookup and one monotonic clock read (~100 ns): a general
//! cache crate (moka) spent twice that on bookkeeping this cache does not need. Misses go
//! through a per-identity single-flight cell, so any number of concurrent gets of one cold key
//! make one read and one unwrap, and share its result or its error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use uuid::Uuid;

use crate::{ApiKey, KeyIdentity, Result};

/// Cache settings. The defaults: one hour, and at most 10,000 keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long a decrypted key may be served without reading the store again.
    pub ttl: Duration,
    /// Most keys held at once; the least recently used are evicted first.
    pub max_entries: u64,
    /// How often cached keys are checked against the store, so that a rotate, disable or
    /// delete made by another process (or another host) is seen here within this interval.
    /// An entry that has not been checked for three intervals (the store is unreachable, or
    /// no runtime runs the check) is read again instead of served. `Duration::ZERO` turns
    /// the check off: other processes' changes are then seen only when the TTL expires.
    pub refresh_interval: Duration,
}

impl CacheOptions {
    /// How long an unchecked entry may be served: three refresh intervals.
    pub fn max_staleness(&self) -> Option<Duration> {
        (!self.refresh_interval.is_zero()).then(|| self.refresh_interval.saturating_mul(3))
    }
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ttl: Duration::from_secs(3600),
            max_entries: 10_000,
            refresh_interval: Duration::from_secs(2),
        }
    }
}

/// What a load produces: the decrypted key and where it came from.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) key: ApiKey,
    pub(crate) key_id: Uuid,
    pub(crate) version: u32,
    /// The value's expiry: the entry is not served from then on.
    pub(crate) expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One cached key. The secret is zeroized when the last clone of the [`ApiKey`] is dropped:
/// on eviction, invalidation or `clear()` if no caller still holds it.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) key: ApiKey,
    pub(crate) key_id: Uuid,
    pub(crate) version: u32,
    /// Cache clock (ms) when loaded.
    loaded_ms: u64,
    /// Cache clock (ms) from which the entry is not served: `ttl` after loading, or the
    /// value's own expiry if sooner.
    deadline_ms: u64,
    /// Cache clock (ms) of the last hit, for least-recently-used eviction.
    last_access_ms: AtomicU64,
    /// Cache clock (s) of the last use handed to the last-used tracker (throttling);
    /// `i64::MIN` when none was.
    pub(crate) last_noted: AtomicI64,
}

/// A hit: the entry and the cache clock (ms) it was read at.
#[derive(Debug)]
pub(crate) struct Hit {
    pub(crate) entry: Arc<CachedKey>,
    pub(crate) now_ms: u64,
}

type Map<V> = HashMap<KeyIdentity, V, RandomState>;
type Flight = tokio::sync::OnceCell<Result<Arc<CachedKey>>>;

/// A TTL- and size-bounded map from identity to decrypted key with single-flight loading.
///
/// Writers bump an epoch after they change the store; a load that started before a bump does
/// not insert what it read, and the writer drops the identity's flight, so a get that starts
/// after a rotate/disable/delete returned never sees the old value.
#[derive(Debug)]
pub(crate) struct KeyCache {
    entries: RwLock<Map<Arc<CachedKey>>>,
    flights: Mutex<Map<Arc<Flight>>>,
    epoch: AtomicU64,
    ttl_ms: u64,
    /// Entries not checked against the store for this long are not served (`u64::MAX`: off).
    stale_ms: u64,
    /// Cache clock (ms) at which the last successful check against the store began.
    verified_ms: AtomicU64,
    max_entries: usize,
    base: Instant,
    last_sweep_ms: AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(options: CacheOptions) -> Self {
        KeyCache {
            entries: RwLock::new(Map::default()),
            flights: Mutex::new(Map::default()),
            epoch: AtomicU64::new(0),
            ttl_ms: u64::try_from(options.ttl.as_millis()).unwrap_or(u64::MAX),
            stale_ms: options.max_staleness().map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }),
            verified_ms: AtomicU64::new(0),
            max_entries: usize::try_from(options.max_entries).unwrap_or(usize::MAX),
            base: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    /// When the cache clock started: [`Hit::now_ms`] counts from it.
    pub(crate) fn clock(&self) -> Instant {
        self.base
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn read(&self) -> RwLockReadGuard<'_, Map<Arc<CachedKey>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map<Arc<CachedKey>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    fn flights(&self) -> MutexGuard<'_, Map<Arc<Flight>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, entry: &CachedKey, now_ms: u64) -> bool {
        now_ms >= entry.deadline_ms
    }

    /// Whether an entry went unchecked against the store for too long to be served.
    fn stale(&self, entry: &CachedKey, now_ms: u64) -> bool {
        let checked = entry
            .loaded_ms
            .max(self.verified_ms.load(Ordering::Acquire));
        now_ms.saturating_sub(checked) > self.stale_ms
    }

    /// A live cached key, without loading.
    pub(crate) fn get(&self, identity: &KeyIdentity) -> Option<Hit> {
        let entry = self.read().get(identity).cloned()?;
        let now_ms = self.now_ms();
        if self.expired(&entry, now_ms) || self.stale(&entry, now_ms) {
            return None;
        }
        entry.last_access_ms.store(now_ms, Ordering::Relaxed);
        Some(Hit { entry, now_ms })
    }

    /// The cached key, or the result of `load`; concurrent callers for one identity share a
    /// single load and its outcome. Errors are not cached.
    pub(crate) async fn get_or_load<F>(&self, identity: &KeyIdentity, load: F) -> Result<Hit>
    where
        F: Future<Output = Result<Loaded>>,
    {
        self.load_at(identity, None, load).await
    }

    /// The current epoch: a load of what was read after this is cached only if no writer
    /// changed the store since (see [`KeyCache::get_or_load_since`]).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// [`KeyCache::get_or_load`] for a load whose data was read before the call: it is cached
    /// only if no writer changed the store since `epoch` (taken before the read).
    pub(crate) async fn get_or_load_since<F>(
        &self,
        identity: &KeyIdentity,
        epoch: u64,
        load: F,
    ) -> Result<Hit>
    where
        F: Future<Output = Result<Loaded>>,
    {
        self.load_at(identity, Some(epoch), load).await
    }

    async fn load_at<F>(&self, identity: &KeyIdentity, since: Option<u64>, load: F) -> Result<Hit>
    where
        F: Future<Output = Result<Loaded>>,
    {
        let flight = Arc::clone(self.flights().entry(identity.clone()).or_default());
        let result = flight
            .get_or_init(|| async {
                let epoch = since.unwrap_or_else(|| self.epoch.load(Ordering::SeqCst));
                let loaded = load.await?;
                let now_ms = self.now_ms();
                let mut deadline_ms = now_ms.saturating_add(self.ttl_ms);
                if let Some(at) = loaded.expires_at {
                    let left = (at - chrono::Utc::now()).num_milliseconds().max(0);
                    let left = u64::try_from(left).unwrap_or(0);
                    deadline_ms = deadline_ms.min(now_ms.saturating_add(left));
                }
                crate::memory_lock::lock_in_ram(loaded.key.expose_secret().as_bytes());
                let entry = Arc::new(CachedKey {
                    key: loaded.key,
                    key_id: loaded.key_id,
                    version: loaded.version,
                    loaded_ms: now_ms,
                    deadline_ms,
                    last_access_ms: AtomicU64::new(now_ms),
                    last_noted: AtomicI64::new(i64::MIN),
                });
                self.insert(identity, Arc::clone(&entry), epoch, now_ms);
                Ok(entry)
            })
            .await
            .clone();
        {
            let mut flights = self.flights();
            if flights
                .get(identity)
                .is_some_and(|f| Arc::ptr_eq(f, &flight))
            {
                flights.remove(identity);
            }
        }
        Ok(Hit {
            entry: result?,
            now_ms: self.now_ms(),
        })
    }

    /// Inserts a loaded entry unless a writer changed the store since the load began; keeps
    /// the size bound by dropping expired entries, then the least recently used sixteenth.
    fn insert(&self, identity: &KeyIdentity, entry: Arc<CachedKey>, epoch: u64, now_ms: u64) {
        if self.max_entries == 0 {
            return;
        }
        let mut dropped = Vec::new();
        {
            let mut map = self.write();
            if self.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
            let sweep_due = now_ms.saturating_sub(self.last_sweep_ms.load(Ordering::Relaxed))
                >= self.ttl_ms.min(60_000);
            let full = map.len() >= self.max_entries && !map.contains_key(identity);
            if sweep_due || full {
                self.last_sweep_ms.store(now_ms, Ordering::Relaxed);
                map.retain(|_, e| {
                    let keep = !self.expired(e, now_ms);
                    if !keep {
                        dropped.push(Arc::clone(e));
                    }
                    keep
                });
            }
            if map.len() >= self.max_entries && !map.contains_key(identity) {
                let mut by_age: Vec<(u64, KeyIdentity)> = map
                    .iter()
                    .map(|(k, e)| (e.last_access_ms.load(Ordering::Relaxed), k.clone()))
                    .collect();
                let n = (map.len() / 16).max(map.len() + 1 - self.max_entries);
                by_age.select_nth_unstable(n - 1);
                for (_, k) in by_age.into_iter().take(n) {
                    dropped.extend(map.remove(&k));
                }
            }
            dropped.extend(map.insert(identity.clone(), entry));
        }
        // Wiped here, outside the lock, unless a caller still holds a clone.
        drop(dropped);
    }

    /// Drops one identity at once (after its stored state changed).
    pub(crate) fn invalidate(&self, identity: &KeyIdentity) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let removed = self.write().remove(identity);
        self.flights().remove(identity);
        drop(removed);
    }

    /// Drops every entry, wiping keys no caller holds.
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let removed = std::mem::take(&mut *self.write());
        self.flights().clear();
        drop(removed);
    }

    /// Identity, key id and version of every entry, for checking them against the store.
    pub(crate) fn snapshot(&self) -> Vec<(KeyIdentity, Uuid, u32)> {
        self.read()
            .iter()
            .map(|(identity, e)| (identity.clone(), e.key_id, e.version))
            .collect()
    }

    /// Drops the entry of `identity` if it still holds `key_id` at `version` (a newer load
    /// is left alone).
    pub(crate) fn invalidate_if(&self, identity: &KeyIdentity, key_id: Uuid, version: u32) {
        let removed = {
            let mut map = self.write();
            if map
                .get(identity)
                .is_some_and(|e| e.key_id == key_id && e.version == version)
            {
                map.remove(identity)
            } else {
                None
            }
        };
        drop(removed);
    }

    /// Records that every entry was found current by a check that began at `started_ms`.
    pub(crate) fn mark_verified(&self, started_ms: u64) {
        self.verified_ms.fetch_max(started_ms, Ordering::AcqRel);
    }

    /// Number of live (unexpired) entries.
    pub(crate) fn len(&self) -> u64 {
        let now_ms = self.now_ms();
        let live = self
            .read()
            .values()
            .filter(|e| !self.expired(e, now_ms))
            .count();
        u64::try_from(live).unwrap_or(u64::MAX)
    }
}
