//! How many rows one statement may carry on each database.
//!
//! A multi-row INSERT binds one parameter per column per row, and every database caps the
//! parameters of one statement: SQLite at 32,766 (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32; the
//! bundled library is newer), PostgreSQL at 65,535 (the wire protocol counts them in 16 bits),
//! MySQL and MariaDB at 65,535 placeholders per prepared statement. MySQL and MariaDB also cap
//! the size of one packet (`max_allowed_packet`, 16 MiB by default on MariaDB), and the largest
//! audit row is about 15 KB (names of 512 characters, a principal of 1,100, four bytes per
//! character in utf8mb4).

use sea_orm::DbBackend;

/// Most rows in one INSERT on any database: 1,000 of the largest audit rows (about 15 MB) fit
/// in MariaDB's default packet, and larger statements write no faster.
pub(crate) const MAX_ROWS_PER_INSERT: usize = 1_000;

/// The most bind parameters one statement may carry on `backend`.
pub(crate) fn max_parameters(backend: DbBackend) -> usize {
    match backend {
        DbBackend::Sqlite => 32_766,
        // PostgreSQL, MySQL, MariaDB.
        _ => 65_535,
    }
}

/// Rows of `columns` columns per INSERT on `backend`: under its parameter limit, and at most
/// [`MAX_ROWS_PER_INSERT`].
pub(crate) fn rows_per_insert(backend: DbBackend, columns: usize) -> usize {
    (max_parameters(backend) / columns.max(1)).clamp(1, MAX_ROWS_PER_INSERT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_under_every_limit() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres, DbBackend::MySql] {
            for columns in [1, 15, 40, 100, 70_000] {
                let rows = rows_per_insert(backend, columns);
                assert!(rows >= 1);
                assert!(rows <= MAX_ROWS_PER_INSERT);
                assert!(
                    rows == 1 || rows * columns <= max_parameters(backend),
                    "{backend:?}, {columns} columns: {rows} rows"
                );
            }
        }
        // Today's audit table (15 columns): the row cap decides everywhere; with many more
        // columns, SQLite's parameter limit would.
        assert_eq!(rows_per_insert(DbBackend::Sqlite, 15), 1_000);
        assert_eq!(rows_per_insert(DbBackend::Sqlite, 40), 819);
        assert_eq!(rows_per_insert(DbBackend::Postgres, 40), 1_000);
    }
}
