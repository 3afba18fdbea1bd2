//! Batched reads and writes of keys: [`KeyRepository::load_current_many`] in chunked queries,
//! [`KeyRepository::write_batch`] in one transaction of chunked statements.
//!
//! [`KeyRepository::load_current_many`]: llm_accounting_core::KeyRepository::load_current_many
//! [`KeyRepository::write_batch`]: llm_accounting_core::KeyRepository::write_batch

use std::collections::{HashMap, HashSet};

use llm_accounting_core::{
    Error, Journal, KeyChange, KeyIdentity, LoadedCurrent, Result, VersionState,
};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, Iterable, JoinType, QueryFilter, QuerySelect, RelationTrait,
};

use crate::SeaOrmKeyRepository;
use crate::audit::journal_many_in;
use crate::entity::{api_key, api_key_version};
use crate::error::{from_db, is_unique_violation};
use crate::limits::rows_per_insert;
use crate::repository::{commit, moved_forward};
use crate::rows::{
    check_identity, key_active_model, key_record, uuid_text, version_active_model, version_i32,
    version_record,
};

/// One identity's row of a batched read: the key row and its current version row, if any.
type Row = (api_key::Model, Option<api_key_version::Model>);

impl SeaOrmKeyRepository {
    /// The current versions of `identities`: one `api_keys` LEFT JOIN `api_key_versions`
    /// query per chunk of identities (under the parameter limit).
    pub(crate) async fn read_current_many(
        &self,
        identities: &[KeyIdentity],
    ) -> Result<Vec<LoadedCurrent>> {
        let chunk = rows_per_insert(self.db.get_database_backend(), 1);
        let mut rows: HashMap<String, Row> = HashMap::with_capacity(identities.len());
        for ids in identities.chunks(chunk) {
            let scope_keys: Vec<String> = ids.iter().map(KeyIdentity::scope_key).collect();
            let join = api_key::Relation::Versions
                .def()
                .on_condition(|keys, versions| {
                    Condition::all().add(
                        Expr::col((versions, api_key_version::Column::Version))
                            .equals((keys, api_key::Column::CurrentVersion)),
                    )
                });
            let found = api_key::Entity::find()
                .filter(api_key::Column::ScopeKey.is_in(scope_keys))
                .join(JoinType::LeftJoin, join)
                .select_also(api_key_version::Entity)
                .all(&self.db)
                .await
                .map_err(|e| from_db("load keys", e))?;
            rows.extend(found.into_iter().map(|r| (r.0.scope_key.clone(), r)));
        }
        Ok(identities
            .iter()
            .map(|identity| {
                let (key, version) = rows.remove(&identity.scope_key())?;
                Some(current_of(identity, key, version))
            })
            .collect())
    }

    /// Writes a batch in one transaction (see `KeyRepository::write_batch`).
    pub(crate) async fn write_changes(
        &self,
        changes: &[KeyChange],
        journal: &[Journal],
    ) -> Result<()> {
        check_batch(changes, journal)?;
        if changes.is_empty() {
            return Ok(());
        }
        let backend = self.db.get_database_backend();
        let mut new_keys = Vec::new();
        let mut versions = Vec::with_capacity(changes.len());
        let txn = self.begin_write("write a batch of keys").await?;
        for change in changes {
            match change {
                KeyChange::Create { key, first } => {
                    new_keys.push(key_active_model(key)?);
                    versions.push(version_active_model(first)?);
                }
                KeyChange::AddVersion {
                    identity,
                    expected_current,
                    version,
                    previous_retire_at,
                    write,
                } => {
                    let id = uuid_text(version.key_id);
                    let expected = version_i32(*expected_current)?;
                    let moved = moved_forward(api_key::Entity::update_many(), write)?
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
                        .map_err(|e| from_db("write a batch of keys", e))?
                        .rows_affected;
                    if moved == 0 {
                        let exists = api_key::Entity::find_by_id(id.as_str())
                            .one(&txn)
                            .await
                            .map_err(|e| from_db("write a batch of keys", e))?
                            .is_some();
                        let identity = identity.to_string();
                        return Err(if exists {
                            Error::Conflict { identity }
                        } else {
                            Error::NotFound { identity }
                        });
                    }
                    api_key_version::Entity::update_many()
                        .col_expr(
                            api_key_version::Column::State,
                            Expr::value(VersionState::Previous.as_str()),
                        )
                        .col_expr(
                            api_key_version::Column::RetireAt,
                            Expr::value(*previous_retire_at),
                        )
                        .filter(api_key_version::Column::KeyId.eq(id.as_str()))
                        .filter(api_key_version::Column::Version.eq(expected))
                        .exec(&txn)
                        .await
                        .map_err(|e| from_db("write a batch of keys", e))?;
                    versions.push(version_active_model(version)?);
                }
                _ => {
                    return Err(Error::invalid(
                        "batch",
                        "a kind of change this store does not know",
                    ));
                }
            }
        }
        let key_rows = rows_per_insert(backend, api_key::Column::iter().count());
        let mut new_keys = new_keys.into_iter().peekable();
        while new_keys.peek().is_some() {
            let chunk: Vec<_> = new_keys.by_ref().take(key_rows).collect();
            if let Err(e) = api_key::Entity::insert_many(chunk)
                .exec_without_returning(&txn)
                .await
            {
                drop(txn);
                return Err(self.conflict_or(changes, e).await);
            }
        }
        let version_rows = rows_per_insert(backend, api_key_version::Column::iter().count());
        let mut versions = versions.into_iter().peekable();
        while versions.peek().is_some() {
            let chunk: Vec<_> = versions.by_ref().take(version_rows).collect();
            if let Err(e) = api_key_version::Entity::insert_many(chunk)
                .exec_without_returning(&txn)
                .await
            {
                drop(txn);
                return Err(self.conflict_or(changes, e).await);
            }
        }
        journal_many_in(&txn, journal).await?;
        commit(txn, "write a batch of keys").await
    }

    /// The error of a failed INSERT of a batch: for a duplicate, [`Error::Conflict`] naming
    /// an identity of the batch that exists now (looked up after the rollback), else the
    /// database error.
    async fn conflict_or(&self, changes: &[KeyChange], e: DbErr) -> Error {
        if !is_unique_violation(&e) {
            return from_db("write a batch of keys", e);
        }
        let creates: Vec<KeyIdentity> = changes
            .iter()
            .filter(|c| matches!(c, KeyChange::Create { .. }))
            .map(|c| c.identity().clone())
            .collect();
        let found = self.read_current_many(&creates).await.unwrap_or_default();
        let identity = creates
            .iter()
            .zip(found)
            .find(|(_, f)| f.is_some())
            .map_or_else(
                || "a key of the batch (written concurrently)".to_owned(),
                |(i, _)| i.to_string(),
            );
        Error::Conflict { identity }
    }
}

/// One identity's record and current version, as `load_current` checks them.
fn current_of(
    identity: &KeyIdentity,
    key: api_key::Model,
    version: Option<api_key_version::Model>,
) -> Result<(
    llm_accounting_core::KeyRecord,
    llm_accounting_core::VersionRecord,
)> {
    let key = key_record(key)?;
    check_identity(&key, identity)?;
    // A key without its current version is a damaged store, not an absent key.
    let version = version_record(version.ok_or_else(Error::integrity)?)?;
    if version.key_id != key.id || version.version != key.current_version {
        return Err(Error::integrity());
    }
    Ok((key, version))
}

/// Refuses a malformed batch before the transaction begins.
fn check_batch(changes: &[KeyChange], journal: &[Journal]) -> Result<()> {
    if !journal.is_empty() && journal.len() != changes.len() {
        return Err(Error::invalid(
            "batch",
            "the journal must hold one audit row per change",
        ));
    }
    let mut ids = HashSet::with_capacity(changes.len());
    let mut identities = HashSet::with_capacity(changes.len());
    for change in changes {
        if !ids.insert(change.key_id()) || !identities.insert(change.identity()) {
            return Err(Error::invalid(
                "batch",
                format!("{} appears twice", change.identity()),
            ));
        }
        if let KeyChange::Create { key, first } = change {
            if first.version != 1 || key.current_version != 1 || first.key_id != key.id {
                return Err(Error::invalid("version", "a new key starts at version 1"));
            }
            if first.state != VersionState::Current {
                return Err(Error::invalid(
                    "version",
                    "the first version of a key must be current",
                ));
            }
        }
        if let KeyChange::AddVersion {
            expected_current,
            version,
            ..
        } = change
            && expected_current.checked_add(1) != Some(version.version)
        {
            return Err(Error::invalid(
                "version",
                "a new version follows the current one",
            ));
        }
    }
    Ok(())
}
