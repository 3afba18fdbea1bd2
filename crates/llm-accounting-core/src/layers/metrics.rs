//! The metrics layer: counts calls to a provider, their failures, and retries.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::provider::KmsCall;
use crate::{KmsProvider, Result};

/// Counters shared by the [`Metrics`] layer (calls and failures) and the
/// [`crate::layers::Retry`] layer (retries). Cheap to read at any time with
/// [`KmsMetrics::snapshot`]; all counts only grow (until [`KmsMetrics::reset`]).
#[derive(Debug, Default)]
pub struct KmsMetrics {
    wraps: AtomicU64,
    unwraps: AtomicU64,
    generates: AtomicU64,
    failures: AtomicU64,
    retryable_failures: AtomicU64,
    retries: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KmsMetricsSnapshot {
    /// `wrap_key` calls that reached the provider.
    pub wraps: u64,
    /// `unwrap_key` calls that reached the provider.
    pub unwraps: u64,
    /// `generate_data_key` calls that reached the provider.
    pub generates: u64,
    /// Calls that failed, whatever the error.
    pub failures: u64,
    /// Calls that failed with a retryable error (unavailable, throttled, timed out).
    pub retryable_failures: u64,
    /// Calls made again by the retry layer after a retryable failure.
    pub retries: u64,
}

impl KmsMetricsSnapshot {
    /// All calls that reached the provider (each one round trip for a remote KMS).
    pub fn calls(&self) -> u64 {
        self.wraps + self.unwraps + self.generates
    }

    /// The counts accumulated since `earlier` (a snapshot taken before).
    pub fn since(&self, earlier: &KmsMetricsSnapshot) -> KmsMetricsSnapshot {
        KmsMetricsSnapshot {
            wraps: self.wraps.saturating_sub(earlier.wraps),
            unwraps: self.unwraps.saturating_sub(earlier.unwraps),
            generates: self.generates.saturating_sub(earlier.generates),
            failures: self.failures.saturating_sub(earlier.failures),
            retryable_failures: self
                .retryable_failures
                .saturating_sub(earlier.retryable_failures),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }
}

impl KmsMetrics {
    /// Fresh counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current counts.
    pub fn snapshot(&self) -> KmsMetricsSnapshot {
        KmsMetricsSnapshot {
            wraps: self.wraps.load(Ordering::Relaxed),
            unwraps: self.unwraps.load(Ordering::Relaxed),
            generates: self.generates.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            retryable_failures: self.retryable_failures.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        for c in [
            &self.wraps,
            &self.unwraps,
            &self.generates,
            &self.failures,
            &self.retryable_failures,
            &self.retries,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one retry (called by the retry layer).
    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn record<T>(&self, counter: &AtomicU64, result: &Result<T>) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if e.is_retryable() {
                self.retryable_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A [`KmsProvider`] that counts every call to the provider it wraps, and the failures, into a
/// shared [`KmsMetrics`]. Name and master-key reference are the inner provider's.
#[derive(Debug)]
pub struct Metrics<P> {
    inner: P,
    metrics: Arc<KmsMetrics>,
}

impl<P: KmsProvider> Metrics<P> {
    /// Counts calls to `inner` into `metrics`.
    pub fn new(inner: P, metrics: Arc<KmsMetrics>) -> Self {
        Metrics { inner, metrics }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<KmsMetrics> {
        &self.metrics
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Makes the call and counts it, and its failure if it fails.
    async fn around<T, F, Fut>(&self, call: KmsCall, mut make_call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let result = make_call().await;
        let counter = match call {
            KmsCall::Wrap => &self.metrics.wraps,
            KmsCall::Unwrap => &self.metrics.unwraps,
            KmsCall::GenerateDataKey => &self.metrics.generates,
        };
        self.metrics.record(counter, &result);
        result
    }
}

/// The [`Layer`](super::Layer) of [`Metrics`]: the counters calls are counted into.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer {
    metrics: Arc<KmsMetrics>,
}

impl MetricsLayer {
    /// Counts calls into `metrics`.
    pub fn new(metrics: Arc<KmsMetrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<P: KmsProvider> super::Layer<P> for MetricsLayer {
    type Layered = Metrics<P>;

    fn layer(&self, inner: P) -> Metrics<P> {
        Metrics::new(inner, Arc::clone(&self.metrics))
    }
}

crate::provider::forward_kms_provider!(
    impl [P: KmsProvider] for Metrics<P>,
    inner: |s| s.inner,
    around: around
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataKey;
    use crate::layers::fake::{Fake, Step, ctx, wrapped};

    #[tokio::test]
    async fn every_call_and_failure_is_counted_by_kind() {
        let fake = Fake::new(&[Step::Ok, Step::Down, Step::Denied]);
        let metrics = Arc::new(KmsMetrics::new());
        let p = Metrics::new(Arc::clone(&fake), Arc::clone(&metrics));
        p.wrap_key(&DataKey::generate().expect("rng"), &ctx())
            .await
            .expect("wrap");
        p.unwrap_key(&wrapped(), &ctx()).await.expect_err("down");
        p.generate_data_key(&ctx()).await.expect_err("denied");
        let m = metrics.snapshot();
        assert_eq!((m.wraps, m.unwraps, m.generates), (1, 1, 1));
        assert_eq!((m.failures, m.retryable_failures, m.retries), (2, 1, 0));
        assert_eq!(m.calls(), 3);
        assert_eq!(fake.calls(), 3);
    }
}
