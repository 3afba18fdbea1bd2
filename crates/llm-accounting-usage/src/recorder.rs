//! [`UsageRecorder`]: usage events written in batches in the background.
//!
//! Events go into a bounded queue without touching the database; one background task takes up
//! to [`RecorderOptions::max_batch`] at a time and writes them with
//! [`UsageStore::insert_events`] (one transaction, chunked under the database's parameter
//! limit). When the queue is full, [`UsageRecorder::record`] waits for room (back-pressure:
//! usage is money, so nothing is dropped) and [`UsageRecorder::try_record`] refuses.
//! [`UsageRecorder::flush`] returns once everything recorded before it is written;
//! [`UsageRecorder::shutdown`] flushes and stops the task. A batch that fails with a retryable
//! error is tried again after a pause; one refused for good is logged and counted in
//! [`UsageRecorder::failed`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llm_accounting_core::{Error, Result};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{UsageEvent, UsageStore};

/// Bounds of a recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderOptions {
    /// Most events waiting to be written; `record` waits beyond.
    pub max_pending: usize,
    /// Most events per write (one transaction).
    pub max_batch: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            max_pending: 100_000,
            max_batch: 5_000,
        }
    }
}

enum Message {
    Event(Box<UsageEvent>),
    Flush(oneshot::Sender<Result<()>>),
}

/// Writes usage events in batches in the background. Cheap to clone; clones share the queue.
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    sender: mpsc::Sender<Message>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    failed: AtomicU64,
}

const FIRST_RETRY: Duration = Duration::from_millis(50);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// A failing batch is given up (counted in `failed`) after this many tries.
const ATTEMPTS: u32 = 8;

impl UsageRecorder {
    /// Starts the background writer on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(store: Arc<dyn UsageStore>, options: RecorderOptions) -> Self {
        let (sender, receiver) = mpsc::channel(options.max_pending.max(1));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(write_loop(
            store,
            receiver,
            options.max_batch.max(1),
            Arc::clone(&counters),
        ));
        UsageRecorder {
            sender,
            task: Arc::new(Mutex::new(Some(task))),
            counters,
        }
    }

    /// Queues an event, waiting for room if the queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an invalid event (nothing queued); [`Error::Config`] after
    /// [`UsageRecorder::shutdown`].
    pub async fn record(&self, event: UsageEvent) -> Result<()> {
        event.validate()?;
        self.sender
            .send(Message::Event(Box::new(event)))
            .await
            .map_err(|_| stopped())
    }

    /// Queues an event if there is room.
    ///
    /// # Errors
    ///
    /// As [`UsageRecorder::record`], and [`Error::DatabaseUnavailable`] when the queue is full.
    pub fn try_record(&self, event: UsageEvent) -> Result<()> {
        event.validate()?;
        self.sender
            .try_send(Message::Event(Box::new(event)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::DatabaseUnavailable {
                    operation: "record usage (the queue of events to write is full)",
                    source: None,
                },
                mpsc::error::TrySendError::Closed(_) => stopped(),
            })
    }

    /// Returns once every event recorded before the call is written.
    ///
    /// # Errors
    ///
    /// The store's error if a batch could not be written.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(Message::Flush(tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Writes everything queued and stops the background writer; later records fail.
    /// Calling it again does nothing.
    ///
    /// # Errors
    ///
    /// As [`UsageRecorder::flush`].
    pub async fn shutdown(&self) -> Result<()> {
        let mut task = self.task.lock().await;
        let Some(handle) = task.take() else {
            return Ok(());
        };
        let flushed = self.flush().await;
        handle.abort();
        let _ = handle.await;
        flushed
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Events given up after repeated failures (each logged).
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }
}

fn stopped() -> Error {
    Error::config("the usage recorder was shut down")
}

async fn write_loop(
    store: Arc<dyn UsageStore>,
    mut receiver: mpsc::Receiver<Message>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    let mut messages = Vec::with_capacity(max_batch);
    let mut batch: Vec<UsageEvent> = Vec::with_capacity(max_batch);
    let mut last_error: Option<Error> = None;
    while receiver.recv_many(&mut messages, max_batch).await > 0 {
        for message in messages.drain(..) {
            match message {
                Message::Event(e) => batch.push(*e),
                Message::Flush(done) => {
                    if let Err(e) = write(&*store, &mut batch, &counters).await {
                        last_error = Some(e);
                    }
                    let _ = done.send(last_error.take().map_or(Ok(()), Err));
                }
            }
        }
        if let Err(e) = write(&*store, &mut batch, &counters).await {
            last_error = Some(e);
        }
    }
    let _ = write(&*store, &mut batch, &counters).await;
}

/// Writes and empties `batch`, trying a retryable failure again with a growing pause.
async fn write(store: &dyn UsageStore, batch: &mut Vec<UsageEvent>, c: &Counters) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut pause = FIRST_RETRY;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.insert_events(batch).await {
            Ok(()) => {
                c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                return Ok(());
            }
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, events = batch.len(), "could not write usage events; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LAST_RETRY);
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "usage events not written; given up");
                c.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                return Err(e);
            }
        }
    }
}
