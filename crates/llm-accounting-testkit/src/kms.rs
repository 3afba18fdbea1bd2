//! Helpers for tests of KMS providers: an encryption context, an error's cause chain, and
//! small retry limits.

use std::time::Duration;

use llm_accounting_core::layers::{LayerOptions, RetryPolicy};
use llm_accounting_core::{EncryptionContext, KeyIdentity};
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
