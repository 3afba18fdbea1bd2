//! The conformance suite on the in-memory store, and the recorder's flush and shutdown.

use std::sync::Arc;

use chrono::Utc;
use llm_accounting_usage::{
    MemoryUsageStore, RecorderOptions, UsageEvent, UsageRecorder, UsageStore, conformance,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run(Arc::new(MemoryUsageStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_loses_nothing_on_clean_shutdown() {
    let store = Arc::new(MemoryUsageStore::new());
    let recorder = UsageRecorder::start(
        Arc::clone(&store) as Arc<dyn UsageStore>,
        RecorderOptions {
            max_pending: 100,
            max_batch: 7,
        },
    );
    let mut tasks = Vec::new();
    for t in 0..8 {
        let r = recorder.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1_000 {
                r.record(UsageEvent::new(format!("m{t}"), Utc::now()).tokens(i, 0))
                    .await
                    .expect("queued");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    recorder.shutdown().await.expect("flushed");
    assert_eq!(store.tail(usize::MAX).await.expect("tail").len(), 8_000);
    assert_eq!(recorder.written(), 8_000);
    assert_eq!(recorder.failed(), 0);
    let after = recorder.record(UsageEvent::new("late", Utc::now())).await;
    assert!(
        after.is_err(),
        "recording after shutdown is refused, not lost silently"
    );
    recorder
        .shutdown()
        .await
        .expect("a second shutdown does nothing");
}

#[tokio::test]
async fn invalid_events_are_refused_before_queueing() {
    let store = Arc::new(MemoryUsageStore::new());
    let recorder = UsageRecorder::start(store.clone(), RecorderOptions::default());
    assert!(
        recorder
            .record(UsageEvent::new("", Utc::now()))
            .await
            .is_err()
    );
    assert!(
        recorder
            .record(UsageEvent::new("m", Utc::now()).user("a\u{7}b"))
            .await
            .is_err()
    );
    recorder.shutdown().await.expect("ok");
    assert!(store.tail(10).await.expect("tail").is_empty());
}
