//! Looking at a database without changing it, for a health check (`llm-accounting doctor`).

use llm_accounting_core::Result;
use llm_accounting_migration::{Migrator, MigratorTrait};

use crate::connect;
use crate::error::from_db;
use crate::options::StoreOptions;

/// What [`inspect`] learned about a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseStatus {
    /// How many migrations are applied.
    pub applied: usize,
    /// The names of the migrations not applied yet (opening the store for use applies them).
    pub pending: Vec<String>,
}

/// Opens the database at `url` as [`SeaOrmKeyRepository::connect`](crate::SeaOrmKeyRepository::connect)
/// does (the same checks of files and URLs, a missing SQLite file created only with
/// [`StoreOptions::create_if_missing`]), but applies no migration and writes nothing: it
/// reports which migrations are applied and which are pending.
///
/// # Errors
///
/// As [`SeaOrmKeyRepository::connect`](crate::SeaOrmKeyRepository::connect) for opening;
/// [`Error::Database`](llm_accounting_core::Error::Database) when the migration table cannot
/// be read.
pub async fn inspect(url: &str, options: &StoreOptions) -> Result<DatabaseStatus> {
    let db = Box::pin(connect::open(url, options)).await?;
    let status = Migrator::get_migration_with_status_read_only(&db)
        .await
        .map_err(|e| from_db("inspect migrations", e));
    // Closing can only fail on a connection that is gone already.
    let _ = db.close().await;
    let status = status?;
    let (mut applied, mut pending) = (0, Vec::new());
    for m in status {
        // The status type is sea-orm-migration's, which this crate does not name.
        if m.status().to_string() == "Applied" {
            applied += 1;
        } else {
            pending.push(m.name().to_owned());
        }
    }
    Ok(DatabaseStatus { applied, pending })
}
