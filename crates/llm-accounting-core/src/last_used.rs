//! Throttled, batched persistence of `last_used_at`.
//!
//! A cache hit must not cost a database write. Each cached key remembers when its last use was
//! noted; a use is noted at most once per `interval` per key (default 60 s). Noted uses go to a
//! pending map that a background task (or an explicit `flush`) writes in one batch. So
//! `last_used_at` is exact to within `interval`, and a busy key costs one write per interval.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cache::Hit;
use crate::{KeyRepository, Result};

#[derive(Debug)]
pub(crate) struct LastUsed {
    interval_secs: i64,
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    /// Held while a batch is being written, so that an explicit flush (and so `shutdown`)
    /// waits for a background flush in flight instead of returning before it has landed.
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl LastUsed {
    pub(crate) fn new(interval: Duration) -> Self {
        LastUsed {
            interval_secs: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            pending: Mutex::new(HashMap::new()),
            flushing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, DateTime<Utc>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a use of a cached key; returns whether something new is pending. Reads the
    /// wall clock only when the use is noted, at most once per interval per key.
    pub(crate) fn note(&self, hit: &Hit) -> bool {
        let entry = &hit.entry;
        let secs = i64::try_from(hit.now_ms / 1000).unwrap_or(i64::MAX);
        let last = entry.last_noted.load(Ordering::Relaxed);
        if last != i64::MIN && secs.saturating_sub(last) < self.interval_secs {
            return false;
        }
        if entry
            .last_noted
            .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.pending().insert(entry.key_id, Utc::now());
        true
    }

    /// Forgets pending uses of a deleted key.
    pub(crate) fn forget(&self, key_id: Uuid) {
        self.pending().remove(&key_id);
    }

    /// Writes everything pending in one batch, after any flush in flight has finished. On
    /// failure the batch is put back.
    pub(crate) async fn flush(&self, repo: &dyn KeyRepository) -> Result<()> {
        let _writing = self.flushing.lock().await;
        self.write_pending(repo).await
    }

    async fn write_pending(&self, repo: &dyn KeyRepository) -> Result<()> {
        let batch: Vec<(Uuid, DateTime<Utc>)> = self.pending().drain().collect();
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = repo.record_last_used(&batch).await {
            let mut p = self.pending();
            for (id, at) in batch {
                p.entry(id).or_insert(at);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Starts a background flush on the current Tokio runtime, unless one is running or there
    /// is no runtime (then the uses wait for the next flush).
    pub(crate) fn spawn_flush(self: &Arc<Self>, repo: Arc<dyn KeyRepository>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(writing) = Arc::clone(&self.flushing).try_lock_owned() else {
            return;
        };
        let this = Arc::clone(self);
        handle.spawn(async move {
            let _writing = writing;
            loop {
                if let Err(e) = this.write_pending(repo.as_ref()).await {
                    // Kept pending; the next noted use or explicit flush tries again.
                    tracing::warn!(error = %e, "could not record last-used times");
                    break;
                }
                if this.pending().is_empty() {
                    break;
                }
            }
        });
    }
}
