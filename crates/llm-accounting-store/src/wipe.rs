//! Deleting keys and retiring versions without leaving their ciphertext behind: envelopes
//! are overwritten before their rows go, SQLite zeroes what it frees (`secure_delete`), and
//! its write-ahead log is truncated afterwards. PostgreSQL and MySQL keep old row versions
//! until VACUUM or the purge thread reclaims them (see SECURITY.md).

use chrono::{DateTime, Utc};
use llm_accounting_core::{Change, Journal, Result, VersionState};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::SeaOrmKeyRepository;
use crate::audit::journal_in;
use crate::entity::{api_key, api_key_version};
use crate::error::from_db;
use crate::repository::commit;
use crate::rows::uuid_text;

impl SeaOrmKeyRepository {
    /// Deletes a key and its versions, each envelope overwritten with zeros first.
    pub(crate) async fn delete_wiped(
        &self,
        key_id: Uuid,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        let id = uuid_text(key_id);
        let txn = self.begin_write("delete key").await?;
        // Every envelope is overwritten with zeros before its row is deleted, so that the
        // deleted ciphertext is not left in a free page or a row version for a later reader
        // of the database file (SQLite's secure_delete then zeroes what is freed).
        let versions = api_key_version::Entity::find()
            .filter(api_key_version::Column::KeyId.eq(id.as_str()))
            .all(&txn)
            .await
            .map_err(|e| from_db("delete key", e))?;
        for v in versions {
            let zeros = vec![0u8; v.envelope.len()];
            api_key_version::Entity::update_many()
                .col_expr(api_key_version::Column::Envelope, Expr::value(zeros))
                .filter(api_key_version::Column::KeyId.eq(id.as_str()))
                .filter(api_key_version::Column::Version.eq(v.version))
                .exec(&txn)
                .await
                .map_err(|e| from_db("delete key", e))?;
        }
        // Versions first (the foreign key cascades too, but not every connection has foreign
        // keys enforced).
        api_key_version::Entity::delete_many()
            .filter(api_key_version::Column::KeyId.eq(id.as_str()))
            .exec(&txn)
            .await
            .map_err(|e| from_db("delete key", e))?;
        let deleted = api_key::Entity::delete_many()
            .filter(api_key::Column::Id.eq(id.as_str()))
            .exec(&txn)
            .await
            .map_err(|e| from_db("delete key", e))?
            .rows_affected;
        if deleted == 0 {
            return Ok(false);
        }
        if let Some(journal) = journal {
            journal_in(&txn, journal).await?;
        }
        self.publish_in(&txn, &[Change::Key(key_id)]).await?;
        commit(txn, "delete key").await?;
        if deleted > 0 {
            self.flush_wal().await;
        }
        Ok(deleted > 0)
    }

    /// Retires the previous versions whose grace ended, their envelopes emptied.
    pub(crate) async fn retire_wiped(
        &self,
        key_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut update = api_key_version::Entity::update_many()
            .col_expr(
                api_key_version::Column::State,
                Expr::value(VersionState::Retired.as_str()),
            )
            .col_expr(
                api_key_version::Column::Envelope,
                Expr::value(Vec::<u8>::new()),
            )
            .filter(api_key_version::Column::State.eq(VersionState::Previous.as_str()))
            .filter(api_key_version::Column::RetireAt.lte(now));
        if let Some(id) = key_id {
            update = update.filter(api_key_version::Column::KeyId.eq(uuid_text(id)));
        }
        let retired = update
            .exec(&self.db)
            .await
            .map_err(|e| from_db("retire versions", e))?
            .rows_affected;
        if retired > 0 {
            self.flush_wal().await;
        }
        Ok(retired)
    }

    /// On SQLite, after a delete or a retirement: moves the write-ahead log into the database
    /// file and truncates it, so that the old page images holding the wiped envelopes leave
    /// the `-wal` file too (`secure_delete` has already zeroed them in the new pages). Best
    /// effort: with readers in the way the log is truncated at a later checkpoint.
    async fn flush_wal(&self) {
        if self.db.get_database_backend() != sea_orm::DbBackend::Sqlite {
            return;
        }
        if let Err(e) = self
            .db
            .execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
            .await
        {
            tracing::debug!(error = %e, "could not truncate the SQLite write-ahead log");
        }
    }
}
