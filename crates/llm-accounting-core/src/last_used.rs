//! Throttled, batched persistence of `last_used_at`.
//!
//! A cache hit must not cost a database write. Each cached key remembers when its last use was
//! noted; a use is noted at most once per `interval` per key (default 60 s). Noted uses go to a
//! pending map that a background task (or an explicit `flush`) writes in one batch. So
//! `last_used_at` is exact to within `interval`, and a busy key costs one write per interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cache::CachedKey;
use crate::{KeyRepository, Result};

#[derive(Debug)]
pub(crate) struct LastUsed {
    interval_secs: i64,
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    flushing: AtomicBool,
}

impl LastUsed {
    pub(crate) fn new(interval: Duration) -> Self {
        LastUsed {
            interval_secs: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            pending: Mutex::new(HashMap::new()),
            flushing: AtomicBool::new(false),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, DateTime<Utc>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a use of `entry`; returns whether something new is pending.
    pub(crate) fn note(&self, entry: &CachedKey) -> bool {
        let now = Utc::now();
        let secs = now.timestamp();
        let last = entry.last_noted.load(Ordering::Relaxed);
        if secs.saturating_sub(last) < self.interval_secs && last != 0 {
            return false;
        }
        if entry
            .last_noted
            .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.pending().insert(entry.key_id, now);
        true
    }

    /// Forgets pending uses of a deleted key.
    pub(crate) fn forget(&self, key_id: Uuid) {
        self.pending().remove(&key_id);
    }

    /// Writes everything pending in one batch. On failure the batch is put back.
    pub(crate) async fn flush(&self, repo: &dyn KeyRepository) -> Result<()> {
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
        if self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        handle.spawn(async move {
            loop {
                let res = this.flush(repo.as_ref()).await;
                this.flushing.store(false, Ordering::Release);
                if let Err(e) = res {
                    // Kept pending; the next noted use or explicit flush tries again.
                    tracing::warn!(error = %e, "could not record last-used times");
                    break;
                }
                if this.pending().is_empty() || this.flushing.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }
}
