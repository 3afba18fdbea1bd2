//! Core of llm-accounting: store LLM provider API keys encrypted at rest.
//!
//! - [`KmsProvider`]: wraps data keys under a master key (local file, AWS KMS, ...).
//! - [`KeyRepository`]: stores records and versions (the sea-orm store, or
//!   [`MemoryKeyRepository`] in tests).
//! - [`SecureKeyManager`]: envelope encryption (a fresh AES-256-GCM data key per version, the
//!   [`EncryptionContext`] bound as associated data and as KMS context), a single-flight cache,
//!   store / get / list / rotate / disable / enable / delete.
//! - [`Error`]: one error type with typed kinds.
//! - [`layers`]: retry, timeout and metrics wrappers around any [`KmsProvider`].
//!
//! Most users start from the `llm-accounting` facade crate instead.

pub mod audit;
mod batcher;
pub mod branch;
mod cache;
pub mod changes;
#[cfg(feature = "conformance")]
pub mod conformance;
mod context;
pub mod envelope;
mod error;
pub mod files;
mod identity;
mod key_change;
mod last_used;
pub mod layers;
mod manager;
mod memory;
mod memory_lock;
mod principal;
mod provider;
mod provider_error;
mod repository;
mod seal;
mod secret;
pub mod settings;

pub use audit::{
    AuditChain, AuditEvent, AuditFilter, AuditHead, AuditLog, AuditRecord, MemoryAuditLog,
    RecordRevision,
};
pub use cache::CacheOptions;
pub use changes::{Change, ChangeFeed, ChangeStream, ChangeSubscriber};
pub use context::{EncryptionContext, FORMAT_VERSION};
pub use envelope::Envelope;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use identity::{KeyIdentity, MAX_NAME_CHARS, is_hidden_char, looks_like_a_key, validate_name};
pub use key_change::{KeyChange, LoadedCurrent};
pub use manager::{
    AuditOptions, BatchMode, BrokenKey, KeyListing, ListOptions, ManagerOptions, ProbeReport,
    ProbedMasterKey, RewrapFailure, RewrapOptions, RewrapProgress, RewrapReport, SealReport,
    SecureKeyManager, SecureKeyManagerBuilder, StoreOutcome, UNSEALED_WARNING_TARGET, VersionInfo,
    WriteOptions,
};
pub use memory::MemoryKeyRepository;
pub use principal::Principal;
pub use provider::{KmsProvider, WrappedKey};
pub use provider_error::{
    FailureClass, ProviderCallError, ProviderErrors, error_chain, required_setting,
};
pub use repository::{
    BrokenKeyRow, Journal, KEY_STAMPS_BATCH, KeyFilter, KeyRecord, KeyRepository, KeyState,
    KeyWrite, Listed, RecordSeal, StoreKeyRecord, VersionRecord, VersionState,
};
pub use secret::{ApiKey, DATA_KEY_LEN, DataKey, MAX_API_KEY_BYTES, random_bytes};
