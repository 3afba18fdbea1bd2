//! Column definitions shared by several migrations.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Table options per backend: on MySQL/MariaDB, `utf8mb4` with the binary collation, so that
/// any Unicode name can be stored and names compare exactly (case- and accent-sensitive) as
/// on the other databases, whatever the server's default character set.
pub(crate) fn with_table_options(
    backend: DbBackend,
    mut table: TableCreateStatement,
) -> TableCreateStatement {
    if backend == DbBackend::MySql {
        table.character_set("utf8mb4").collate("utf8mb4_bin");
    }
    table
}

/// A UTC timestamp column with at least microsecond precision on every backend.
///
/// `timestamp with time zone` on PostgreSQL and SQLite (RFC 3339 text there); on MySQL
/// `datetime(6)`, because MySQL's `timestamp` keeps whole seconds and stops in 2038.
pub(crate) fn timestamp_utc(backend: DbBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DbBackend::MySql => def.custom("datetime(6)"),
        _ => def.timestamp_with_time_zone(),
    };
    def
}
