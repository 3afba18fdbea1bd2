//! The timeout layer: a deadline for each call to a provider.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{DataKey, EncryptionContext, Error, KmsProvider, Result, WrappedKey};

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

    async fn limited<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.limit, call).await {
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

#[async_trait]
impl<P: KmsProvider> KmsProvider for Timeout<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn master_key_ref(&self) -> String {
        self.inner.master_key_ref()
    }

    fn is_retired(&self, master_key_ref: &str) -> bool {
        self.inner.is_retired(master_key_ref)
    }

    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        self.limited("wrap", self.inner.wrap_key(key, context))
            .await
    }

    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        self.limited("unwrap", self.inner.unwrap_key(wrapped, context))
            .await
    }

    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey)> {
        self.limited("generate data key", self.inner.generate_data_key(context))
            .await
    }
}
