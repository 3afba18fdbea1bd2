//! The batcher against a sink that records batches and can be made unavailable (retryable)
//! or refusing (for good).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::Error;

/// A dropped count `n` is written as the item `DROPPED + n`.
const DROPPED: u32 = 1_000_000;

impl Counted for u32 {
    fn dropped(count: u64, _: DateTime<Utc>, _: DateTime<Utc>) -> Option<u32> {
        Some(DROPPED + u32::try_from(count).expect("small count"))
    }
}

/// Records every batch; fails while `down` (retryable) or `refusing` (for good).
#[derive(Debug, Default)]
struct Log {
    batches: Mutex<Vec<Vec<u32>>>,
    down: AtomicBool,
    refusing: AtomicBool,
    attempts: AtomicUsize,
    /// When set: attempts after this many are unavailable.
    down_after: Mutex<Option<usize>>,
}

impl Sink<Vec<u32>> for Arc<Log> {
    async fn write(&self, batch: &Vec<u32>) -> Result<()> {
        tokio::task::yield_now().await;
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let down_after = *self.down_after.lock().expect("lock");
        if self.down.load(Ordering::SeqCst) || down_after.is_some_and(|n| attempt > n) {
            return Err(Error::DatabaseUnavailable {
                operation: "test write",
                source: None,
            });
        }
        if self.refusing.load(Ordering::SeqCst) {
            return Err(Error::Database {
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

    fn batch_sizes(&self) -> Vec<usize> {
        self.batches
            .lock()
            .expect("lock")
            .iter()
            .map(Vec::len)
            .collect()
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

type TestBatcher = Batcher<Vec<u32>, Arc<Log>>;

fn batcher_with(max_pending: usize, max_batch: usize) -> (Arc<TestBatcher>, Arc<Log>) {
    let log = Arc::new(Log::default());
    let limits = Limits {
        max_pending,
        max_batch,
    };
    (
        Arc::new(Batcher::new(Arc::clone(&log), "items", limits)),
        log,
    )
}

fn batcher() -> (Arc<TestBatcher>, Arc<Log>) {
    batcher_with(100_000, 1_000)
}

fn pending(b: &TestBatcher) -> Vec<u32> {
    b.with_pending(|p| p.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_added_lands_once_and_in_order() {
    let (b, log) = batcher();
    let mut tasks = Vec::new();
    for producer in 0..4u32 {
        let b = Arc::clone(&b);
        tasks.push(tokio::spawn(async move {
            for i in 0..500u32 {
                assert!(b.add(producer * 1000 + i));
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
    assert!(log.batch_sizes().len() < 2000, "items were batched");
}

#[tokio::test]
async fn a_failed_batch_is_kept_in_front_of_newer_items() {
    let (b, log) = batcher();
    b.add(1);
    b.add(2);
    log.down.store(true, Ordering::SeqCst);
    let e = b.flush().await.expect_err("down");
    assert!(e.is_retryable());
    b.add(3);
    assert_eq!(pending(&b), vec![1, 2, 3]);
    log.down.store(false, Ordering::SeqCst);
    b.flush().await.expect("up again");
    assert_eq!(log.written(), vec![1, 2, 3]);
    assert!(pending(&b).is_empty());
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
        pending(&b),
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
    tokio::task::yield_now().await;
    b.flush().await.expect("flush");
    assert_eq!(log.written(), vec![7]);
}

#[test]
fn without_a_runtime_items_wait_for_the_next_write() {
    let (b, log) = batcher();
    b.add(5);
    b.spawn_write();
    assert_eq!(pending(&b), vec![5]);
    assert!(log.written().is_empty());
}

/// The attack: a backlog far larger than one write may carry. It is written in batches of at
/// most `max_batch`, in order.
#[tokio::test]
async fn a_backlog_is_written_in_batches_of_at_most_max_batch() {
    let (b, log) = batcher_with(10_000, 1_000);
    for i in 0..2_500 {
        assert!(b.add(i));
    }
    b.flush().await.expect("flush");
    assert_eq!(log.batch_sizes(), [1_000, 1_000, 500]);
    assert_eq!(log.written(), (0..2_500).collect::<Vec<_>>());
}

/// The attack: the database is down and items keep coming. The buffer stops at
/// `max_pending`; what found it full is counted, and the count is written where the items
/// went missing: before the first item accepted again.
#[tokio::test]
async fn a_full_buffer_drops_and_counts_where_the_items_went_missing() {
    let (b, log) = batcher_with(100, 60);
    log.down.store(true, Ordering::SeqCst);
    let accepted = (0..150).filter(|i| b.add(*i)).count();
    assert_eq!(accepted, 100, "the buffer stops at max_pending");
    b.flush().await.expect_err("still down");
    assert_eq!(pending(&b), (0..100).collect::<Vec<_>>(), "kept, bounded");

    // Back for one batch only: room for new items, the rest still pending.
    log.down.store(false, Ordering::SeqCst);
    *log.down_after.lock().expect("lock") = Some(log.attempts() + 1);
    b.flush().await.expect_err("down again after one batch");
    assert!(b.add(999), "room again");
    let mut expected: Vec<u32> = (60..100).collect();
    expected.extend([DROPPED + 50, 999]);
    assert_eq!(
        pending(&b),
        expected,
        "the count sits where the items went missing"
    );

    *log.down_after.lock().expect("lock") = None;
    b.flush().await.expect("flush");
    let mut all: Vec<u32> = (0..100).collect();
    all.extend([DROPPED + 50, 999]);
    assert_eq!(log.written(), all, "a counted gap, in its place");
}

#[test]
fn a_dropped_count_goes_last_when_nothing_newer_was_accepted() {
    let (b, log) = batcher_with(3, 1_000);
    for i in 1..=5 {
        b.add(i);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(b.flush()).expect("flush");
    assert_eq!(log.written(), [1, 2, 3, DROPPED + 2]);
    rt.block_on(b.flush()).expect("nothing more");
    assert_eq!(log.written(), [1, 2, 3, DROPPED + 2], "counted once");
}

/// What a failed flush kept is written in the background once the database is back,
/// without another flush.
#[tokio::test(start_paused = true)]
async fn what_a_failed_flush_kept_is_retried_in_the_background() {
    let (b, log) = batcher();
    log.down.store(true, Ordering::SeqCst);
    b.add(1);
    b.flush().await.expect_err("down");
    log.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(log.written(), [1]);
}

/// A batch the database refuses for good (not a busy or unreachable database) would block
/// every later batch if kept: it is dropped and counted, and the trail goes on.
#[tokio::test]
async fn a_batch_refused_for_good_is_dropped_and_counted() {
    let (b, log) = batcher();
    b.add(1);
    b.add(2);
    log.refusing.store(true, Ordering::SeqCst);
    let e = b.flush().await.expect_err("refused");
    assert!(!e.is_retryable());
    assert!(pending(&b).is_empty(), "not kept");
    log.refusing.store(false, Ordering::SeqCst);
    b.add(3);
    b.flush().await.expect("flush");
    assert_eq!(log.written(), [DROPPED + 2, 3]);
}

/// The attack: thousands of items while the database is down. The background writer tries
/// again after a pause that grows (not at every new item), and writes everything once the
/// database is back, without a flush.
#[tokio::test(start_paused = true)]
async fn a_failed_background_write_is_retried_after_a_growing_pause() {
    let (b, log) = batcher();
    log.down.store(true, Ordering::SeqCst);
    for i in 0..5_000 {
        b.add(i);
        b.spawn_write();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tries = log.attempts();
    assert!(
        (1..=5).contains(&tries),
        "one writer, pausing 0.1, 0.2, 0.4 s...: {tries} tries in one second"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let tries = log.attempts() - tries;
    assert!(
        (10..=20).contains(&tries),
        "the pause stops growing at 5 s: {tries} tries in a minute"
    );
    log.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(LAST_RETRY + Duration::from_secs(1)).await;
    assert_eq!(
        log.written(),
        (0..5_000).collect::<Vec<_>>(),
        "written once the database is back, without a flush"
    );
    assert!(!b.scheduled.load(Ordering::SeqCst), "the writer ended");
}

#[tokio::test(start_paused = true)]
async fn the_background_writer_ends_with_its_batcher() {
    let (b, log) = batcher();
    log.down.store(true, Ordering::SeqCst);
    b.add(1);
    b.spawn_write();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(b);
    let tries = log.attempts();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        log.attempts() <= tries + 1,
        "no tries for a batcher that is gone"
    );
}

/// A writer whose runtime shuts down while it waits to try again leaves room for a new one
/// on another runtime.
#[test]
fn a_writer_cut_off_by_its_runtime_leaves_room_for_a_new_one() {
    let (b, log) = batcher();
    log.down.store(true, Ordering::SeqCst);
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    first.block_on(async {
        b.add(1);
        b.spawn_write();
        tokio::time::sleep(Duration::from_millis(20)).await;
    });
    assert!(b.scheduled.load(Ordering::SeqCst), "waiting to try again");
    drop(first);
    assert!(!b.scheduled.load(Ordering::SeqCst), "cleared with its task");

    log.down.store(false, Ordering::SeqCst);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    second.block_on(async {
        b.add(2);
        b.spawn_write();
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    assert_eq!(log.written(), [1, 2]);
}
