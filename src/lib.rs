//! # llm-accounting
//!
//! Store LLM provider API keys (OpenAI, Anthropic, ...) encrypted at rest, under a master key
//! held by a KMS, in SQLite (default) or another database through sea-orm.
//!
//! Each key version is sealed with a fresh AES-256-GCM data key; the data key is wrapped by the
//! KMS. Both are bound to the key's identity and version, so a ciphertext moved anywhere else
//! fails to decrypt.
//!
//! ## Two minutes
//!
//! ```no_run
//! # async fn demo() -> llm_accounting::Result<()> {
//! use llm_accounting::{ApiKey, LlmAccounting};
//! // No configuration: SQLite file and local master key in the platform data directory.
//! let accounting = LlmAccounting::from_env().await?.with_user(Some("alice"));
//! accounting.store_api_key("openai", ApiKey::new("sk-test-FAKE".into())).await?;
//! let key = accounting.get_api_key("openai").await?;
//! # let _ = key;
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `kms-local` | yes | local master key file, no network |
//! | `kms-aws` | no | AWS KMS ([`AwsKmsProvider`]), `LLM_ACCOUNTING_KMS_PROVIDER=aws` |
//! | `kms-azure` | no | Azure Key Vault ([`AzureKeyVaultProvider`]), `LLM_ACCOUNTING_KMS_PROVIDER=azure` |
//! | `kms-gcp` | no | Google Cloud KMS ([`GcpKmsProvider`]), `LLM_ACCOUNTING_KMS_PROVIDER=gcp` |
//! | `sqlite` | yes | SQLite (bundled) |
//! | `accounting` | yes | usage events, limits, quota checks, quota-gated keys ([`usage`]) |
//! | `all-providers`, `all-databases` | no | everything this release can build |
//!
//! A provider named in configuration whose feature is off is a clear [`Error::Config`].
//!
//! [`Stack`] builds everything the settings name in one place (provider, [`layers`], branch
//! keys, repository, audit trail, change feed, manager, accounting) with one `shutdown()`.
//! Every provider built from settings is wrapped in the layers of the core: retries of
//! transient failures, a deadline per call, and counters ([`Stack::metrics`]).

mod accounting;
mod build;
mod provider;
mod settings;
mod stack;
#[cfg(feature = "accounting")]
pub mod usage;

pub use accounting::LlmAccounting;
pub use build::{DefaultsUsed, build_repository};
pub use provider::{
    build_provider, build_provider_and_repository, build_provider_for, build_provider_with_metrics,
};
pub use settings::{
    AccountingEngine, AccountingSettings, AuditSettings, AwsSettings, AzureCredentials,
    AzureKeyWrap, AzureSettings, CONFIG_FILE_ENV, CacheSettings, ConfigFileSource, DEFAULT_CONFIG,
    ENV_VARS, Enforcement, GatewaySettings, GcpCredentials, GcpSettings, KeysSettings,
    KmsHierarchy, KmsProviderKind, KmsSettings, LocalSettings, OTHER_ENV_VARS, Overrides,
    PROVIDER_NAMES, RedisFallback, Settings, StoreSettings, UPSTREAM_ENV_PREFIX, UnknownEnvVar,
    UnpricedModels, UpstreamApi, UpstreamSettings,
};
pub use stack::{RewrapTarget, Stack, StackBuilder};

pub use llm_accounting_core::audit::{
    AuditChain, AuditEvent, AuditFilter, AuditHead, AuditLog, AuditRecord, ChainBreak,
    DROPPED_OPERATION, record_hash, verify_chain, verify_chain_with,
};
pub use llm_accounting_core::branch;
pub use llm_accounting_core::layers;
pub use llm_accounting_core::{
    ApiKey, AuditOptions, BatchMode, CacheOptions, Change, ChangeFeed, ChangeStream,
    ChangeSubscriber, DataKey, EncryptionContext, Envelope, Error, ErrorKind, FailureClass,
    KeyFilter, KeyIdentity, KeyRecord, KeyRepository, KeyState, KmsProvider, ListOptions, Listed,
    MAX_API_KEY_BYTES, MAX_NAME_CHARS, ManagerOptions, MemoryKeyRepository, Principal, ProbeReport,
    ProbedMasterKey, ProviderCallError, Result, RewrapFailure, RewrapOptions, RewrapProgress,
    RewrapReport, SecureKeyManager, SecureKeyManagerBuilder, StoreOutcome, UNSEALED_WARNING_TARGET,
    VersionInfo, VersionRecord, VersionState, WrappedKey, WriteOptions, error_chain,
    is_hidden_char, validate_name,
};
pub use llm_accounting_store::{
    DatabaseStatus, SeaOrmKeyRepository, StoreOptions, inspect as inspect_database, redact_url,
};

/// The Redis quota engine (`accounting.engine = redis`): its store, options, and whether a
/// Redis answers (for `doctor`).
#[cfg(feature = "redis")]
pub use llm_accounting_redis::{RedisOptions, RedisUsageStore, ping as ping_redis};

/// Change notifications of a PostgreSQL store (LISTEN/NOTIFY), for
/// [`SecureKeyManagerBuilder::change_feed`].
#[cfg(feature = "postgres")]
pub use llm_accounting_store::PgChangeFeed;

/// The local-development provider.
#[cfg(feature = "kms-local")]
pub use llm_accounting_kms_local::LocalKmsProvider;

/// The AWS KMS provider, its builder, and the AWS SDK crates it is built on (to make a client
/// of the same version for [`AwsKmsProvider::from_client`]).
#[cfg(feature = "kms-aws")]
pub use llm_accounting_kms_aws::{AwsKmsProvider, AwsKmsProviderBuilder, aws_config, aws_sdk_kms};

/// The Azure Key Vault provider, its builder and settings, and the Azure crates it is built on.
#[cfg(feature = "kms-azure")]
pub use llm_accounting_kms_azure::{
    AzureCredentialKind, AzureKeyVaultProvider, AzureKeyVaultProviderBuilder, KeyVaultKeyId,
    WrapAlgorithm, azure_core, azure_identity, azure_security_keyvault_keys,
};

/// The Google Cloud KMS provider, its builder, and the Google Cloud crates it is built on.
#[cfg(feature = "kms-gcp")]
pub use llm_accounting_kms_gcp::{
    GcpKmsProvider, GcpKmsProviderBuilder, google_cloud_auth, google_cloud_kms_v1,
};

/// The traits, for `use llm_accounting::prelude::*`.
pub mod prelude {
    pub use llm_accounting_core::{KeyRepository, KmsProvider};
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
