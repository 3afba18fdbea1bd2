//! PostgreSQL and MySQL/MariaDB: a pool that checks each connection before handing it out, so
//! that after an outage the first query does not fail on a dead connection; lost connections
//! are replaced on demand, so the process recovers when the server is back.
//!
//! The pool is built with sqlx directly, not through sea-orm's `Database::connect`: that
//! function's `trace` span records its options, the whole URL and its password with them.
//! Here the URL is parsed once into the driver's options, and never printed.

use std::str::FromStr;
use std::sync::Arc;

use llm_accounting_core::{Error, Result};
use sea_orm::DatabaseConnection;
use sea_orm::sqlx::{self, ConnectOptions as _};

use crate::options::StoreOptions;

/// A URL the driver cannot parse: a configuration error whose source is the driver's reason
/// (the caller withholds it should it quote the URL).
fn invalid_url(database: &str, err: sqlx::Error) -> Error {
    Error::Config {
        message: format!("invalid {database} database URL"),
        source: Some(Arc::new(err)),
    }
}

/// Pool settings shared by both servers.
fn pool_options<DB: sqlx::Database>(options: &StoreOptions) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(options.max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(options.connect_timeout)
        .test_before_acquire(true)
}

/// `SET search_path = "a","b"` for the schema setting (a comma-separated list; names already
/// in double quotes are kept as written).
#[cfg(feature = "postgres")]
fn search_path_sql(schema: &str) -> String {
    if schema.starts_with('"') {
        return format!("SET search_path = {schema}");
    }
    let names: Vec<String> = schema
        .split(',')
        .map(|name| {
            if name.starts_with('"') {
                name.to_owned()
            } else {
                format!("\"{name}\"")
            }
        })
        .collect();
    format!("SET search_path = {}", names.join(","))
}

/// Opens one connection first, so that a server that cannot be reached is reported with the
/// driver's own reason ("Connection refused", an unknown host) at once: the pool retries such
/// failures until its acquire timeout and then says only "pool timed out". The connection is
/// closed again; the pool opens its own.
async fn probe<O>(connect: &O, options: &StoreOptions) -> Result<()>
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(options.connect_timeout, connect.connect()).await {
        Ok(Ok(conn)) => {
            // Closing politely can only fail on a connection that is gone already.
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        }
        Ok(Err(e)) => Err(crate::error::from_connect(e)),
        // Slower than the timeout: let the pool try (and time out) as before.
        Err(_) => Ok(()),
    }
}

/// Opens a PostgreSQL pool.
#[cfg(feature = "postgres")]
pub(crate) async fn open_postgres(url: &str, options: &StoreOptions) -> Result<DatabaseConnection> {
    use sea_orm::sqlx::postgres::{PgConnectOptions, Postgres};
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| invalid_url("PostgreSQL", e))?
        .disable_statement_logging();
    probe(&connect, options).await?;
    let mut pool = pool_options::<Postgres>(options);
    if let Some(schema) = &options.schema {
        let sql = search_path_sql(schema);
        pool = pool.after_connect(move |conn, _| {
            let sql = sql.clone();
            Box::pin(async move {
                sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(sql))
                    .await
                    .map(|_| ())
            })
        });
    }
    let pool = pool
        .connect_with(connect)
        .await
        .map_err(crate::error::from_connect)?;
    Ok(sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(
        pool,
    ))
}

/// Opens a MySQL/MariaDB pool.
#[cfg(feature = "mysql")]
pub(crate) async fn open_mysql(url: &str, options: &StoreOptions) -> Result<DatabaseConnection> {
    use sea_orm::sqlx::mysql::{MySql, MySqlConnectOptions};
    let connect = MySqlConnectOptions::from_str(url)
        .map_err(|e| invalid_url("MySQL", e))?
        .disable_statement_logging();
    probe(&connect, options).await?;
    let pool = pool_options::<MySql>(options)
        .connect_with(connect)
        .await
        .map_err(crate::error::from_connect)?;
    Ok(sea_orm::SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    #[test]
    fn search_path_quotes_each_name() {
        assert_eq!(
            super::search_path_sql("tenant_a"),
            r#"SET search_path = "tenant_a""#
        );
        assert_eq!(
            super::search_path_sql("a,\"B\""),
            r#"SET search_path = "a","B""#
        );
        assert_eq!(
            super::search_path_sql("\"x\", public"),
            r#"SET search_path = "x", public"#
        );
    }
}
