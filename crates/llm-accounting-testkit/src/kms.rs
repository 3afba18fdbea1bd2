//! Helpers for tests of KMS providers: an encryption context, an error's cause chain, small
//! retry limits, the standard layers with their counters, the conformance suite through them,
//! and a loopback URL nothing listens on.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use llm_accounting_core::conformance::provider::{Expectations, run_with};
use llm_accounting_core::layers::{self, KmsMetrics, LayerOptions, RetryPolicy};
use llm_accounting_core::{EncryptionContext, Error, KeyIdentity, KmsProvider};
use uuid::Uuid;

/// The record id of every context [`ctx`] makes.
pub const RECORD_ID: Uuid = Uuid::from_u128(42);

/// The encryption context of version `version` of the key of `service` and `user` (no
/// project), record id [`RECORD_ID`].
///
/// # Panics
///
/// When the names are not a valid identity.
pub fn ctx(service: &str, user: Option<&str>, version: u32) -> EncryptionContext {
    EncryptionContext::new(
        RECORD_ID,
        KeyIdentity::from_parts(service, user, None).expect("valid identity"),
        version,
    )
}

/// The error and its sources joined by `: `, as the CLI prints them: core's, re-exported
/// for the tests of provider crates.
pub use llm_accounting_core::error_chain;

/// Small, fast retry limits for failure tests: 3 attempts, 10 to 50 ms apart, 5 s in all,
/// each call cut off after `timeout`.
pub fn quick_layers(timeout: Duration) -> LayerOptions {
    LayerOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(5),
        },
        timeout: Some(timeout),
    }
}

/// `provider` in the standard layers with `options`, and the layers' counters.
pub fn layered(
    provider: Arc<dyn KmsProvider>,
    options: &LayerOptions,
) -> (Arc<dyn KmsProvider>, Arc<KmsMetrics>) {
    let metrics = Arc::new(KmsMetrics::new());
    let layered = layers::stack(provider, options, Arc::clone(&metrics));
    (layered, metrics)
}

/// The provider conformance suite (with `expectations`) run through the standard layers with
/// their default options: they change nothing visible, and nothing in the suite is retried.
///
/// # Panics
///
/// On the first check that fails.
pub async fn conformance_through_layers(
    provider: Arc<dyn KmsProvider>,
    expectations: Expectations,
) {
    let (layered, metrics) = layered(provider, &LayerOptions::default());
    run_with(layered.as_ref(), expectations).await;
    let m = metrics.snapshot();
    assert!(m.calls() > 20, "{m:?}");
    assert_eq!(m.retries, 0, "nothing in the suite is retryable: {m:?}");
}

/// Asserts that `err` is [`Error::ProviderUnavailable`] with this `retryable`.
///
/// # Panics
///
/// When it is not.
pub fn assert_unavailable(err: &Error, retryable: bool) {
    assert!(
        matches!(err, Error::ProviderUnavailable { retryable: r, .. } if *r == retryable),
        "expected ProviderUnavailable (retryable: {retryable}), got {err:?}"
    );
}

/// A loopback URL nothing listens on.
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_chain_names_every_cause() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }

    #[test]
    fn contexts_differ_by_name_and_version_only() {
        assert_eq!(
            ctx("openai", Some("alice"), 1),
            ctx("openai", Some("alice"), 1)
        );
        assert_ne!(ctx("openai", Some("alice"), 1), ctx("openai", None, 1));
        assert_ne!(ctx("openai", None, 1), ctx("openai", None, 2));
    }
}
