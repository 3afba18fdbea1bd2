//! Unwrapped branch keys and the current branch of each scope, kept for a time, loaded once
//! however many callers ask at the same moment.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::Result;

/// One entry: loaded at most once; expired `ttl` after it was made.
#[derive(Debug)]
struct Cell<V> {
    value: OnceCell<V>,
    expires: Instant,
}

/// A map of single-flight, expiring entries. A value is dropped (and, for a zeroizing type,
/// wiped once no caller holds it) when it expires and is looked up, or is evicted.
#[derive(Debug)]
pub(crate) struct TtlCells<K, V> {
    cells: Mutex<Cells<K, V>>,
    ttl: Duration,
}

/// The entries, and the size at which expired ones are next swept out.
#[derive(Debug)]
struct Cells<K, V> {
    map: HashMap<K, Arc<Cell<V>>>,
    sweep_at: usize,
}

/// Expired entries are swept when the map reaches this size, then twice the size left.
const FIRST_SWEEP: usize = 64;

impl<K: Eq + Hash + Clone, V: Clone> TtlCells<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        TtlCells {
            cells: Mutex::new(Cells {
                map: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cells<K, V>> {
        // A panic while holding the lock leaves the map consistent (no partial update).
        self.cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cell of `key`: the existing one, unless it holds an expired value; then a new one.
    /// A cell still loading is shared even if its time is up, so that concurrent callers make
    /// one load.
    fn cell(&self, key: &K) -> Arc<Cell<V>> {
        let now = Instant::now();
        let mut cells = self.lock();
        if let Some(c) = cells.map.get(key)
            && !(c.value.initialized() && c.expires <= now)
        {
            return Arc::clone(c);
        }
        // Drop expired entries now and then (amortized), so the map does not grow with dead
        // ones.
        if cells.map.len() >= cells.sweep_at {
            cells
                .map
                .retain(|_, c| !(c.value.initialized() && c.expires <= now));
            cells.sweep_at = (cells.map.len() * 2).max(FIRST_SWEEP);
        }
        let c = Arc::new(Cell {
            value: OnceCell::new(),
            expires: now + self.ttl,
        });
        cells.map.insert(key.clone(), Arc::clone(&c));
        c
    }

    /// The value of `key`, loaded by `load` if it is not cached; concurrent calls for one key
    /// share one load. A failed load is not kept: the next call loads again.
    pub(crate) async fn get_or_load<F, Fut>(&self, key: &K, load: F) -> Result<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        let cell = self.cell(key);
        cell.value.get_or_try_init(load).await.cloned()
    }

    /// The cached value of `key`, if it is loaded and not expired.
    pub(crate) fn peek(&self, key: &K) -> Option<V> {
        let cells = self.lock();
        let c = cells.map.get(key)?;
        (c.expires > Instant::now()).then(|| c.value.get().cloned())?
    }

    /// Caches `value` for `key` (a value made here, so nothing needs loading).
    pub(crate) fn insert(&self, key: K, value: V) {
        let c = Arc::new(Cell {
            value: OnceCell::new_with(Some(value)),
            expires: Instant::now() + self.ttl,
        });
        self.lock().map.insert(key, c);
    }

    /// Drops the entries whose key matches.
    pub(crate) fn evict_where(&self, mut matches: impl FnMut(&K, Option<&V>) -> bool) {
        self.lock().map.retain(|k, c| !matches(k, c.value.get()));
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        self.lock().map.clear();
    }

    /// Number of entries holding a value.
    pub(crate) fn len(&self) -> usize {
        self.lock()
            .map
            .values()
            .filter(|c| c.value.initialized())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_loads_of_one_key_load_once_and_expire() {
        let cells: Arc<TtlCells<u32, u32>> = Arc::new(TtlCells::new(Duration::from_secs(10)));
        let loads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cells, loads) = (Arc::clone(&cells), Arc::clone(&loads));
                tokio::spawn(async move {
                    cells
                        .get_or_load(&1, || async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(7)
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("task").expect("load"), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cells.peek(&1), Some(7));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(cells.peek(&1), None);
        let v = cells
            .get_or_load(&1, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(8)
            })
            .await
            .expect("reload");
        assert_eq!((v, loads.load(Ordering::SeqCst)), (8, 2));
        cells.evict_where(|k, _| *k == 1);
        assert_eq!((cells.peek(&1), cells.len()), (None, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_loads_are_not_kept() {
        let cells: TtlCells<u32, u32> = TtlCells::new(Duration::from_secs(10));
        let r = cells
            .get_or_load(&1, || async { Err(crate::Error::integrity()) })
            .await;
        assert!(r.is_err());
        let v = cells.get_or_load(&1, || async { Ok(3) }).await;
        assert_eq!(v.expect("second load"), 3);
    }
}
