//! The manager's side of a [`ChangeFeed`]: a task that listens for changes committed by any
//! process and drops the changed keys from the cache at once (see [`crate::changes`]).
//!
//! While the feed is live the periodic refresh ([`super::refresh`]) skips its reads of the
//! store; while it is down (not yet connected, or lost) the refresh polls as it does without
//! a feed. Each (re)connection starts with one check of every cached key against the store,
//! since changes committed before listening began were not delivered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use super::Inner;
use super::refresh::check_cached;
use crate::changes::{Change, ChangeFeed, ChangeStream, ChangeSubscriber};
use crate::{Result, SecureKeyManager};

/// First pause before subscribing again after a failed attempt; it doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The state of a manager's change listener.
#[derive(Debug)]
pub(super) struct Listener {
    feed: Option<Arc<dyn ChangeFeed>>,
    started: AtomicBool,
    /// Subscribed, and caught up with the store: notifications are to be trusted.
    live: AtomicBool,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    subscribers: RwLock<Vec<Arc<dyn ChangeSubscriber>>>,
}

impl Listener {
    pub(super) fn new(feed: Option<Arc<dyn ChangeFeed>>) -> Self {
        Listener {
            feed,
            started: AtomicBool::new(false),
            live: AtomicBool::new(false),
            task: Mutex::new(None),
            subscribers: RwLock::new(Vec::new()),
        }
    }

    /// Whether changes are being delivered now.
    pub(super) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn subscribers(&self) -> Vec<Arc<dyn ChangeSubscriber>> {
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the task (it is not started again).
    pub(super) fn stop(&self) {
        self.started.store(true, Ordering::Release);
        self.live.store(false, Ordering::Release);
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SecureKeyManager {
    /// Registers `subscriber` to be told of every change the feed delivers (for caches of
    /// other things derived from the store, such as branch keys). Without a feed nothing is
    /// ever delivered.
    pub fn subscribe_changes(&self, subscriber: Arc<dyn ChangeSubscriber>) {
        self.inner
            .listener
            .subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(subscriber);
    }

    /// Whether this manager has a change feed that is delivering changes now (false without
    /// a feed, before the first cache miss starts it, while it is down, after `shutdown`).
    pub fn change_feed_live(&self) -> bool {
        self.inner.listener.is_live()
    }

    /// Starts the change listener, once, on the Tokio runtime of the first cache miss.
    pub(super) fn ensure_listener(&self) {
        let listener = &self.inner.listener;
        let Some(feed) = &listener.feed else {
            return;
        };
        if listener.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if listener.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = handle.spawn(listen(Arc::downgrade(&self.inner), Arc::clone(feed)));
        *listener.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
    }
}

/// Drops what `change` names from the cache and tells the subscribers.
fn apply(inner: &Inner, change: &Change) {
    if let Change::Key(id) = change {
        tracing::debug!(key_id = %id, "key changed in the store; dropped from the cache");
        inner.cache.invalidate_key_id(*id);
    }
    for s in inner.listener.subscribers() {
        s.changed(change);
    }
}

/// Subscribes, catches up with the store, and applies changes until the stream ends; then
/// again, after a growing pause while subscribing fails. Ends with the manager.
async fn listen(weak: Weak<Inner>, feed: Arc<dyn ChangeFeed>) {
    let mut backoff = MIN_BACKOFF;
    // Whether the log says notifications are down (a warning was given).
    let mut down = false;
    loop {
        let subscribed = subscribe(&weak, feed.as_ref()).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let mut stream = match subscribed {
            Ok(stream) => stream,
            Err(e) => {
                if !down {
                    tracing::warn!(
                        error = %e,
                        "change notifications unavailable: falling back to polling the store \
                         every {:?} until they are back",
                        inner.refresh_interval
                    );
                    down = true;
                } else {
                    tracing::debug!(error = %e, ?backoff, "change notifications still unavailable");
                }
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        inner.listener.live.store(true, Ordering::Release);
        for s in inner.listener.subscribers() {
            s.resync();
        }
        if down {
            tracing::info!(
                "change notifications are back: cached keys are dropped as soon as any process \
                 changes them"
            );
        }
        backoff = MIN_BACKOFF;
        drop(inner);
        loop {
            let next = stream.next().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            match next {
                Ok(Some(change)) => apply(&inner, &change),
                lost => {
                    inner.listener.live.store(false, Ordering::Release);
                    let error = lost.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(
                        error,
                        "lost the change-notification connection: falling back to polling the \
                         store every {:?} until it is back",
                        inner.refresh_interval
                    );
                    for s in inner.listener.subscribers() {
                        s.lost();
                    }
                    down = true;
                    break;
                }
            }
        }
    }
}

/// Subscribes to `feed`, then checks every cached key against the store (changes committed
/// before listening began were not delivered).
async fn subscribe(weak: &Weak<Inner>, feed: &dyn ChangeFeed) -> Result<Box<dyn ChangeStream>> {
    let stream = feed.subscribe().await?;
    if let Some(inner) = weak.upgrade() {
        let keys = inner.state.cached();
        check_cached(&inner.cache, inner.repo.as_ref(), keys.as_deref()).await?;
    }
    Ok(stream)
}
