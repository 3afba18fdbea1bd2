//! Google Cloud KMS provider for llm-accounting: data keys encrypted by a Cloud KMS `CryptoKey`,
//! bound to the record's [`EncryptionContext`] as additional authenticated data.
//!
//! - `wrap_key` calls `Encrypt` with `additional_authenticated_data` =
//!   [`EncryptionContext::canonical_bytes`]; `unwrap_key` calls `Decrypt` with the same bytes,
//!   so Cloud KMS itself refuses a data key moved to another record, identity or version.
//! - The master key is a `CryptoKey` resource name
//!   (`projects/P/locations/L/keyRings/R/cryptoKeys/K`), recorded as the master-key reference.
//!   Cloud KMS puts the key version into the ciphertext and picks it on `Decrypt`, so rotating
//!   the primary version does not break old records (as long as old versions stay enabled).
//! - Errors: a wrong context or a changed ciphertext → [`Error::Integrity`]; permission denied,
//!   a missing key or a disabled / destroyed version → [`Error::AccessDenied`] with the reason;
//!   quota exhaustion, `UNAVAILABLE`, deadlines, 5xx and connection failures → a retryable
//!   [`Error::ProviderUnavailable`]. No KMS error ever becomes "no key".
//! - The client library's own retries are turned off: each call is one request, and retries,
//!   timeouts and metrics are the job of [`llm_accounting_core::layers`] (the facade adds them).
//! - Credentials: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
//!   ADC file, or the metadata server), or anonymous credentials for emulators.
//!
//! Its settings are [`GcpKmsConfig`] (`[kms.gcp]` of llm-accounting's configuration; see
//! `GcpKmsProviderBuilder::with_config`). Feature `provider` (default) is the provider itself;
//! without it the crate is only its settings, so that a configuration naming them can be read
//! by a build without the provider.
//!
//! ```no_run
//! # fn demo() -> llm_accounting_core::Result<()> {
//! use llm_accounting_kms_gcp::GcpKmsProvider;
//! // Credentials: Application Default Credentials.
//! let provider = GcpKmsProvider::builder()
//!     .with_key_name("projects/my-project/locations/europe-west1/keyRings/llm/cryptoKeys/api-keys")
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! Memory hygiene: decrypted data keys are moved into zeroizing buffers as soon as the client
//! hands them over, but its HTTP and JSON layers hold transient copies that are not wiped.

#[cfg(doc)]
use llm_accounting_core::{EncryptionContext, Error};

mod config;
#[cfg(feature = "provider")]
mod error;
#[cfg(feature = "provider")]
mod provider;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use config::{GcpCredentials, GcpKmsConfig};
#[cfg(feature = "provider")]
pub use google_cloud_auth;
#[cfg(feature = "provider")]
pub use google_cloud_kms_v1;
#[cfg(feature = "provider")]
pub use provider::{GcpKmsProvider, GcpKmsProviderBuilder};

/// `gcp`, the name recorded with every data key Cloud KMS wraps for this store.
pub const PROVIDER_NAME: &str = "gcp";
