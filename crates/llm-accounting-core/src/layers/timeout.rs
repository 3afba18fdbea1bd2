//! The timeout layer: a deadline for each call to a provider.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::provider::KmsCall;
use crate::{Error, KmsProvider, Result};

/// A [`KmsProvider`] that gives each call to the provider it wraps at most a fixed time. A call
/// that takes longer is abandoned and fails with a retryable
/// [`Error::ProviderUnavailable`] (a slow KMS is an unavailable KMS, never "no key").
#[derive(Debug)]
pub struct Timeout<P> {
    inner: P,
    limit: Duration,
}

/// The source of a timed-out call's error.
#[derive(Debug)]
struct TimedOut(Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer within {} ms", self.0.as_millis())
    }
}

impl std::error::Error for TimedOut {}

impl<P: KmsProvider> Timeout<P> {
    /// Gives each call to `inner` at most `limit`.
    pub fn new(inner: P, limit: Duration) -> Self {
        Timeout { inner, limit }
    }

    /// The deadline of each call.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Makes the call, giving it at most the limit.
    async fn around<T, F, Fut>(&self, call: KmsCall, mut make_call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let operation = call.operation();
        match tokio::time::timeout(self.limit, make_call()).await {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!(
                    provider = self.inner.name(),
                    operation,
                    limit_ms = self.limit.as_millis() as u64,
                    "KMS call timed out"
                );
                Err(Error::ProviderUnavailable {
                    provider: self.inner.name().to_owned(),
                    operation,
                    retryable: true,
                    source: Some(Arc::new(TimedOut(self.limit))),
                })
            }
        }
    }
}

/// The [`Layer`](super::Layer) of [`Timeout`]: the deadline of each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// Gives each call at most `limit`.
    pub fn new(limit: Duration) -> Self {
        TimeoutLayer { limit }
    }
}

impl<P: KmsProvider> super::Layer<P> for TimeoutLayer {
    type Layered = Timeout<P>;

    fn layer(&self, inner: P) -> Timeout<P> {
        Timeout::new(inner, self.limit)
    }
}

crate::provider::forward_kms_provider!(
    impl [P: KmsProvider] for Timeout<P>,
    inner: |s| s.inner,
    around: around
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain;
    use crate::layers::fake::{Fake, Step, ctx, wrapped};

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_a_retryable_unavailable_error() {
        // A timeout alone, without retries, is a retryable unavailable error that says so.
        let fake = Fake::new(&[Step::Slow(Duration::from_secs(60))]);
        let t = Timeout::new(Arc::clone(&fake), Duration::from_millis(250));
        let err = t
            .unwrap_key(&wrapped(), &ctx())
            .await
            .expect_err("timed out");
        assert!(err.is_retryable());
        assert!(matches!(
            err,
            Error::ProviderUnavailable {
                operation: "unwrap",
                ..
            }
        ));
        assert!(
            error_chain(&err).contains("no answer within 250 ms"),
            "{err:?}"
        );
        // A call within the limit passes through.
        let fake = Fake::new(&[Step::Slow(Duration::from_millis(100))]);
        let t = Timeout::new(Arc::clone(&fake), Duration::from_millis(250));
        t.unwrap_key(&wrapped(), &ctx()).await.expect("in time");
        assert_eq!(fake.calls(), 1);
    }
}
