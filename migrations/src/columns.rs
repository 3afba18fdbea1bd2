//! Column definitions shared by several migrations.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

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
