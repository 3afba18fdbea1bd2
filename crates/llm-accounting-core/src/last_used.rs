//! Throttled, batched persistence of `last_used_at`.
//!
//! A cache hit must not cost a database write. Each cached key remembers when its last use was
//! noted; a use is noted at most once per `interval` per key (default 60 s). Noted uses go to a
//! [`Batcher`] that writes them in the background (or on an explicit `flush`), at most
//! [`USES_PER_WRITE`] per write. So `last_used_at` is exact to within `interval`, and a busy key
//! costs one write per interval.
//!
//! While the database is busy or down, uses stay pending (one per key, the latest) and the
//! background writer tries again after a growing pause; a flush reports the database as
//! unavailable. At most as many keys as the cache holds have a use pending: a use of one more
//! key is dropped, and the number dropped is logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::batcher::{Batcher, Counted, Limits, Pending, Sink};
use crate::cache::Hit;
use crate::{KeyRepository, Result};

/// Most uses written at once (one write, which the store splits into short transactions).
pub(crate) const USES_PER_WRITE: usize = 500;

/// One noted use: which key, when.
impl Counted for (Uuid, DateTime<Utc>) {
    fn times(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        Some((self.1, self.1))
    }

    /// Uses have no record of a drop: the count is logged.
    fn dropped(_: u64, _: DateTime<Utc>, _: DateTime<Utc>) -> Option<Self> {
        None
    }
}

/// Last uses waiting to be written, one per key (the latest wins).
#[derive(Debug, Default)]
pub(crate) struct Uses(HashMap<Uuid, DateTime<Utc>>);

impl Pending for Uses {
    type Item = (Uuid, DateTime<Utc>);

    fn push(&mut self, (key_id, at): Self::Item) {
        self.0.insert(key_id, at);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// A newer use of a key already pending replaces it.
    fn grows_with(&self, (key_id, _): &Self::Item) -> bool {
        !self.0.contains_key(key_id)
    }

    fn take(&mut self, max: usize) -> Self {
        if self.0.len() <= max {
            return std::mem::take(self);
        }
        let keys: Vec<Uuid> = self.0.keys().take(max).copied().collect();
        Uses(
            keys.into_iter()
                .filter_map(|k| self.0.remove_entry(&k))
                .collect(),
        )
    }

    fn restore(&mut self, failed: Self) {
        for (key_id, at) in failed.0 {
            // A use noted meanwhile is newer: keep it.
            self.0.entry(key_id).or_insert(at);
        }
    }

    fn into_items(self) -> Vec<Self::Item> {
        self.0.into_iter().collect()
    }
}

/// Writes batches of uses to the repository.
#[derive(Debug)]
pub(crate) struct RepositorySink(Arc<dyn KeyRepository>);

impl Sink<Uses> for RepositorySink {
    async fn write(&self, batch: &Uses) -> Result<()> {
        let uses: Vec<(Uuid, DateTime<Utc>)> = batch.0.iter().map(|(k, t)| (*k, *t)).collect();
        self.0.record_last_used(&uses).await
    }
}

/// Notes uses of cached keys, at most once per interval per key, and writes them in batches.
#[derive(Debug)]
pub(crate) struct LastUsed {
    interval_secs: i64,
    batcher: Arc<Batcher<Uses, RepositorySink>>,
}

impl LastUsed {
    /// Notes uses at most once per `interval` per key, with uses of at most `max_pending`
    /// keys waiting to be written.
    pub(crate) fn new(
        interval: Duration,
        max_pending: usize,
        repo: Arc<dyn KeyRepository>,
    ) -> Self {
        let limits = Limits {
            max_pending,
            max_batch: USES_PER_WRITE,
        };
        LastUsed {
            interval_secs: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            batcher: Arc::new(Batcher::new(
                RepositorySink(repo),
                "last-used times",
                limits,
            )),
        }
    }

    /// Notes a use of a cached key and starts a background write if it was noted. Reads the
    /// wall clock only when the use is noted, at most once per interval per key.
    pub(crate) fn note(&self, hit: &Hit) {
        let entry = &hit.entry;
        let secs = i64::try_from(hit.now_ms / 1000).unwrap_or(i64::MAX);
        let last = entry.last_noted.load(Ordering::Relaxed);
        if last != i64::MIN && secs.saturating_sub(last) < self.interval_secs {
            return;
        }
        if entry
            .last_noted
            .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.batcher.add((entry.key_id, Utc::now()));
        self.batcher.spawn_write();
    }

    /// Forgets pending uses of a deleted key.
    pub(crate) fn forget(&self, key_id: Uuid) {
        self.batcher.with_pending(|uses| uses.0.remove(&key_id));
    }

    /// Writes everything pending, after any write in flight has finished. On failure what
    /// could not be written is kept for the next try (busy or unavailable database), or
    /// dropped and logged (any other error).
    pub(crate) async fn flush(&self) -> Result<()> {
        self.batcher.flush().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it is given.
    #[derive(Debug, Default)]
    struct Written(Mutex<Vec<usize>>);

    impl Sink<Uses> for Arc<Written> {
        async fn write(&self, batch: &Uses) -> Result<()> {
            self.0.lock().expect("lock").push(batch.len());
            Ok(())
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    /// The attack: uses of ever more keys while nothing can be written. At most
    /// `max_pending` keys have a use pending; a newer use of one of them still replaces its
    /// older one.
    #[tokio::test]
    async fn pending_uses_are_bounded_and_written_in_batches() {
        let written = Arc::new(Written::default());
        let limits = Limits {
            max_pending: 1_200,
            max_batch: USES_PER_WRITE,
        };
        let b = Arc::new(Batcher::new(
            Arc::clone(&written),
            "last-used times",
            limits,
        ));
        let keys: Vec<Uuid> = (0..2_000).map(|_| Uuid::new_v4()).collect();
        let accepted = keys.iter().filter(|k| b.add((**k, at(0)))).count();
        assert_eq!(accepted, 1_200, "bounded");
        assert!(
            b.add((keys[5], at(9))),
            "a pending key's newer use replaces it"
        );
        assert_eq!(b.with_pending(|u| u.0.get(&keys[5]).copied()), Some(at(9)));
        b.flush().await.expect("flush");
        assert_eq!(*written.0.lock().expect("lock"), [500, 500, 200]);
    }

    #[test]
    fn a_failed_batch_never_replaces_a_newer_use() {
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        let mut pending = Uses::default();
        pending.push((a, at(1)));
        pending.push((c, at(1)));
        let failed = pending.take(1);
        assert_eq!((failed.len(), pending.len()), (1, 1));
        let taken = *failed.0.keys().next().expect("one");
        pending.push((taken, at(5)));
        pending.restore(failed);
        assert_eq!(pending.0.get(&taken), Some(&at(5)), "the newer use is kept");
        assert_eq!(pending.len(), 2);
    }
}
