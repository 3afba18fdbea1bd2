//! Throttled, batched persistence of `last_used_at`.
//!
//! A cache hit must not cost a database write. Each cached key remembers when its last use was
//! noted; a use is noted at most once per `interval` per key (default 60 s). Noted uses go to a
//! [`Batcher`] that writes them in one batch in the background (or on an explicit `flush`). So
//! `last_used_at` is exact to within `interval`, and a busy key costs one write per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::batcher::{Batcher, Pending, Sink};
use crate::cache::Hit;
use crate::{KeyRepository, Result};

/// Last uses waiting to be written, one per key (the latest wins).
#[derive(Debug, Default)]
pub(crate) struct Uses(HashMap<Uuid, DateTime<Utc>>);

impl Pending for Uses {
    type Item = (Uuid, DateTime<Utc>);

    fn push(&mut self, (key_id, at): Self::Item) {
        self.0.insert(key_id, at);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn restore(&mut self, failed: Self) {
        for (key_id, at) in failed.0 {
            // A use noted meanwhile is newer: keep it.
            self.0.entry(key_id).or_insert(at);
        }
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
    pub(crate) fn new(interval: Duration, repo: Arc<dyn KeyRepository>) -> Self {
        LastUsed {
            interval_secs: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            batcher: Arc::new(Batcher::new(RepositorySink(repo), "last-used times")),
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
        self.batcher.pending().0.remove(&key_id);
    }

    /// Writes everything pending in one batch, after any write in flight has finished. On
    /// failure the batch is kept for the next try.
    pub(crate) async fn flush(&self) -> Result<()> {
        self.batcher.flush().await
    }
}
