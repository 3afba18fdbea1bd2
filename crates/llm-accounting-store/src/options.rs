//! How to open the database: [`StoreOptions`], read by the SQLite opener (`connect.rs`) and
//! the server pools (`server.rs`) alike.

use std::time::Duration;

/// How to open the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Largest number of pooled connections (default 8). In-memory SQLite always uses one:
    /// every connection would otherwise see its own empty database.
    pub max_connections: u32,
    /// How long to wait for a connection, when opening and when taking one from the pool
    /// (default 10 s).
    pub connect_timeout: Duration,
    /// How long SQLite waits for a lock held by another connection or process before it
    /// reports the database as busy (default 5 s).
    pub busy_timeout: Duration,
    /// PostgreSQL only: the schema to keep the tables in (`search_path`); `None` uses the
    /// server's default (`public`). The schema must exist.
    pub schema: Option<String>,
    /// SQLite only: create the database file (mode 0600) if it does not exist (default
    /// `false`: a missing file is an
    /// [`Error::Config`](llm_accounting_core::Error::Config) naming it, so that a mistyped path is
    /// not silently a new, empty database).
    pub create_if_missing: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
            schema: None,
            create_if_missing: false,
        }
    }
}
