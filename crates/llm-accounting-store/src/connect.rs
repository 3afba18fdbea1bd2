//! Opening a database from a URL.

use llm_accounting_core::Result;
use sea_orm::DatabaseConnection;

use crate::options::StoreOptions;
use crate::url::Scheme;

/// Opens a pool for `url`. Migrations are applied by the caller. No error carries the URL's
/// password.
pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<DatabaseConnection> {
    let opened = match crate::url::parse(url) {
        Ok((scheme, driver_url)) => open_parsed(scheme, &driver_url, options).await,
        Err(e) => Err(e),
    };
    opened.map_err(|e| crate::url::withhold_secrets(url, e))
}

async fn open_parsed(
    scheme: Scheme,
    url: &str,
    options: &StoreOptions,
) -> Result<DatabaseConnection> {
    match scheme {
        #[cfg(feature = "sqlite")]
        Scheme::Sqlite => sqlite::open(url, options).await,
        #[cfg(not(feature = "sqlite"))]
        Scheme::Sqlite => {
            let _ = options;
            Err(llm_accounting_core::Error::config(
                "this build of llm-accounting was built without feature sqlite",
            ))
        }
        #[cfg(feature = "postgres")]
        Scheme::Postgres => crate::server::open_postgres(url, options).await,
        #[cfg(not(feature = "postgres"))]
        Scheme::Postgres => Err(llm_accounting_core::Error::config(
            "this build of llm-accounting was built without feature postgres",
        )),
        #[cfg(feature = "mysql")]
        Scheme::MySql => crate::server::open_mysql(url, options).await,
        #[cfg(not(feature = "mysql"))]
        Scheme::MySql => Err(llm_accounting_core::Error::config(
            "this build of llm-accounting was built without feature mysql",
        )),
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::str::FromStr;
    use std::sync::Arc;

    use llm_accounting_core::{Error, Result};
    use sea_orm::sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    use sea_orm::{DatabaseConnection, SqlxSqliteConnector};

    use crate::options::StoreOptions;

    /// Opens a SQLite pool: the file checked, or created if missing and asked for (see
    /// [`crate::sqlite_file::prepare`]), WAL, `synchronous=NORMAL`, busy timeout, foreign
    /// keys on, and `secure_delete` (deleted content is overwritten with zeros in the file,
    /// not left in free pages).
    pub(super) async fn open(url: &str, options: &StoreOptions) -> Result<DatabaseConnection> {
        let in_memory = is_in_memory(url);
        let mut connect = SqliteConnectOptions::from_str(url).map_err(|e| Error::Config {
            message: "invalid SQLite database URL".into(),
            source: Some(Arc::new(e)),
        })?;
        // SQLite itself never creates the file: `prepare` has, if that was asked for.
        connect = connect
            .create_if_missing(false)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            .pragma("secure_delete", "ON");
        if !in_memory {
            connect = connect.journal_mode(SqliteJournalMode::Wal);
            crate::sqlite_file::prepare(connect.get_filename(), options.create_if_missing)?;
        }
        // No ping before handing out a pooled connection: for SQLite it is a round trip to the
        // connection's worker thread on every query, and a broken file surfaces on the query.
        let mut pool = SqlitePoolOptions::new()
            .acquire_timeout(options.connect_timeout)
            .test_before_acquire(false);
        pool = if in_memory {
            // One connection that never closes: the database lives as long as it does.
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool.max_connections(options.max_connections.max(1))
        };
        // Several pools opening a new file at once race for the lock that switches it to WAL
        // (taken before any busy handler applies): a busy file is tried again, with a random
        // pause, within the connect timeout.
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        let pool = loop {
            match pool.clone().connect_with(connect.clone()).await {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && started.elapsed() < options.connect_timeout => {
                    attempt += 1;
                    tokio::time::sleep(pause(attempt)).await;
                }
                Err(e) => return Err(crate::error::from_sqlx("connect", e)),
            }
        };
        Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
    }

    /// Whether opening failed because another connection held the file's lock.
    fn is_busy(e: &sea_orm::sqlx::Error) -> bool {
        const SQLITE_BUSY: u32 = 5;
        const SQLITE_LOCKED: u32 = 6;
        match e {
            sea_orm::sqlx::Error::Database(db) => db
                .code()
                .and_then(|c| c.parse::<u32>().ok())
                .is_some_and(|n| matches!(n & 0xff, SQLITE_BUSY | SQLITE_LOCKED)),
            _ => false,
        }
    }

    /// A random pause of up to 10 × 2^attempt ms (at most 160 ms) before trying again.
    fn pause(attempt: u32) -> std::time::Duration {
        let mut b = [0u8; 2];
        let r = llm_accounting_core::random_bytes(&mut b)
            .map_or(u16::MAX / 2, |()| u16::from_le_bytes(b));
        let cap_ms = 10u64 << attempt.min(4);
        std::time::Duration::from_micros(u64::from(r) * cap_ms * 1000 / u64::from(u16::MAX))
    }

    /// Whether the URL names an in-memory database (`sqlite::memory:`, `mode=memory`).
    fn is_in_memory(url: &str) -> bool {
        let rest = url.strip_prefix("sqlite:").unwrap_or(url);
        let rest = rest.trim_start_matches("//");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        path.is_empty()
            || path == ":memory:"
            || query
                .split('&')
                .any(|kv| kv.eq_ignore_ascii_case("mode=memory"))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn in_memory_urls() {
            assert!(super::is_in_memory("sqlite::memory:"));
            assert!(super::is_in_memory("sqlite://:memory:"));
            assert!(super::is_in_memory(
                "sqlite://file.db?mode=memory&cache=shared"
            ));
            assert!(!super::is_in_memory("sqlite://file.db?mode=rwc"));
            assert!(!super::is_in_memory("sqlite:///tmp/x.db"));
        }
    }
}
