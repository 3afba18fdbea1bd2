//! Mapping of database failures onto [`llm_accounting_core::Error`].
//!
//! - the database cannot be reached, the pool timed out, or a lock outlived the busy timeout:
//!   [`Error::DatabaseUnavailable`] (retryable);
//! - a unique constraint refused an insert: [`Error::Conflict`] (decided by the caller, which
//!   knows the identity; see [`is_unique_violation`]);
//! - anything else: [`Error::Database`].

use std::ops::Deref;
use std::sync::Arc;

use llm_accounting_core::Error;
use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};

/// Maps a sea-orm error raised while doing `operation`.
pub(crate) fn from_db(operation: &'static str, err: DbErr) -> Error {
    let outage = match &err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_is_outage(e)
        }
        _ => false,
    };
    let source = Some(Arc::new(err) as llm_accounting_core::BoxError);
    if outage {
        Error::DatabaseUnavailable { operation, source }
    } else {
        Error::Database { operation, source }
    }
}

/// Maps a raw sqlx error (raised while opening the pool) during `operation`.
pub(crate) fn from_sqlx(operation: &'static str, err: sqlx::Error) -> Error {
    let outage = sqlx_is_outage(&err);
    let source = Some(Arc::new(err) as llm_accounting_core::BoxError);
    if outage {
        Error::DatabaseUnavailable { operation, source }
    } else {
        Error::Database { operation, source }
    }
}

/// Maps a failure to open a PostgreSQL or MySQL/MariaDB pool. A database that does not exist
/// and credentials the server refuses are configuration errors (the URL is wrong, not the
/// server down); the rest as [`from_sqlx`].
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn from_connect(err: sqlx::Error) -> Error {
    let problem = match &err {
        sqlx::Error::Configuration(_) => Some("invalid database URL"),
        sqlx::Error::Database(db) => connect_refusal(db.as_ref()),
        _ => None,
    };
    match problem {
        Some(message) => Error::Config {
            message: message.to_owned(),
            source: Some(Arc::new(err)),
        },
        None => from_sqlx("connect", err),
    }
}

/// What a server's refusal to connect means, when it means the configuration is wrong.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn connect_refusal(db: &dyn sqlx::error::DatabaseError) -> Option<&'static str> {
    const MISSING: &str = "the database named in the database URL does not exist";
    const REFUSED: &str = "the database server refused the credentials of the database URL";
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // ER_BAD_DB_ERROR; ER_DBACCESS_DENIED_ERROR (the others, such as 1045 and MariaDB's
        // 1698, carry SQLSTATE 28000, below).
        match my.number() {
            1049 => return Some(MISSING),
            1044 => return Some(REFUSED),
            _ => {}
        }
    }
    // PostgreSQL: invalid_catalog_name; class 28 (both): invalid authorization.
    match db.code().as_deref() {
        Some("3D000") => Some(MISSING),
        Some(c) if c.starts_with("28") => Some(REFUSED),
        _ => None,
    }
}

/// Whether `err` is a unique-constraint (or primary-key) violation, on any backend.
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return true;
    }
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(e.deref(), sqlx::Error::Database(db)
                if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
        }
        _ => false,
    }
}

/// Whether a driver error means "the database is not available right now".
fn sqlx_is_outage(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            #[cfg(feature = "sqlite")]
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                return sqlite_code_is_outage(code.as_deref()) || message_is_outage(db.message());
            }
            sqlstate_is_outage(code.as_deref()) || message_is_outage(db.message())
        }
        _ => false,
    }
}

/// SQLite (extended) result codes of "busy / locked / cannot open / I/O error".
#[cfg(any(feature = "sqlite", test))]
fn sqlite_code_is_outage(code: Option<&str>) -> bool {
    const SQLITE_BUSY: u32 = 5;
    const SQLITE_LOCKED: u32 = 6;
    const SQLITE_IOERR: u32 = 10;
    const SQLITE_CANTOPEN: u32 = 14;
    const SQLITE_PROTOCOL: u32 = 15;
    // sqlx reports the extended result code in decimal; the primary code is its low byte.
    code.and_then(|c| c.parse::<u32>().ok()).is_some_and(|n| {
        matches!(
            n & 0xff,
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_CANTOPEN | SQLITE_PROTOCOL
        )
    })
}

/// SQLSTATE codes (PostgreSQL, MySQL) of outages and transient lock failures: class 08
/// (connection exception), 53 (insufficient resources), 57P0x (shutdown), 55P03 (lock not
/// available), 40001 / 40P01 (serialization failure, deadlock).
fn sqlstate_is_outage(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.starts_with("08")
            || c.starts_with("53")
            || c.starts_with("57P0")
            || matches!(c, "55P03" | "40001" | "40P01")
    })
}

fn message_is_outage(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "database is locked",
        "database table is locked",
        "busy",
        "lock wait timeout",
    ]
    .iter()
    .any(|p| m.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert!(sqlite_code_is_outage(Some("5")));
        assert!(sqlite_code_is_outage(Some("517"))); // SQLITE_BUSY_SNAPSHOT
        assert!(sqlite_code_is_outage(Some("6")));
        assert!(sqlite_code_is_outage(Some("14")));
        assert!(!sqlite_code_is_outage(Some("2067"))); // unique violation
        assert!(!sqlite_code_is_outage(Some("787"))); // foreign key
        assert!(!sqlite_code_is_outage(None));
        assert!(sqlstate_is_outage(Some("08006")));
        assert!(sqlstate_is_outage(Some("57P01")));
        assert!(sqlstate_is_outage(Some("40001")));
        assert!(!sqlstate_is_outage(Some("23505")));
        assert!(!sqlstate_is_outage(Some("23000")));
        assert!(!sqlstate_is_outage(None));
        assert!(message_is_outage("database is locked"));
        assert!(!message_is_outage(
            "UNIQUE constraint failed: api_keys.scope_key"
        ));
    }

    #[test]
    fn mapping() {
        assert!(matches!(
            from_db(
                "x",
                DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)
            ),
            Error::DatabaseUnavailable { operation: "x", .. }
        ));
        assert!(matches!(
            from_db("x", DbErr::Custom("boom".into())),
            Error::Database { operation: "x", .. }
        ));
        assert!(matches!(
            from_sqlx("x", sqlx::Error::PoolTimedOut),
            Error::DatabaseUnavailable { .. }
        ));
        assert!(!is_unique_violation(&DbErr::Custom("x".into())));
    }
}
