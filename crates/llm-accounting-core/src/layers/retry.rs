//! The retry layer: tries a call again after retryable errors, with jittered exponential
//! backoff, within a number of attempts and a total time.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::layers::KmsMetrics;
use crate::provider::KmsCall;
use crate::{Error, KmsProvider, Result};

/// When and how often the [`Retry`] layer tries a call again.
///
/// The wait before retry *n* (1-based) is drawn uniformly from `[d/2, d]` where
/// `d = min(max_backoff, initial_backoff × 2^(n-1))` ("equal jitter": callers that failed
/// together do not retry together, and no wait is ever near zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most calls made in all, the first included (1 = never retry). Default 3.
    pub max_attempts: u32,
    /// Upper bound of the first wait. Default 50 ms.
    pub initial_backoff: Duration,
    /// Upper bound of any wait. Default 2 s.
    pub max_backoff: Duration,
    /// No retry starts (and no wait is begun) that would end later than this after the first
    /// call started. A call already under way is not cut short: put a
    /// [`crate::layers::Timeout`] inside the retry layer for that. Default 10 s.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The upper bound of the wait before retry `retry` (1-based), before jitter.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The jittered wait before retry `retry` (1-based): uniform in `[ceiling/2, ceiling]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            let mut b = [0u8; 8];
            // A failing OS RNG only costs the jitter, never the retry.
            let _ = crate::secret::random_bytes(&mut b);
            u64::from_le_bytes(b) % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }
}

/// Added to the error of a call that was retried and still failed: how many attempts were made,
/// over how long. Its source is the last attempt's.
#[derive(Debug)]
struct GaveUp {
    attempts: u32,
    elapsed: Duration,
    last: Option<crate::BoxError>,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempts in {} ms",
            self.attempts,
            self.elapsed.as_millis()
        )
    }
}

impl std::error::Error for GaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.last
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A [`KmsProvider`] that retries calls to the provider it wraps after retryable errors
/// ([`Error::is_retryable`]: unavailable, throttled, timed out), following a [`RetryPolicy`].
/// Other errors (integrity, access denied, ...) are returned at once. Name and master-key
/// reference are the inner provider's.
///
/// When it gives up after more than one attempt, the returned
/// [`Error::ProviderUnavailable`] says how many attempts were made, and is no longer
/// retryable ([`Error::is_retryable`] is false), so that callers above do not multiply the
/// attempts.
#[derive(Debug)]
pub struct Retry<P> {
    inner: P,
    policy: RetryPolicy,
    metrics: Option<Arc<KmsMetrics>>,
}

impl<P: KmsProvider> Retry<P> {
    /// Retries calls to `inner` following `policy`.
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        Retry {
            inner,
            policy,
            metrics: None,
        }
    }

    /// Counts retries into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<KmsMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Makes the call, and makes it again after retryable failures, following the policy.
    async fn around<T, F, Fut>(&self, call: KmsCall, mut make_call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let operation = call.operation();
        let start = Instant::now();
        let max_attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let error = match make_call().await {
                Ok(value) => return Ok(value),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            let wait = self.policy.backoff(attempt);
            let elapsed = start.elapsed();
            if attempt >= max_attempts || elapsed + wait > self.policy.max_elapsed {
                return Err(gave_up(error, attempt, elapsed));
            }
            tracing::debug!(
                provider = self.inner.name(),
                operation,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %error,
                "KMS call failed; retrying"
            );
            if let Some(m) = &self.metrics {
                m.record_retry();
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Adds the attempt count to an error that outlived its retries, and marks it as no longer
/// retryable: the retries are spent, and a caller that retried it again would multiply the
/// attempts (and the load on a KMS that is already struggling). It is still
/// [`Error::ProviderUnavailable`], so the caller still learns that the KMS is unavailable.
fn gave_up(error: Error, attempts: u32, elapsed: Duration) -> Error {
    if attempts < 2 {
        return error;
    }
    match error {
        Error::ProviderUnavailable {
            provider,
            operation,
            source,
            ..
        } => Error::ProviderUnavailable {
            provider,
            operation,
            retryable: false,
            source: Some(Arc::new(GaveUp {
                attempts,
                elapsed,
                last: source,
            })),
        },
        other => other,
    }
}

/// The [`Layer`](super::Layer) of [`Retry`]: a policy, and optionally where retries are
/// counted.
#[derive(Debug, Clone, Default)]
pub struct RetryLayer {
    policy: RetryPolicy,
    metrics: Option<Arc<KmsMetrics>>,
}

impl RetryLayer {
    /// Retries following `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer {
            policy,
            metrics: None,
        }
    }

    /// Counts retries into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<KmsMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl<P: KmsProvider> super::Layer<P> for RetryLayer {
    type Layered = Retry<P>;

    fn layer(&self, inner: P) -> Retry<P> {
        Retry {
            inner,
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

crate::provider::forward_kms_provider!(
    impl [P: KmsProvider] for Retry<P>,
    inner: |s| s.inner,
    around: around
);

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use async_trait::async_trait;

    use super::*;
    use crate::error_chain;
    use crate::layers::Metrics;
    use crate::layers::fake::{Fake, Step, ctx, wrapped};
    use crate::{DataKey, EncryptionContext, WrappedKey};

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(60),
        }
    }

    fn retry(
        fake: &Arc<Fake>,
        policy: RetryPolicy,
    ) -> (Retry<Metrics<Arc<Fake>>>, Arc<KmsMetrics>) {
        let metrics = Arc::new(KmsMetrics::new());
        let layered = Retry::new(Metrics::new(Arc::clone(fake), Arc::clone(&metrics)), policy)
            .with_metrics(Arc::clone(&metrics));
        (layered, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_until_success() {
        let fake = Fake::new(&[Step::Down, Step::Down]);
        let (p, metrics) = retry(&fake, policy(5));
        let key = p
            .unwrap_key(&wrapped(), &ctx())
            .await
            .expect("third try works");
        assert_eq!(key.expose_secret(), &[7u8; 32]);
        assert_eq!(fake.calls(), 3);
        let m = metrics.snapshot();
        assert_eq!(m.unwraps, 3, "every attempt is a call");
        assert_eq!(m.calls(), 3);
        assert_eq!(m.failures, 2);
        assert_eq!(m.retryable_failures, 2);
        assert_eq!(m.retries, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        for (step, what) in [
            (Step::Denied, "access denied"),
            (Step::Integrity, "integrity"),
            (Step::Broken, "non-retryable unavailable"),
        ] {
            let fake = Fake::new(&[step]);
            let (p, metrics) = retry(&fake, policy(5));
            let err = p.unwrap_key(&wrapped(), &ctx()).await.expect_err(what);
            assert!(!err.is_retryable(), "{what}: {err:?}");
            assert_eq!(fake.calls(), 1, "{what}: one call only");
            let m = metrics.snapshot();
            assert_eq!((m.calls(), m.failures, m.retries), (1, 1, 0), "{what}");
            assert_eq!(m.retryable_failures, 0, "{what}");
        }
        // The error is passed through unchanged.
        let fake = Fake::new(&[Step::Integrity]);
        let (p, _) = retry(&fake, policy(5));
        assert!(matches!(
            p.unwrap_key(&wrapped(), &ctx()).await,
            Err(Error::Integrity { identity: None })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_is_respected_and_reported() {
        let fake = Fake::new(&[Step::Down; 10]);
        let (p, metrics) = retry(&fake, policy(4));
        let start = Instant::now();
        let err = p
            .wrap_key(&DataKey::generate().expect("rng"), &ctx())
            .await
            .expect_err("down");
        assert_eq!(fake.calls(), 4);
        let m = metrics.snapshot();
        assert_eq!(
            (m.wraps, m.failures, m.retryable_failures, m.retries),
            (4, 4, 4, 3)
        );
        // Still an outage, but the retries are spent: not retryable any more.
        assert!(!err.is_retryable(), "retries spent: {err:?}");
        assert!(matches!(
            err,
            Error::ProviderUnavailable {
                operation: "wrap",
                ..
            }
        ));
        let text = error_chain(&err);
        assert!(text.contains("gave up after 4 attempts"), "{text}");
        assert!(text.contains("refused"), "the last cause is kept: {text}");
        // Waited 3 times: at least the lower halves of 100, 200 and 400 ms; at most all of them.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(350) && waited <= Duration::from_millis(700),
            "{waited:?}"
        );

        // max_attempts = 1 (and 0, read as 1) never retries, and adds nothing to the error.
        for n in [0, 1] {
            let fake = Fake::new(&[Step::Down]);
            let (p, metrics) = retry(&fake, policy(n));
            let err = p.unwrap_key(&wrapped(), &ctx()).await.expect_err("down");
            assert_eq!(fake.calls(), 1);
            assert_eq!(metrics.snapshot().retries, 0);
            assert!(!error_chain(&err).contains("gave up"), "{err:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn total_time_is_respected() {
        // Each failure comes after 300 ms; with a 1 s budget and ~100-400 ms waits, the layer
        // stops long before 100 attempts, and never starts a wait that would end past 1 s.
        let slow_down = SlowDown(Fake::new(&[]));
        let metrics = Arc::new(KmsMetrics::new());
        let p = Retry::new(
            Metrics::new(slow_down, Arc::clone(&metrics)),
            RetryPolicy {
                max_attempts: 100,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                max_elapsed: Duration::from_secs(1),
            },
        )
        .with_metrics(Arc::clone(&metrics));
        let start = Instant::now();
        let err = p
            .unwrap_key(&wrapped(), &ctx())
            .await
            .expect_err("always down");
        let elapsed = start.elapsed();
        let m = metrics.snapshot();
        assert!(m.unwraps >= 2 && m.unwraps <= 3, "{m:?}");
        assert_eq!(m.retries, m.unwraps - 1);
        // The last wait ended within the budget; then one more 300 ms call at most.
        assert!(elapsed <= Duration::from_millis(1300), "{elapsed:?}");
        assert!(error_chain(&err).contains("gave up after"), "{err:?}");
    }

    /// Every call takes 300 ms and then fails as unavailable.
    #[derive(Debug)]
    struct SlowDown(Arc<Fake>);

    #[async_trait]
    impl KmsProvider for SlowDown {
        fn name(&self) -> &str {
            "slow"
        }
        fn master_key_ref(&self) -> String {
            "slow-mk".into()
        }
        async fn wrap_key(&self, _k: &DataKey, _c: &EncryptionContext) -> Result<WrappedKey> {
            unreachable!("not used")
        }
        async fn unwrap_key(&self, _w: &WrappedKey, _c: &EncryptionContext) -> Result<DataKey> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err(Error::ProviderUnavailable {
                provider: "slow".into(),
                operation: "unwrap",
                retryable: true,
                source: None,
            })
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(60),
        };
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(5), Duration::from_millis(1000));
        assert_eq!(p.backoff_ceiling(200), Duration::from_millis(1000));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = p.backoff(3);
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 100, "waits are jittered");
        let zero = RetryPolicy {
            initial_backoff: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.backoff(1), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_retries_does_not_multiply_the_attempts() {
        // A retry layer above another (as a caller's own retry loop would be): once the inner
        // one gives up, its error is no longer retryable, so the outer one stops at once.
        let fake = Fake::new(&[Step::Down; 20]);
        let (inner, metrics) = retry(&fake, policy(3));
        let outer = Retry::new(inner, policy(3));
        let err = outer
            .unwrap_key(&wrapped(), &ctx())
            .await
            .expect_err("down");
        assert_eq!(fake.calls(), 3, "3 attempts, not 3 x 3");
        assert_eq!(metrics.snapshot().retries, 2);
        assert!(!err.is_retryable(), "{err:?}");
        assert!(matches!(err, Error::ProviderUnavailable { .. }), "{err:?}");
        assert!(
            error_chain(&err).contains("gave up after 3 attempts"),
            "{err:?}"
        );
    }
}
