//! [`SeaOrmKeyRepository`]: the [`KeyRepository`] over sea-orm.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_accounting_core::{
    Change, Error, Journal, KeyChange, KeyFilter, KeyIdentity, KeyRecord, KeyRepository, KeyState,
    KeyWrite, Listed, LoadedCurrent, Result, StoreKeyRecord, VersionRecord, VersionState,
    WrappedKey,
};
use llm_accounting_migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    FromQueryResult, JoinType, QueryFilter, QueryOrder, QuerySelect, QueryTrait, RelationTrait,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use crate::audit::journal_in;
use crate::connect;
use crate::entity::{api_key, api_key_version};
use crate::error::{from_db, is_unique_violation};
use crate::options::StoreOptions;
use crate::rows::{
    broken_row, check_identity, key_active_model, key_record, revision_i64, uuid_text,
    version_active_model, version_i32, version_record,
};

/// Most `last_used_at` updates in one transaction: at a few microseconds each on SQLite (a
/// network round trip each on a server), the write lock is held for milliseconds.
const LAST_USES_PER_TRANSACTION: usize = 500;

/// A [`KeyRepository`] stored in a relational database through sea-orm.
///
/// Tables are `api_keys` and `api_key_versions` (see `llm-accounting-migration`); opening a
/// repository applies pending migrations. Every multi-row change runs in one transaction.
/// Cloning is cheap: clones share the connection pool.
#[derive(Clone)]
pub struct SeaOrmKeyRepository {
    pub(crate) db: DatabaseConnection,
    /// The hot read (`load_current`), rendered once for this backend: building it with the
    /// query builder on every cache miss cost more than running it.
    load_current_sql: Arc<str>,
    /// PostgreSQL: the channel changes are published on (see [`crate::notify`]).
    pub(crate) channel: Option<Arc<str>>,
}

impl fmt::Debug for SeaOrmKeyRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the backend kind: the URL may carry a password.
        f.debug_struct("SeaOrmKeyRepository")
            .field(
                "backend",
                &self.db.get_database_backend().as_str().to_ascii_lowercase(),
            )
            .finish_non_exhaustive()
    }
}

impl SeaOrmKeyRepository {
    /// Opens the database at `url` and applies pending migrations.
    ///
    /// `sqlite://PATH` opens an existing file (created, mode 0600, only with
    /// [`StoreOptions::create_if_missing`]; never through a symbolic link), refuses one that
    /// group or others can write or another user owns, and uses WAL journaling,
    /// `synchronous=NORMAL`, the busy timeout of `options` and foreign keys;
    /// `sqlite::memory:` opens a private in-memory database (one connection). `postgres:`,
    /// `postgresql:`, `mysql:` and `mariadb:` (MySQL's protocol) name servers.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL, an unsupported scheme, a database whose Cargo
    /// feature is not compiled in ("built without feature postgres"), a missing SQLite file
    /// or server database, credentials the server refuses, or an unsafe SQLite file;
    /// [`Error::DatabaseUnavailable`] when the database cannot be opened or reached;
    /// [`Error::Database`] when a migration fails. No error shows the URL's password (see
    /// [`redact_url`](crate::redact_url) for printing a URL).
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        // Boxed: the driver and migration futures nest deeply enough that callers' futures
        // would otherwise exceed the compiler's default recursion limit when laid out.
        let db = Box::pin(connect::open(url, options)).await?;
        Box::pin(Self::from_connection(db)).await
    }

    /// Wraps an open connection and applies pending migrations.
    ///
    /// # Errors
    ///
    /// [`Error::DatabaseUnavailable`] or [`Error::Database`] when a migration fails.
    pub async fn from_connection(db: DatabaseConnection) -> Result<Self> {
        migrate(&db).await?;
        let load_current_sql = load_current_query("")
            .build(db.get_database_backend())
            .sql
            .into();
        let channel = crate::notify::channel_of(&db).await?.map(Arc::from);
        Ok(SeaOrmKeyRepository {
            db,
            load_current_sql,
            channel,
        })
    }

    /// The underlying connection pool.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Begins a transaction that writes. On SQLite it is `BEGIN IMMEDIATE`, which takes the
    /// write lock at once (waiting up to the busy timeout) instead of failing later when a
    /// read lock cannot be upgraded.
    pub(crate) async fn begin_write(&self, operation: &'static str) -> Result<DatabaseTransaction> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(|e| from_db(operation, e))
    }

    /// For a lookup by `identity` that found nothing: a row that holds the identity under
    /// another lookup key (its `scope_key` edited or corrupted) is a damaged store, so that
    /// `get` says integrity as `list` does, not "no key". One query, on the not-found path
    /// only, by the index on the names (`idx_api_keys_identity`).
    pub(crate) async fn check_absent(&self, identity: &KeyIdentity) -> Result<()> {
        // A row with the right lookup key is one written since the lookup (another writer
        // won a race), not a damaged one.
        let mut q = api_key::Entity::find()
            .filter(api_key::Column::Service.eq(identity.service()))
            .filter(api_key::Column::ScopeKey.ne(identity.scope_key()));
        q = match identity.user() {
            Some(u) => q.filter(api_key::Column::UserId.eq(u)),
            None => q.filter(api_key::Column::UserId.is_null()),
        };
        q = match identity.project() {
            Some(p) => q.filter(api_key::Column::Project.eq(p)),
            None => q.filter(api_key::Column::Project.is_null()),
        };
        let found = q
            .select_only()
            .column(api_key::Column::Id)
            .into_tuple::<String>()
            .one(&self.db)
            .await
            .map_err(|e| from_db("find key", e))?;
        match found {
            Some(_) => Err(Error::Integrity {
                identity: Some(identity.to_string()),
            }),
            None => Ok(()),
        }
    }

    async fn find_key_row(&self, identity: &KeyIdentity) -> Result<Option<api_key::Model>> {
        api_key::Entity::find()
            .filter(api_key::Column::ScopeKey.eq(identity.scope_key()))
            .one(&self.db)
            .await
            .map_err(|e| from_db("find key", e))
    }
}

/// Applies pending migrations. Several processes may open a new database at once: when one
/// of them loses a race to create a table, it waits and looks again, and succeeds once the
/// winner has recorded the migration.
async fn migrate(db: &DatabaseConnection) -> Result<()> {
    const ATTEMPTS: u32 = 40;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match Migrator::up(db, None).await {
            Ok(()) => return Ok(()),
            Err(e) => from_db("migrate", e),
        };
        let pending = Migrator::get_pending_migrations(db).await.map(|p| p.len());
        match pending {
            Ok(0) => return Ok(()),
            Ok(_) if attempt < ATTEMPTS && !matches!(err, Error::DatabaseUnavailable { .. }) => {
                tracing::debug!(attempt, error = %err, "migration raced another process; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(
                    50 * u64::from(std::cmp::min(attempt, 10)),
                ))
                .await;
            }
            _ => return Err(err),
        }
    }
}

/// `api_keys` LEFT JOIN its current version, for one scope key.
fn load_current_query(
    scope_key: &str,
) -> sea_orm::SelectTwo<api_key::Entity, api_key_version::Entity> {
    let join = api_key::Relation::Versions
        .def()
        .on_condition(|keys, versions| {
            Condition::all().add(
                Expr::col((versions, api_key_version::Column::Version))
                    .equals((keys, api_key::Column::CurrentVersion)),
            )
        });
    api_key::Entity::find()
        .filter(api_key::Column::ScopeKey.eq(scope_key))
        .join(JoinType::LeftJoin, join)
        .select_also(api_key_version::Entity)
}

pub(crate) async fn commit(txn: DatabaseTransaction, operation: &'static str) -> Result<()> {
    txn.commit().await.map_err(|e| from_db(operation, e))
}

#[async_trait]
impl KeyRepository for SeaOrmKeyRepository {
    async fn load_current(
        &self,
        identity: &KeyIdentity,
    ) -> Result<Option<(KeyRecord, VersionRecord)>> {
        // One statement: api_keys JOIN api_key_versions ON key_id = id AND version =
        // current_version, prepared once per connection.
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                self.load_current_sql.as_ref(),
                [identity.scope_key().into()],
            ))
            .await
            .map_err(|e| from_db("load key", e))?;
        let row = match row {
            None => None,
            // The column prefixes of `select_also`.
            Some(row) => Some((
                api_key::Model::from_query_result(&row, "A_")
                    .map_err(|e| from_db("load key", e))?,
                api_key_version::Model::from_query_result_optional(&row, "B_")
                    .map_err(|e| from_db("load key", e))?,
            )),
        };
        let Some((key, version)) = row else {
            self.check_absent(identity).await?;
            return Ok(None);
        };
        let key = key_record(key)?;
        check_identity(&key, identity)?;
        // A key without its current version is a damaged store, not an absent key.
        let version = version_record(version.ok_or_else(Error::integrity)?)?;
        if version.key_id != key.id || version.version != key.current_version {
            return Err(Error::integrity());
        }
        Ok(Some((key, version)))
    }

    async fn find_key(&self, identity: &KeyIdentity) -> Result<Option<KeyRecord>> {
        let Some(row) = self.find_key_row(identity).await? else {
            self.check_absent(identity).await?;
            return Ok(None);
        };
        let key = key_record(row)?;
        check_identity(&key, identity)?;
        Ok(Some(key))
    }

    async fn create_key(
        &self,
        key: &KeyRecord,
        first: &VersionRecord,
        journal: Option<&Journal>,
    ) -> Result<()> {
        if first.version != 1 || key.current_version != 1 || first.key_id != key.id {
            return Err(Error::invalid("version", "a new key starts at version 1"));
        }
        if first.state != VersionState::Current {
            return Err(Error::invalid(
                "version",
                "the first version of a key must be current",
            ));
        }
        let conflict_or = |e: DbErr| {
            if is_unique_violation(&e) {
                Error::Conflict {
                    identity: key.identity.to_string(),
                }
            } else {
                from_db("create key", e)
            }
        };
        let row = key_active_model(key)?;
        let version = version_active_model(first)?;

        let txn = self.begin_write("create key").await?;
        api_key::Entity::insert(row)
            .exec_without_returning(&txn)
            .await
            .map_err(conflict_or)?;
        api_key_version::Entity::insert(version)
            .exec_without_returning(&txn)
            .await
            .map_err(conflict_or)?;
        if let Some(journal) = journal {
            journal_in(&txn, journal).await?;
        }
        self.publish_in(&txn, &[Change::Key(key.id)]).await?;
        commit(txn, "create key").await
    }

    async fn add_version(
        &self,
        key_id: Uuid,
        expected_current: u32,
        version: &VersionRecord,
        previous_retire_at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<()> {
        if version.key_id != key_id {
            return Err(Error::invalid("version", "it belongs to another key"));
        }
        let id = uuid_text(key_id);
        let expected = version_i32(expected_current)?;
        let txn = self.begin_write("add version").await?;

        // Optimistic concurrency: move the key forward only if nobody else did.
        let moved = if expected_current.checked_add(1) == Some(version.version) {
            moved_forward(api_key::Entity::update_many(), write)?
                .col_expr(
                    api_key::Column::CurrentVersion,
                    Expr::value(version_i32(version.version)?),
                )
                .col_expr(api_key::Column::Hint, Expr::value(version.hint.clone()))
                .col_expr(api_key::Column::ExpiresAt, Expr::value(version.expires_at))
                .col_expr(api_key::Column::UpdatedAt, Expr::value(version.created_at))
                .filter(api_key::Column::Id.eq(id.as_str()))
                .filter(api_key::Column::CurrentVersion.eq(expected))
                .exec(&txn)
                .await
                .map_err(|e| from_db("add version", e))?
                .rows_affected
        } else {
            0
        };
        if moved == 0 {
            let row = api_key::Entity::find_by_id(id.as_str())
                .one(&txn)
                .await
                .map_err(|e| from_db("add version", e))?;
            return Err(match row {
                None => Error::NotFound {
                    identity: key_id.to_string(),
                },
                Some(row) => Error::Conflict {
                    identity: key_record(row)?.identity.to_string(),
                },
            });
        }

        api_key_version::Entity::update_many()
            .col_expr(
                api_key_version::Column::State,
                Expr::value(VersionState::Previous.as_str()),
            )
            .col_expr(
                api_key_version::Column::RetireAt,
                Expr::value(previous_retire_at),
            )
            .filter(api_key_version::Column::KeyId.eq(id.as_str()))
            .filter(api_key_version::Column::Version.eq(expected))
            .exec(&txn)
            .await
            .map_err(|e| from_db("add version", e))?;

        let insert = api_key_version::Entity::insert(version_active_model(version)?)
            .exec_without_returning(&txn)
            .await;
        if let Err(e) = insert {
            return Err(if is_unique_violation(&e) {
                Error::Conflict {
                    identity: key_id.to_string(),
                }
            } else {
                from_db("add version", e)
            });
        }
        if let Some(journal) = journal {
            journal_in(&txn, journal).await?;
        }
        self.publish_in(&txn, &[Change::Key(key_id)]).await?;
        commit(txn, "add version").await
    }

    async fn set_state(
        &self,
        key_id: Uuid,
        state: KeyState,
        at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        let update = moved_forward(api_key::Entity::update_many(), write)?
            .col_expr(api_key::Column::State, Expr::value(state.as_str()))
            .col_expr(api_key::Column::UpdatedAt, Expr::value(at))
            .filter(api_key::Column::Id.eq(uuid_text(key_id)));
        if journal.is_none() && self.channel.is_none() {
            let result = update
                .exec(&self.db)
                .await
                .map_err(|e| from_db("set key state", e))?;
            return Ok(result.rows_affected > 0);
        }
        let txn = self.begin_write("set key state").await?;
        let changed = update
            .exec(&txn)
            .await
            .map_err(|e| from_db("set key state", e))?
            .rows_affected
            > 0;
        if !changed {
            return Ok(false);
        }
        if let Some(journal) = journal {
            journal_in(&txn, journal).await?;
        }
        self.publish_in(&txn, &[Change::Key(key_id)]).await?;
        commit(txn, "set key state").await?;
        Ok(true)
    }

    async fn delete_key(&self, key_id: Uuid, journal: Option<&Journal>) -> Result<bool> {
        self.delete_wiped(key_id, journal).await
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Listed>> {
        let mut query = api_key::Entity::find();
        if let Some(service) = &filter.service {
            query = query.filter(api_key::Column::Service.eq(service.as_str()));
        }
        if let Some(user) = &filter.user {
            query = query.filter(api_key::Column::UserId.eq(user.as_str()));
        }
        if let Some(project) = &filter.project {
            query = query.filter(api_key::Column::Project.eq(project.as_str()));
        }
        let rows = query
            .all(&self.db)
            .await
            .map_err(|e| from_db("list keys", e))?;
        let mut keys = Vec::new();
        let mut broken = Vec::new();
        for row in rows {
            let named = broken_row(&row);
            match key_record(row) {
                Ok(k) => keys.push(k),
                Err(_) => broken.push(named),
            }
        }
        // Filter again and sort here: databases disagree about collations (MySQL compares
        // case-insensitively) and about where NULLs sort; names are exact and absent parts
        // come first.
        keys.retain(|k| filter.matches(&k.identity));
        keys.sort_by(|a, b| a.identity.cmp(&b.identity));
        broken.retain(|b| b.matches(filter));
        Ok(keys
            .into_iter()
            .map(Listed::Key)
            .chain(broken.into_iter().map(Listed::Broken))
            .collect())
    }

    /// Writes the uses in transactions of at most 500 updates each, so that a large batch
    /// never holds the write lock (SQLite) or its row locks for long. A
    /// busy or locked database is [`Error::DatabaseUnavailable`] (SQLite first waits its busy
    /// timeout); the transactions committed before it stay written, and writing the whole
    /// batch again is harmless (a time never moves back).
    async fn record_last_used(&self, uses: &[(Uuid, DateTime<Utc>)]) -> Result<()> {
        for chunk in uses.chunks(LAST_USES_PER_TRANSACTION) {
            let txn = self.begin_write("record last use").await?;
            for (key_id, at) in chunk {
                // Never move the time back.
                api_key::Entity::update_many()
                    .col_expr(api_key::Column::LastUsedAt, Expr::value(*at))
                    .filter(api_key::Column::Id.eq(uuid_text(*key_id)))
                    .filter(
                        Condition::any()
                            .add(api_key::Column::LastUsedAt.is_null())
                            .add(api_key::Column::LastUsedAt.lt(*at)),
                    )
                    .exec(&txn)
                    .await
                    .map_err(|e| from_db("record last use", e))?;
            }
            commit(txn, "record last use").await?;
        }
        Ok(())
    }

    async fn write_batch(&self, changes: &[KeyChange], journal: &[Journal]) -> Result<()> {
        self.write_changes(changes, journal).await
    }

    async fn load_current_many(&self, identities: &[KeyIdentity]) -> Result<Vec<LoadedCurrent>> {
        let mut loaded = self.read_current_many(identities).await?;
        for (identity, got) in identities.iter().zip(loaded.iter_mut()) {
            if got.is_none()
                && let Err(e) = self.check_absent(identity).await
            {
                *got = Some(Err(e));
            }
        }
        Ok(loaded)
    }

    async fn list_versions(&self, key_id: Uuid) -> Result<Vec<VersionRecord>> {
        api_key_version::Entity::find()
            .filter(api_key_version::Column::KeyId.eq(uuid_text(key_id)))
            .order_by_asc(api_key_version::Column::Version)
            .all(&self.db)
            .await
            .map_err(|e| from_db("list versions", e))?
            .into_iter()
            .map(version_record)
            .collect()
    }

    async fn retire_due(&self, key_id: Option<Uuid>, now: DateTime<Utc>) -> Result<u64> {
        self.retire_wiped(key_id, now).await
    }

    async fn versions_to_rewrap(
        &self,
        provider: &str,
        master_key_ref: &str,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<(KeyRecord, VersionRecord)>> {
        self.find_versions_to_rewrap(provider, master_key_ref, after, limit)
            .await
    }

    async fn replace_wrapping(
        &self,
        rewrapped: &VersionRecord,
        old_provider: &str,
        old_ref: &str,
        key: Option<&KeyWrite>,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        self.swap_wrapping(rewrapped, old_provider, old_ref, key, journal)
            .await
    }

    async fn keys_by_id(&self, key_ids: &[Uuid]) -> Result<Vec<KeyRecord>> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = key_ids.iter().map(|id| uuid_text(*id)).collect();
        api_key::Entity::find()
            .filter(api_key::Column::Id.is_in(ids))
            .all(&self.db)
            .await
            .map_err(|e| from_db("check keys", e))?
            .into_iter()
            .map(key_record)
            .collect()
    }

    async fn is_empty(&self) -> Result<bool> {
        let any = api_key::Entity::find()
            .select_only()
            .column(api_key::Column::Id)
            .limit(1)
            .into_tuple::<String>()
            .one(&self.db)
            .await
            .map_err(|e| from_db("count keys", e))?;
        Ok(any.is_none())
    }

    async fn store_key(&self, name: &str) -> Result<Option<StoreKeyRecord>> {
        self.read_store_key(name).await
    }

    async fn insert_store_key(&self, key: &StoreKeyRecord) -> Result<bool> {
        self.write_store_key(key).await
    }

    async fn replace_store_key_wrapping(
        &self,
        name: &str,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool> {
        self.rewrap_store_key(name, rewrapped, old_provider, old_ref)
            .await
    }
}

/// An update of `api_keys` that moves a record forward as `write` says: only while its
/// revision is the expected one, to the next, with the new seal (or none).
pub(crate) fn moved_forward(
    update: sea_orm::UpdateMany<api_key::Entity>,
    write: &KeyWrite,
) -> Result<sea_orm::UpdateMany<api_key::Entity>> {
    let seal = write.seal.as_ref();
    Ok(update
        .col_expr(
            api_key::Column::Revision,
            Expr::value(revision_i64(write.expected_revision + 1)?),
        )
        .col_expr(
            api_key::Column::CurrentDigest,
            Expr::value(seal.map(|s| s.current.clone())),
        )
        .col_expr(
            api_key::Column::PreviousDigest,
            Expr::value(seal.and_then(|s| s.previous.clone())),
        )
        .col_expr(
            api_key::Column::StateMac,
            Expr::value(seal.map(|s| s.mac.clone())),
        )
        .filter(api_key::Column::Revision.eq(revision_i64(write.expected_revision)?)))
}
