//! Azure Key Vault provider for llm-accounting: data keys wrapped by a Key Vault (or Managed HSM)
//! key with `wrapKey` / `unwrapKey`.
//!
//! - The master key is a key identifier URL, `https://NAME.vault.azure.net/keys/KEY[/VERSION]`
//!   (or `https://NAME.managedhsm.azure.net/keys/KEY[/VERSION]`). Without a version, Key Vault
//!   wraps with the current one.
//! - The master-key reference recorded with each ciphertext is the **versioned** key id Key Vault
//!   reports (`.../keys/KEY/VERSION`), and `unwrap_key` uses that version: rotating the Key
//!   Vault key does not break old records (as long as old versions stay enabled).
//! - Algorithms: `RSA-OAEP-256` for RSA keys (the default), `A256KW` for AES keys in a Managed
//!   HSM ([`WrapAlgorithm`]). The algorithm is not recorded with the ciphertext: unwrapping uses
//!   the configured one, so change it only together with the key (and `keys rewrap`).
//! - **No AAD at this layer**: RSA wrapKey takes no associated data, so Key Vault cannot bind a
//!   wrapped data key to its record. The binding is carried by the record's AES-256-GCM
//!   envelope, whose AAD is the canonical [`EncryptionContext`]: a data key moved to another
//!   record unwraps, but the API key it protects then fails to decrypt (integrity error).
//! - Errors: a ciphertext Key Vault cannot unwrap → [`Error::Integrity`]; 401/403 (permissions,
//!   disabled key), 404 (key or version missing) → [`Error::AccessDenied`] with the reason;
//!   429, 5xx, timeouts and connection failures → a retryable [`Error::ProviderUnavailable`].
//!   No Key Vault error ever becomes "no key". The SDK's own retries are off; retries, timeouts
//!   and metrics are the job of [`llm_accounting_core::layers`] (the facade adds them).
//! - Credentials ([`AzureCredentialKind`]): a DefaultAzureCredential-style chain (environment
//!   client secret, workload identity, managed identity, Azure CLI / azd), or explicitly a client
//!   secret or a managed identity.
//!
//! Its settings are [`AzureKeyVaultConfig`] (`[kms.azure]` of llm-accounting's configuration;
//! see `AzureKeyVaultProviderBuilder::with_config`). Feature `provider` (default) is the
//! provider itself; without it the crate is only its settings, so that a configuration naming
//! them can be read by a build without the provider.
//!
//! ```no_run
//! # fn demo() -> llm_accounting_core::Result<()> {
//! use llm_accounting_kms_azure::{AzureCredentialKind, AzureKeyVaultProvider};
//! // Credentials: the DefaultAzureCredential-style chain.
//! let provider = AzureKeyVaultProvider::builder()
//!     .with_key_id("https://my-vault.vault.azure.net/keys/llm-accounting")
//!     .build()?;
//! // A service principal from AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET:
//! let provider = AzureKeyVaultProvider::builder()
//!     .with_key_id("https://my-vault.vault.azure.net/keys/llm-accounting")
//!     .with_credential(AzureCredentialKind::parse("client-secret")?)
//!     .build()?;
//! # Ok(()) }
//! ```

#[cfg(doc)]
use llm_accounting_core::{EncryptionContext, Error};

mod config;
#[cfg(feature = "provider")]
mod credential;
#[cfg(feature = "provider")]
mod error;
#[cfg(feature = "provider")]
mod provider;
#[cfg(feature = "test-support")]
pub mod test_support;
#[cfg(feature = "provider")]
mod transport;

#[cfg(feature = "provider")]
pub use azure_core;
#[cfg(feature = "provider")]
pub use azure_identity;
#[cfg(feature = "provider")]
pub use azure_security_keyvault_keys;
pub use config::{AzureCredentials, AzureKeyVaultConfig, WrapAlgorithm};
#[cfg(feature = "provider")]
pub use credential::AzureCredentialKind;
#[cfg(feature = "provider")]
pub use provider::{AzureKeyVaultProvider, AzureKeyVaultProviderBuilder, KeyVaultKeyId};
#[cfg(feature = "provider")]
pub use transport::EndpointOverride;

/// `azure`, the name recorded with every data key Key Vault wraps for this store.
pub const PROVIDER_NAME: &str = "azure";
