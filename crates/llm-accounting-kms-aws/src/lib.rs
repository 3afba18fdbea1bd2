//! AWS KMS provider for llm-accounting: data keys wrapped by AWS KMS under a customer managed
//! key, bound to the record's [`EncryptionContext`].
//!
//! - Every call passes [`EncryptionContext::to_map`] as the KMS `EncryptionContext`
//!   (`format`, `record`, `service`, `user`, `project`, `version`), so KMS itself refuses to
//!   decrypt a data key under another context, IAM policies can condition on
//!   `kms:EncryptionContext:service` or `kms:EncryptionContext:user`, and CloudTrail shows
//!   whose key was read.
//! - New data keys come from `GenerateDataKey` (one call; the plaintext key never travels in a
//!   request); `wrap_key` uses `Encrypt`, `unwrap_key` uses `Decrypt` with the recorded key.
//! - The master-key reference recorded with each ciphertext is the key **ARN** KMS reports, even
//!   when the provider is configured with an alias, so a later re-pointing of the alias does
//!   not strand old records.
//! - Errors: a wrong context, a changed ciphertext or another key → [`Error::Integrity`];
//!   access denied, key disabled, pending deletion or missing → [`Error::AccessDenied`] with the
//!   reason; throttling, 5xx, timeouts and refused connections → a retryable
//!   [`Error::ProviderUnavailable`]. No KMS error ever becomes "no key".
//! - The SDK's own retries are turned off: each call is one request, and retries, timeouts and
//!   metrics are the job of [`llm_accounting_core::layers`] (the facade adds them).
//!
//! ```no_run
//! # async fn demo() -> llm_accounting_core::Result<()> {
//! use llm_accounting_kms_aws::AwsKmsProvider;
//! // Region (unless given), credentials and AWS_ENDPOINT_URL come from the standard
//! // aws-config chain.
//! let provider = AwsKmsProvider::builder()
//!     .with_key_id("alias/llm-accounting")
//!     .with_region("eu-west-1")
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! Its settings are [`AwsKmsConfig`] (`[kms.aws]` of llm-accounting's configuration; see
//! `AwsKmsProviderBuilder::with_config`). Feature `provider` (default) is the provider itself;
//! without it the crate is only its settings, so that a configuration naming them can be read
//! by a build without the provider.
//!
//! Memory hygiene: decrypted data keys are moved into zeroizing buffers as soon as the SDK
//! hands them over, but the SDK's HTTP and JSON layers hold transient copies that are not
//! wiped; `wrap_key` also hands the SDK a copy of the data key. Use a local provider if that
//! matters more to you than keeping the master key in an HSM.
//!
//! Logging: at `trace` level the SDK's `aws_smithy_runtime` target prints whole HTTP requests,
//! and an `Encrypt` request (`wrap_key`) carries the data key. Cap that target at `debug`
//! (`RUST_LOG=...,aws_smithy_runtime=debug`), as the `llm-accounting` CLI does. Responses with
//! key material (`Decrypt`, `GenerateDataKey`) are redacted by the SDK itself.

#[cfg(doc)]
use llm_accounting_core::{EncryptionContext, Error};

mod config;
#[cfg(feature = "provider")]
mod error;
#[cfg(feature = "provider")]
mod provider;
#[cfg(feature = "test-support")]
pub mod test_support;

#[cfg(feature = "provider")]
pub use aws_config;
#[cfg(feature = "provider")]
pub use aws_sdk_kms;
pub use config::AwsKmsConfig;
#[cfg(feature = "provider")]
pub use provider::{AwsKmsProvider, AwsKmsProviderBuilder};

/// `aws`, the name recorded with every key this provider wraps (and looked up to unwrap it).
pub const PROVIDER_NAME: &str = "aws";
