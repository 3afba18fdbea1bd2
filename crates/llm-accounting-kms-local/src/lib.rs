//! Local-development KMS provider for llm-accounting: master keys in a file, no network.
//!
//! The master key file holds one or more 256-bit master-key versions; the last is the one new
//! data keys are wrapped with, older ones still unwrap what they wrapped (so a later rewrap can
//! move keys between them). Data keys are wrapped with AES-256-GCM, with the record's canonical
//! [`EncryptionContext`](llm_accounting_core::EncryptionContext) as associated data: a wrong
//! master key or a wrong context gives [`Error::Integrity`](llm_accounting_core::Error::Integrity).
//!
//! The file is created with mode 0600 (in a 0700 directory) by [`LocalKmsProvider::open_or_create`],
//! and refused, whoever made it, if group or others can read or write it or another user owns
//! it (see [`llm_accounting_core::files`]). Anyone holding this file and the database can read every stored key:
//! use a cloud KMS in production.
//!
//! ```no_run
//! # async fn demo() -> llm_accounting_core::Result<()> {
//! use llm_accounting_kms_local::LocalKmsProvider;
//! let provider = LocalKmsProvider::open_or_create("/path/to/master.key")?;
//! # Ok(()) }
//! ```
//!
//! Its settings are [`LocalKmsConfig`] (`[kms.local]` of llm-accounting's configuration). The
//! rules of a missing master key file (created only when asked, never while the store holds
//! keys wrapped under the lost one) are [`MasterKeyFile::open_with`]'s.
//!
//! Feature `provider` (default) is the provider itself; without it the crate is only its
//! settings ([`LocalKmsConfig`]), so that a configuration naming them can be read by a build
//! without the provider.

mod config;
#[cfg(feature = "provider")]
mod master_key_file;
#[cfg(feature = "provider")]
mod missing;
#[cfg(feature = "provider")]
mod provider;

pub use config::LocalKmsConfig;
#[cfg(feature = "provider")]
pub use master_key_file::{MasterKey, MasterKeyFile};
#[cfg(feature = "provider")]
pub use missing::CreateRules;
#[cfg(feature = "provider")]
pub use provider::LocalKmsProvider;

/// `local`, the name recorded with every data key the master key file wraps.
pub const PROVIDER_NAME: &str = "local";
