//! Writes that are collected in memory and written in batches in the background: the one
//! mechanism behind last-use times and audit rows.
//!
//! Items are added to a pending buffer without waiting. A write takes the whole buffer and hands
//! it to the [`Sink`]; one write runs at a time, so batches land in the order their items were
//! added. A background write (on the current Tokio runtime) is started when items arrive and
//! none is running; it keeps writing until the buffer is empty. [`Batcher::flush`] writes what is
//! pending now and waits for a background write in flight, so that a `shutdown` that flushes
//! returns only once everything added before it has landed. A batch that fails is put back in
//! front of what arrived meanwhile ([`Pending::restore`]) and tried again by the next write.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Result;

/// A buffer of pending items.
pub(crate) trait Pending: Default + Send + 'static {
    /// One item.
    type Item;

    /// Adds an item.
    fn push(&mut self, item: Self::Item);

    /// Whether nothing is pending.
    fn is_empty(&self) -> bool;

    /// Puts back a batch whose write failed, in front of `self` (what arrived meanwhile).
    fn restore(&mut self, failed: Self);
}

/// Where batches go.
pub(crate) trait Sink<P>: Send + Sync + 'static {
    /// Writes one batch, all or nothing.
    fn write(&self, batch: &P) -> impl Future<Output = Result<()>> + Send;
}

/// A pending buffer, its sink, and the lock that keeps one write at a time.
pub(crate) struct Batcher<P, S> {
    pending: Mutex<P>,
    /// Held while a batch is written (so batches keep their order, and a flush waits for a
    /// background write in flight).
    writing: Arc<tokio::sync::Mutex<()>>,
    sink: S,
    /// What the warning of a failed background write says is lost for now.
    what: &'static str,
}

impl<P, S> fmt::Debug for Batcher<P, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<P: Pending, S: Sink<P>> Batcher<P, S> {
    /// An empty batcher writing `what` (e.g. "audit rows") to `sink`.
    pub(crate) fn new(sink: S, what: &'static str) -> Self {
        Batcher {
            pending: Mutex::new(P::default()),
            writing: Arc::new(tokio::sync::Mutex::new(())),
            sink,
            what,
        }
    }

    /// The sink.
    pub(crate) fn sink(&self) -> &S {
        &self.sink
    }

    /// The pending buffer, locked (briefly: never held across an await).
    pub(crate) fn pending(&self) -> MutexGuard<'_, P> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an item, to be written by the next write.
    pub(crate) fn add(&self, item: P::Item) {
        self.pending().push(item);
    }

    /// Writes everything pending now, after any write in flight has finished.
    pub(crate) async fn flush(&self) -> Result<()> {
        let _writing = self.writing.lock().await;
        self.write_pending().await
    }

    /// Writes everything pending, then `item`, before returning. On failure what was pending
    /// is kept for the next write, and `item` is not (its caller refuses the operation
    /// instead).
    pub(crate) async fn write_now(&self, item: P::Item) -> Result<()> {
        let _writing = self.writing.lock().await;
        self.write_pending().await?;
        let mut batch = P::default();
        batch.push(item);
        self.sink.write(&batch).await
    }

    /// Takes the buffer and writes it; on failure puts it back.
    async fn write_pending(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.pending());
        if batch.is_empty() {
            return Ok(());
        }
        let written = self.sink.write(&batch).await;
        if written.is_err() {
            self.pending().restore(batch);
        }
        written
    }

    /// Starts a background write on the current Tokio runtime, unless one is running (it will
    /// pick up what was just added) or there is no runtime (what is pending waits for the next
    /// write or flush).
    pub(crate) fn spawn_write(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(writing) = Arc::clone(&self.writing).try_lock_owned() else {
            return;
        };
        let this = Arc::clone(self);
        handle.spawn(async move {
            let mut guard = Some(writing);
            while let Some(held) = guard.take() {
                loop {
                    if let Err(e) = this.write_pending().await {
                        // Kept pending: the next write or flush tries again.
                        tracing::warn!(error = %e, "could not write {}; kept for the next try", this.what);
                        return;
                    }
                    if this.pending().is_empty() {
                        break;
                    }
                }
                drop(held);
                // Items added just before the lock was released found it taken and started no
                // write: look again now that it is free.
                if this.pending().is_empty() {
                    return;
                }
                guard = Arc::clone(&this.writing).try_lock_owned().ok();
            }
        });
    }
}

/// Items written in the order they were added.
impl<T: Send + 'static> Pending for Vec<T> {
    type Item = T;

    fn push(&mut self, item: T) {
        Vec::push(self, item);
    }

    fn is_empty(&self) -> bool {
        <[T]>::is_empty(self)
    }

    fn restore(&mut self, mut failed: Self) {
        failed.append(self);
        *self = failed;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::Error;

    /// Records every batch; fails while `down`.
    #[derive(Debug, Default)]
    struct Log {
        batches: Mutex<Vec<Vec<u32>>>,
        down: AtomicBool,
    }

    impl Sink<Vec<u32>> for Arc<Log> {
        async fn write(&self, batch: &Vec<u32>) -> Result<()> {
            tokio::task::yield_now().await;
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::DatabaseUnavailable {
                    operation: "test write",
                    source: None,
                });
            }
            self.batches.lock().expect("lock").push(batch.clone());
            Ok(())
        }
    }

    impl Log {
        fn written(&self) -> Vec<u32> {
            self.batches
                .lock()
                .expect("lock")
                .iter()
                .flatten()
                .copied()
                .collect()
        }
    }

    type TestBatcher = Batcher<Vec<u32>, Arc<Log>>;

    fn batcher() -> (Arc<TestBatcher>, Arc<Log>) {
        let log = Arc::new(Log::default());
        (Arc::new(Batcher::new(Arc::clone(&log), "items")), log)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn everything_added_lands_once_and_in_order() {
        let (b, log) = batcher();
        let mut tasks = Vec::new();
        for producer in 0..4u32 {
            let b = Arc::clone(&b);
            tasks.push(tokio::spawn(async move {
                for i in 0..500u32 {
                    b.add(producer * 1000 + i);
                    b.spawn_write();
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer");
        }
        b.flush().await.expect("flush");
        let written = log.written();
        assert_eq!(written.len(), 2000, "each item exactly once");
        for producer in 0..4u32 {
            let mine: Vec<u32> = written
                .iter()
                .copied()
                .filter(|x| x / 1000 == producer)
                .collect();
            let expected: Vec<u32> = (0..500).map(|i| producer * 1000 + i).collect();
            assert_eq!(
                mine, expected,
                "producer {producer}'s items keep their order"
            );
        }
        assert!(
            log.batches.lock().expect("lock").len() < 2000,
            "items were batched"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_is_kept_in_front_of_newer_items() {
        let (b, log) = batcher();
        b.add(1);
        b.add(2);
        log.down.store(true, Ordering::SeqCst);
        b.flush().await.expect_err("down");
        b.add(3);
        assert_eq!(*b.pending(), vec![1, 2, 3]);
        log.down.store(false, Ordering::SeqCst);
        b.flush().await.expect("up again");
        assert_eq!(log.written(), vec![1, 2, 3]);
        assert!(b.pending().is_empty());
    }

    #[tokio::test]
    async fn write_now_writes_before_returning_and_drops_its_item_on_failure() {
        let (b, log) = batcher();
        b.add(1);
        b.write_now(2).await.expect("written");
        assert_eq!(log.written(), vec![1, 2], "pending first, then the item");
        log.down.store(true, Ordering::SeqCst);
        b.add(3);
        b.write_now(4).await.expect_err("down");
        assert_eq!(
            *b.pending(),
            vec![3],
            "pending kept; the refused item is not"
        );
        log.down.store(false, Ordering::SeqCst);
        b.flush().await.expect("flush");
        assert_eq!(log.written(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn flush_waits_for_a_background_write_in_flight() {
        let (b, log) = batcher();
        b.add(7);
        b.spawn_write();
        // The background write holds the lock; flush returns only once it has landed.
        b.flush().await.expect("flush");
        assert_eq!(log.written(), vec![7]);
    }

    #[test]
    fn without_a_runtime_items_wait_for_the_next_write() {
        let (b, log) = batcher();
        b.add(5);
        b.spawn_write();
        assert_eq!(*b.pending(), vec![5]);
        assert!(log.written().is_empty());
    }
}
