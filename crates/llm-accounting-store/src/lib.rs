//! The sea-orm key repository of llm-accounting.
//!
//! [`SeaOrmKeyRepository`] implements [`llm_accounting_core::KeyRepository`] over a relational
//! database: SQLite (feature `sqlite`, on by default, bundled library), PostgreSQL (feature
//! `postgres`) and MySQL/MariaDB (feature `mysql`), chosen by the URL's scheme. Opening a repository applies the migrations of
//! `llm-accounting-migration`. Records hold no secret in clear: the version rows carry sealed
//! envelopes only.
//!
//! ```no_run
//! use llm_accounting_core::{KeyIdentity, KeyRepository};
//! use llm_accounting_store::{SeaOrmKeyRepository, StoreOptions};
//!
//! # async fn example() -> llm_accounting_core::Result<()> {
//! let repo =
//!     SeaOrmKeyRepository::connect("sqlite:///var/lib/app/keys.db", &StoreOptions::default())
//!         .await?;
//! let identity = KeyIdentity::from_parts("openai", Some("alice"), None)?;
//! if let Some(key) = repo.find_key(&identity).await? {
//!     println!("{} is at version {}", key.identity, key.current_version);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors follow the core's kinds: an unreachable, busy or locked database is
//! [`Error::DatabaseUnavailable`](llm_accounting_core::Error::DatabaseUnavailable) (retryable),
//! a duplicate identity is [`Error::Conflict`](llm_accounting_core::Error::Conflict), a row that
//! cannot be decoded is [`Error::Integrity`](llm_accounting_core::Error::Integrity), and other
//! database failures are [`Error::Database`](llm_accounting_core::Error::Database).

mod audit;
mod batch;
mod branch_keys;
mod connect;
mod entity;
mod error;
mod inspect;
mod limits;
mod notify;
mod options;
mod providers;
mod repository;
mod rewrap_rows;
mod rows;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod server;
#[cfg(feature = "sqlite")]
mod sqlite_file;
mod store_keys;
mod url;
mod usage;
mod wipe;

pub use inspect::{DatabaseStatus, inspect};
#[cfg(feature = "postgres")]
pub use notify::PgChangeFeed;
pub use options::StoreOptions;
pub use repository::SeaOrmKeyRepository;
pub use url::redact_url;

/// A database error of `operation` as the store reports its own: [`Error::DatabaseUnavailable`]
/// for an outage (connection refused, pool exhausted, ...), [`Error::Database`] otherwise. For
/// components that keep their own tables in the store's database (the gateway's virtual
/// keys).
///
/// [`Error::DatabaseUnavailable`]: llm_accounting_core::Error::DatabaseUnavailable
/// [`Error::Database`]: llm_accounting_core::Error::Database
pub fn database_error(operation: &'static str, err: sea_orm::DbErr) -> llm_accounting_core::Error {
    error::from_db(operation, err)
}

impl SeaOrmKeyRepository {
    /// Begins a transaction that writes (on SQLite `BEGIN IMMEDIATE`, which takes the write
    /// lock at once), for components that keep their own tables in the store's database.
    ///
    /// # Errors
    ///
    /// As [`database_error`].
    pub async fn begin_write_txn(
        &self,
        operation: &'static str,
    ) -> llm_accounting_core::Result<sea_orm::DatabaseTransaction> {
        self.begin_write(operation).await
    }
}
pub use usage::{PYTHON_SCHEMA_HEAD, SeaOrmUsageStore};
