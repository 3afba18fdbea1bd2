//! Layers: [`KmsProvider`] wrappers that add retries, per-call timeouts, metrics and branch
//! keys to any provider, without code inside the provider (OpenDAL's layers, object_store's
//! retry).
//!
//! Each layer is described by a value implementing [`Layer`] ([`RetryLayer`],
//! [`MetricsLayer`], [`TimeoutLayer`], [`crate::branch::BranchKeyLayer`]), whose
//! [`Layer::layer`] wraps a provider into a provider. Each layered provider is itself a
//! [`KmsProvider`] whose [`KmsProvider::name`] and [`KmsProvider::master_key_ref`] are the
//! inner provider's (the branch layer names its own wrappings `INNER+branch`), so records
//! written through a layer name the real provider. What only one layer can do is on that
//! layer's own type (for example [`crate::branch::BranchKeyProvider::rewrap_branch_keys`]),
//! not on [`KmsProvider`].
//!
//! # Order
//!
//! Stack them outermost first as **branch keys → retry → metrics → timeout → provider**
//! ([`stack`] builds retry → metrics → timeout → provider; [`stack_with_branch_keys`] adds the
//! branch layer over it). This is the one place the order is decided:
//!
//! - [`Timeout`] innermost, so that each attempt has its own deadline and a hung call becomes a
//!   retryable [`crate::Error::ProviderUnavailable`] the retry layer can act on;
//! - [`Metrics`] between them, so that it counts every attempt (real round trips, timed-out ones
//!   included) and not just the outcome the caller saw;
//! - [`Retry`] over them, retrying only errors whose [`crate::Error::is_retryable`] is true,
//!   with jittered exponential backoff, bounded by a number of attempts and a total time;
//! - the branch-key layer ([`crate::branch`]) outermost, so that the KMS calls it makes for
//!   branch keys are retried, timed and counted like direct ones, and its local unwraps are
//!   not counted as KMS calls.
//!
//! ```
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use llm_accounting_core::KmsProvider;
//! use llm_accounting_core::layers::{self, KmsMetrics, LayerOptions, RetryPolicy};
//! # fn demo(provider: Arc<dyn KmsProvider>) {
//! let metrics = Arc::new(KmsMetrics::default());
//! let options = LayerOptions {
//!     retry: RetryPolicy { max_attempts: 4, ..RetryPolicy::default() },
//!     timeout: Some(Duration::from_secs(2)),
//! };
//! let provider = layers::stack(provider, &options, Arc::clone(&metrics));
//! // ... use `provider` ...
//! println!("{} KMS calls, {} retries", metrics.snapshot().calls(), metrics.snapshot().retries);
//! # }
//! ```

#[cfg(test)]
mod fake;
mod metrics;
mod retry;
mod timeout;

use std::sync::Arc;
use std::time::Duration;

pub use metrics::{KmsMetrics, KmsMetricsSnapshot, Metrics, MetricsLayer};
pub use retry::{Retry, RetryLayer, RetryPolicy};
pub use timeout::{Timeout, TimeoutLayer};

use crate::KmsProvider;
use crate::branch::{BranchKeyLayer, BranchKeyProvider};

/// Something that wraps a provider into another that adds one concern around it (OpenDAL's
/// `Layer`): the layer's settings, [`Layer::layer`] applying them to `inner`. Stack layers in
/// the order of the module docs.
pub trait Layer<P: KmsProvider> {
    /// The provider the layer makes of `P`.
    type Layered: KmsProvider;

    /// Wraps `inner`.
    fn layer(&self, inner: P) -> Self::Layered;
}

/// Settings of the standard layer stack built by [`stack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// Deadline of each single call to the provider; `None` for no deadline.
    pub timeout: Option<Duration>,
}

impl Default for LayerOptions {
    /// The default retry policy and a 5 s deadline per call.
    fn default() -> Self {
        LayerOptions {
            retry: RetryPolicy::default(),
            timeout: Some(Duration::from_secs(5)),
        }
    }
}

/// Wraps `provider` in the standard stack, retry → metrics → timeout → provider, counting into
/// `metrics` (calls and failures of each attempt, and retries); no timeout layer when
/// `options.timeout` is `None`.
pub fn stack(
    provider: Arc<dyn KmsProvider>,
    options: &LayerOptions,
    metrics: Arc<KmsMetrics>,
) -> Arc<dyn KmsProvider> {
    let timed: Arc<dyn KmsProvider> = match options.timeout {
        Some(limit) => Arc::new(TimeoutLayer::new(limit).layer(provider)),
        None => provider,
    };
    let counted = MetricsLayer::new(Arc::clone(&metrics)).layer(timed);
    let retry = RetryLayer::new(options.retry.clone()).with_metrics(metrics);
    Arc::new(retry.layer(counted))
}

/// The whole stack, branch keys → retry → metrics → timeout → provider: `branches` over
/// [`stack`]. The branch layer's own type is returned, for its own operations (rewrap and
/// rotation of branch keys, eviction); it is also the provider to wrap with.
pub fn stack_with_branch_keys(
    provider: Arc<dyn KmsProvider>,
    options: &LayerOptions,
    metrics: Arc<KmsMetrics>,
    branches: &BranchKeyLayer,
) -> Arc<BranchKeyProvider> {
    Arc::new(branches.layer(stack(provider, options, metrics)))
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::layers::fake::{Fake, Step, ctx, wrapped};

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_are_retryable_and_counted() {
        // First call hangs for a minute, second answers at once.
        let fake = Fake::new(&[Step::Slow(Duration::from_secs(60))]);
        let metrics = Arc::new(KmsMetrics::new());
        let p = stack(
            Arc::clone(&fake) as Arc<dyn KmsProvider>,
            &LayerOptions {
                retry: policy(3),
                timeout: Some(Duration::from_millis(500)),
            },
            Arc::clone(&metrics),
        );
        let start = Instant::now();
        p.unwrap_key(&wrapped(), &ctx())
            .await
            .expect("second attempt");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let m = metrics.snapshot();
        assert_eq!(
            (m.unwraps, m.failures, m.retryable_failures, m.retries),
            (2, 1, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn layers_keep_the_inner_name_and_forward_generate() {
        let fake = Fake::new(&[]);
        let metrics = Arc::new(KmsMetrics::new());
        let p = stack(
            Arc::clone(&fake) as Arc<dyn KmsProvider>,
            &LayerOptions::default(),
            Arc::clone(&metrics),
        );
        assert_eq!(p.name(), "fake");
        assert_eq!(p.master_key_ref(), "fake-mk");
        let (_, w) = p.generate_data_key(&ctx()).await.expect("generate");
        assert_eq!(w.provider, "fake");
        let m = metrics.snapshot();
        // The fake's default generate_data_key is one wrap inside the provider: one call.
        assert_eq!((m.generates, m.wraps, m.calls()), (1, 0, 1));
        let before = m;
        p.unwrap_key(&wrapped(), &ctx()).await.expect("unwrap");
        assert_eq!(metrics.snapshot().since(&before).calls(), 1);
        metrics.reset();
        assert_eq!(metrics.snapshot(), KmsMetricsSnapshot::default());
    }
}
