//! Writes that are collected in memory and written in batches in the background: the one
//! mechanism behind last-use times and audit rows.
//!
//! Items are added to a pending buffer without waiting. A write takes at most
//! [`Limits::max_batch`] items from the front of the buffer and hands them to the [`Sink`] (one
//! transaction), then the next ones, until the buffer is empty; one write runs at a time, so
//! batches land in the order their items were added. A background write (on the current Tokio
//! runtime) is started when items arrive and none is running. [`Batcher::flush`] writes what is
//! pending now and waits for a background write in flight, so that a `shutdown` that flushes
//! returns only once everything added before it has landed.
//!
//! The buffer is bounded ([`Limits::max_pending`]). An item that finds it full is dropped and
//! counted, never silently: the count (and the times of the first and last dropped item) is
//! written as one item of its own ([`Counted::dropped`]: the audit trail's `dropped` row) at
//! the place the items went missing, or logged where the items have no such form.
//!
//! A batch that fails with a retryable error (the database is unavailable, busy or locked) is
//! put back in front of what arrived meanwhile ([`Pending::restore`]); the background writer
//! tries again after a pause that doubles up to 5 s, instead of at every new item. A batch
//! refused for good (any other error) would block every later one if kept: it is dropped and
//! counted like an overflow, and the failure logged.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::Result;

/// Pause before a failed background write is tried again; doubles per failure.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between tries of a failed background write.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// An item that stands for one or more events.
pub(crate) trait Counted: Sized {
    /// How many events this item stands for.
    fn events(&self) -> u64 {
        1
    }

    /// When the first and the last of its events happened, if known.
    fn times(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        None
    }

    /// The item that records `count` dropped events, the first at `first` and the last at
    /// `last`; `None` when this kind of item has none (the drop is then logged).
    fn dropped(count: u64, first: DateTime<Utc>, last: DateTime<Utc>) -> Option<Self>;
}

/// A buffer of pending items.
pub(crate) trait Pending: Default + Send + 'static {
    /// One item.
    type Item: Counted + Send;

    /// Adds an item at the back.
    fn push(&mut self, item: Self::Item);

    /// Number of items pending.
    fn len(&self) -> usize;

    /// Whether nothing is pending.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether adding `item` makes the buffer longer (an item that replaces a pending one does
    /// not, and is accepted however full the buffer is).
    fn grows_with(&self, _item: &Self::Item) -> bool {
        true
    }

    /// Takes at most `max` items from the front.
    fn take(&mut self, max: usize) -> Self;

    /// Puts back a batch whose write failed, in front of `self` (what arrived meanwhile).
    fn restore(&mut self, failed: Self);

    /// The items, in order.
    fn into_items(self) -> Vec<Self::Item>;
}

/// Where batches go.
pub(crate) trait Sink<P>: Send + Sync + 'static {
    /// Writes one batch, all or nothing.
    fn write(&self, batch: &P) -> impl Future<Output = Result<()>> + Send;
}

/// Bounds of a batcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most items pending; an item that would be one more is dropped and counted.
    pub(crate) max_pending: usize,
    /// Most items handed to the sink at once (one write, one transaction).
    pub(crate) max_batch: usize,
}

/// Events dropped since the last record of a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// The pending buffer and what was dropped.
#[derive(Debug, Default)]
struct State<P> {
    pending: P,
    dropped: Option<Dropped>,
}

impl<P: Pending> State<P> {
    /// Counts `count` events between `first` and `last` as dropped.
    fn count_dropped(&mut self, count: u64, first: DateTime<Utc>, last: DateTime<Utc>) {
        let d = self.dropped.get_or_insert(Dropped {
            count: 0,
            first,
            last,
        });
        d.count = d.count.saturating_add(count);
        d.first = d.first.min(first);
        d.last = d.last.max(last);
    }

    /// Counts an item as dropped.
    fn drop_item(&mut self, item: &P::Item) {
        let (first, last) = item.times().unwrap_or_else(|| {
            let now = Utc::now();
            (now, now)
        });
        self.count_dropped(item.events(), first, last);
    }

    /// Nothing to write.
    fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.dropped.is_none()
    }
}

/// Turns the dropped count, if any, into an item at the back of `into` (or a log line).
fn record_dropped<P: Pending>(dropped: &mut Option<Dropped>, into: &mut P, what: &str) {
    let Some(d) = dropped.take() else {
        return;
    };
    match P::Item::dropped(d.count, d.first, d.last) {
        Some(item) => into.push(item),
        None => tracing::warn!(
            count = d.count,
            "{} {what} were dropped: the queue was full or the database refused them",
            d.count
        ),
    }
}

/// A bounded pending buffer, its sink, and the lock that keeps one write at a time.
pub(crate) struct Batcher<P, S> {
    state: Mutex<State<P>>,
    /// Held while batches are written (so batches keep their order, and a flush waits for a
    /// background write in flight).
    writing: tokio::sync::Mutex<()>,
    /// A background writer is running or waiting to try again.
    scheduled: Arc<AtomicBool>,
    limits: Limits,
    sink: S,
    /// What the items are, for log lines ("audit rows").
    what: &'static str,
}

impl<P, S> fmt::Debug for Batcher<P, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("what", &self.what)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<P: Pending, S: Sink<P>> Batcher<P, S> {
    /// An empty batcher writing `what` (e.g. "audit rows") to `sink`, within `limits`.
    pub(crate) fn new(sink: S, what: &'static str, limits: Limits) -> Self {
        Batcher {
            state: Mutex::new(State::default()),
            writing: tokio::sync::Mutex::new(()),
            scheduled: Arc::new(AtomicBool::new(false)),
            limits: Limits {
                max_pending: limits.max_pending.max(1),
                max_batch: limits.max_batch.max(1),
            },
            sink,
            what,
        }
    }

    /// The sink.
    pub(crate) fn sink(&self) -> &S {
        &self.sink
    }

    /// The state, locked (briefly: never held across an await).
    fn state(&self) -> MutexGuard<'_, State<P>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the pending buffer.
    pub(crate) fn with_pending<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        f(&mut self.state().pending)
    }

    /// Adds an item, to be written by the next write. Returns `false` if the buffer was full:
    /// the item is then dropped and counted.
    pub(crate) fn add(&self, item: P::Item) -> bool {
        let mut guard = self.state();
        let state = &mut *guard;
        if state.pending.len() >= self.limits.max_pending && state.pending.grows_with(&item) {
            if state.dropped.is_none() {
                tracing::warn!(
                    max_pending = self.limits.max_pending,
                    "{} waiting to be written: limit reached; dropping and counting more",
                    self.what
                );
            }
            state.drop_item(&item);
            return false;
        }
        // Room again after a drop: the count goes where the items went missing.
        record_dropped(&mut state.dropped, &mut state.pending, self.what);
        state.pending.push(item);
        true
    }

    /// Counts `count` events that never became items (between `first` and `last`) as
    /// dropped.
    pub(crate) fn count_dropped(&self, count: u64, first: DateTime<Utc>, last: DateTime<Utc>) {
        self.state().count_dropped(count, first, last);
    }

    /// Writes everything pending now, after any write in flight has finished.
    ///
    /// # Errors
    ///
    /// The sink's error; what it refused is kept if the error is retryable (and the
    /// background writer tries again later), else dropped and counted.
    pub(crate) async fn flush(self: &Arc<Self>) -> Result<()> {
        let flushed = {
            let _writing = self.writing.lock().await;
            let batches = self.state().pending.len().div_ceil(self.limits.max_batch) + 1;
            self.write_pending(Some(batches)).await
        };
        if flushed.is_err() && !self.state().is_idle() {
            self.spawn_write();
        }
        flushed
    }

    /// Writes everything pending, then `item`, before returning. On failure what was pending
    /// is handled as by [`Batcher::flush`], and `item` is not kept (its caller refuses the
    /// operation instead).
    pub(crate) async fn write_now(&self, item: P::Item) -> Result<()> {
        let _writing = self.writing.lock().await;
        let batches = self.state().pending.len().div_ceil(self.limits.max_batch) + 1;
        self.write_pending(Some(batches)).await?;
        let mut batch = P::default();
        batch.push(item);
        self.sink.write(&batch).await
    }

    /// Writes batches until nothing is pending (or `max_batches` were written); the caller
    /// holds `writing`.
    async fn write_pending(&self, max_batches: Option<usize>) -> Result<()> {
        let mut written = 0;
        while max_batches.is_none_or(|max| written < max) {
            let batch = {
                let mut state = self.state();
                let mut batch = state.pending.take(self.limits.max_batch);
                if state.pending.is_empty() {
                    // Dropped after everything pending was added: their count goes last.
                    record_dropped(&mut state.dropped, &mut batch, self.what);
                }
                batch
            };
            if batch.is_empty() {
                return Ok(());
            }
            if let Err(e) = self.sink.write(&batch).await {
                let mut state = self.state();
                if e.is_retryable() {
                    state.pending.restore(batch);
                } else {
                    tracing::error!(
                        error = %e,
                        "{} refused by the database; dropped and counted",
                        self.what
                    );
                    for item in batch.into_items() {
                        state.drop_item(&item);
                    }
                }
                return Err(e);
            }
            written += 1;
        }
        Ok(())
    }

    /// Starts a background write on the current Tokio runtime, unless one is running or
    /// waiting to try again (it will pick up what was just added), or there is no runtime
    /// (what is pending waits for the next write or flush).
    pub(crate) fn spawn_write(self: &Arc<Self>) {
        if self.scheduled.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(Self::write_in_background(
            Arc::downgrade(self),
            ClearOnDrop::new(Arc::clone(&self.scheduled)),
        ));
    }

    /// The background writer: writes until nothing is pending; after a failure, waits (1/10 s,
    /// doubling up to 5 s) and tries again. It holds only a weak reference while it waits,
    /// and ends when the batcher is gone.
    async fn write_in_background(batcher: Weak<Self>, mut scheduled: ClearOnDrop) {
        let mut pause = FIRST_RETRY;
        loop {
            let Some(this) = batcher.upgrade() else {
                return;
            };
            let written = {
                let _writing = this.writing.lock().await;
                this.write_pending(None).await
            };
            match written {
                Ok(()) => {
                    pause = FIRST_RETRY;
                    this.scheduled.store(false, Ordering::Release);
                    // Items added after the last batch was taken and before the flag was
                    // cleared started no writer: take them on, unless another writer did.
                    if this.state().is_idle() || this.scheduled.swap(true, Ordering::AcqRel) {
                        scheduled.disarm();
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        "could not write {}",
                        this.what
                    );
                    drop(this);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LAST_RETRY);
                }
            }
        }
    }
}

/// Clears a "background task running" flag if the task ends without clearing it itself (its
/// runtime shut down while it waited), so that a later item starts a new one.
pub(crate) struct ClearOnDrop {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl ClearOnDrop {
    /// Clears `flag` when dropped, unless disarmed.
    pub(crate) fn new(flag: Arc<AtomicBool>) -> Self {
        ClearOnDrop { flag, armed: true }
    }

    /// The task has handled the flag itself.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(false, Ordering::Release);
        }
    }
}

/// Items written in the order they were added.
impl<T: Counted + Send + 'static> Pending for Vec<T> {
    type Item = T;

    fn push(&mut self, item: T) {
        Vec::push(self, item);
    }

    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn take(&mut self, max: usize) -> Self {
        if self.len() <= max {
            return std::mem::take(self);
        }
        let rest = self.split_off(max);
        std::mem::replace(self, rest)
    }

    fn restore(&mut self, mut failed: Self) {
        failed.append(self);
        *self = failed;
    }

    fn into_items(self) -> Vec<T> {
        self
    }
}

#[cfg(test)]
mod tests;
