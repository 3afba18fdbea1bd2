//! Change notifications on PostgreSQL (LISTEN/NOTIFY; see `llm_accounting_core::changes`).
//!
//! Every transaction that changes a key record also runs `pg_notify(channel, 'key:<id>')`;
//! PostgreSQL delivers the notification when (and only if) the transaction commits, to every
//! session of the same database listening on the channel. The channel is
//! `llm_accounting_changes` for tables in `public`, `llm_accounting_changes.<schema>` for
//! tables in another schema (`store.schema`), so that stores in different schemas of one
//! database do not hear each other. SQLite and MySQL have no such feature: nothing is
//! published there, and their managers poll.
//!
//! [`PgChangeFeed`] is the listening side, a [`ChangeFeed`] for the manager; other code that
//! writes in a store transaction (branch keys) publishes with
//! [`SeaOrmKeyRepository::publish_in`].

use llm_accounting_core::{Change, Result};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};

use crate::SeaOrmKeyRepository;
use crate::error::from_db;
use crate::limits::max_parameters;

/// The channel of tables in the default schema.
pub(crate) const CHANNEL: &str = "llm_accounting_changes";

/// Longest channel name PostgreSQL accepts (an identifier: NAMEDATALEN - 1 bytes).
const MAX_CHANNEL_BYTES: usize = 63;

/// The channel of a store whose tables are in `schema`: [`CHANNEL`] for `public` (or an
/// unknown schema), `llm_accounting_changes.<schema>` otherwise, with a 64-bit FNV-1a hash of
/// the schema in place of a name too long for a channel.
pub(crate) fn channel_for(schema: Option<&str>) -> String {
    let Some(schema) = schema.filter(|s| !s.is_empty() && *s != "public") else {
        return CHANNEL.to_owned();
    };
    let channel = format!("{CHANNEL}.{schema}");
    if channel.len() <= MAX_CHANNEL_BYTES {
        return channel;
    }
    let hash = schema.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{CHANNEL}.{hash:016x}")
}

/// The channel of the store `db` opens: from the schema its connections see first
/// (`current_schema()`); `None` on a database without notifications.
pub(crate) async fn channel_of(db: &DatabaseConnection) -> Result<Option<String>> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(None);
    }
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_schema()::text AS schema",
        ))
        .await
        .map_err(|e| from_db("find the schema", e))?;
    let schema = row
        .and_then(|r| r.try_get::<Option<String>>("", "schema").ok())
        .flatten();
    Ok(Some(channel_for(schema.as_deref())))
}

impl SeaOrmKeyRepository {
    /// The channel this store publishes its changes on; `None` unless it is PostgreSQL.
    pub fn change_channel(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    /// Publishes `changes` in the transaction (or on the connection) `conn`: delivered when
    /// it commits, to every manager listening to this store. Does nothing except on
    /// PostgreSQL. For code that changes other cached state in a store transaction (branch
    /// keys publish [`Change::Branch`]).
    ///
    /// # Errors
    ///
    /// The database's, as for any statement of the transaction.
    pub async fn publish_in<C: ConnectionTrait>(&self, conn: &C, changes: &[Change]) -> Result<()> {
        let Some(channel) = &self.channel else {
            return Ok(());
        };
        // One statement per chunk: pg_notify over a VALUES list.
        let per_statement = max_parameters(DbBackend::Postgres)
            .saturating_sub(1)
            .min(1_000);
        for chunk in changes.chunks(per_statement) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() + 1);
            values.push(Value::from(channel.as_ref()));
            let rows: Vec<String> = (0..chunk.len()).map(|i| format!("(${})", i + 2)).collect();
            values.extend(chunk.iter().map(|c| Value::from(c.payload())));
            let sql = format!(
                "SELECT pg_notify($1, p) FROM (VALUES {}) AS changes(p)",
                rows.join(", ")
            );
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await
            .map_err(|e| from_db("publish a change", e))?;
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
pub use self::feed::PgChangeFeed;

#[cfg(feature = "postgres")]
mod feed {
    use std::sync::Arc;

    use async_trait::async_trait;
    use llm_accounting_core::{Change, ChangeFeed, ChangeStream, Result};
    use sea_orm::sqlx::PgPool;
    use sea_orm::sqlx::postgres::PgListener;

    use crate::error::from_sqlx;
    use crate::{SeaOrmKeyRepository, StoreOptions};

    /// A [`ChangeFeed`] over PostgreSQL's LISTEN/NOTIFY: one connection per subscription,
    /// listening on the store's channel. Give it to the manager with
    /// `SecureKeyManagerBuilder::change_feed`.
    #[derive(Debug, Clone)]
    pub struct PgChangeFeed {
        pool: PgPool,
        channel: Arc<str>,
    }

    impl PgChangeFeed {
        /// The feed of `repo`'s store, listening through its pool; `None` unless the store
        /// is PostgreSQL.
        pub fn of(repo: &SeaOrmKeyRepository) -> Option<Self> {
            let channel = repo.change_channel()?;
            Some(PgChangeFeed {
                pool: repo.connection().get_postgres_connection_pool().clone(),
                channel: channel.into(),
            })
        }

        /// A feed with its own connections to the store at `url` (opened as
        /// `SeaOrmKeyRepository::connect` opens them, `store.schema` included), for a
        /// listener with other credentials than the store's pool.
        ///
        /// # Errors
        ///
        /// As `SeaOrmKeyRepository::connect`; [`llm_accounting_core::Error::Config`] for a
        /// URL that is not PostgreSQL.
        pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
            let db = crate::connect::open(url, options).await?;
            let Some(channel) = super::channel_of(&db).await? else {
                return Err(llm_accounting_core::Error::config(
                    "change notifications need a PostgreSQL store",
                ));
            };
            Ok(PgChangeFeed {
                pool: db.get_postgres_connection_pool().clone(),
                channel: channel.into(),
            })
        }

        /// The channel it listens on.
        pub fn channel(&self) -> &str {
            &self.channel
        }
    }

    #[async_trait]
    impl ChangeFeed for PgChangeFeed {
        async fn subscribe(&self) -> Result<Box<dyn ChangeStream>> {
            let mut listener = PgListener::connect_with(&self.pool)
                .await
                .map_err(|e| from_sqlx("listen for changes", e))?;
            // A lost connection ends the stream; the manager subscribes again, and knows
            // when it is back.
            listener.eager_reconnect(false);
            listener
                .listen(&self.channel)
                .await
                .map_err(|e| from_sqlx("listen for changes", e))?;
            Ok(Box::new(PgChangeStream { listener }))
        }
    }

    /// One LISTEN session.
    #[derive(Debug)]
    struct PgChangeStream {
        listener: PgListener,
    }

    #[async_trait]
    impl ChangeStream for PgChangeStream {
        async fn next(&mut self) -> Result<Option<Change>> {
            loop {
                let Some(n) = self
                    .listener
                    .try_recv()
                    .await
                    .map_err(|e| from_sqlx("listen for changes", e))?
                else {
                    return Ok(None);
                };
                match Change::parse(n.payload()) {
                    Some(change) => return Ok(Some(change)),
                    None => tracing::debug!("ignored a change notification it cannot read"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_per_schema_fit_an_identifier() {
        assert_eq!(channel_for(None), CHANNEL);
        assert_eq!(channel_for(Some("public")), CHANNEL);
        assert_eq!(
            channel_for(Some("tenant_a")),
            "llm_accounting_changes.tenant_a"
        );
        let long = "s".repeat(60);
        let hashed = channel_for(Some(&long));
        assert!(hashed.len() <= MAX_CHANNEL_BYTES, "{hashed}");
        assert_ne!(hashed, channel_for(Some(&"t".repeat(60))));
        assert_eq!(hashed, channel_for(Some(&long)), "stable");
    }
}
