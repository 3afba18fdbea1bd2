//! The rows a rewrap reads and replaces.

use llm_accounting_core::{
    Change, Error, Journal, KeyRecord, KeyWrite, Result, VersionRecord, VersionState,
};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::SeaOrmKeyRepository;
use crate::audit::journal_in;
use crate::entity::{api_key, api_key_version};
use crate::error::from_db;
use crate::repository::{commit, moved_forward};
use crate::rows::{key_record, uuid_text, version_i32, version_record};

impl SeaOrmKeyRepository {
    /// Readable versions not under `provider`/`master_key_ref`, with their keys, in (key id,
    /// version) order after `after`.
    pub(crate) async fn find_versions_to_rewrap(
        &self,
        provider: &str,
        master_key_ref: &str,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<(KeyRecord, VersionRecord)>> {
        let mut query = api_key_version::Entity::find()
            .find_also_related(api_key::Entity)
            .filter(api_key_version::Column::State.ne(VersionState::Retired.as_str()))
            .filter(
                Condition::any()
                    .add(api_key_version::Column::Provider.ne(provider))
                    .add(api_key_version::Column::MasterKeyRef.ne(master_key_ref)),
            );
        if let Some((key_id, version)) = after {
            let id = uuid_text(key_id);
            query = query.filter(
                Condition::any()
                    .add(api_key_version::Column::KeyId.gt(id.as_str()))
                    .add(
                        Condition::all()
                            .add(api_key_version::Column::KeyId.eq(id.as_str()))
                            .add(api_key_version::Column::Version.gt(version_i32(version)?)),
                    ),
            );
        }
        let rows = query
            .order_by_asc(api_key_version::Column::KeyId)
            .order_by_asc(api_key_version::Column::Version)
            .limit(u64::try_from(limit).unwrap_or(u64::MAX))
            .all(&self.db)
            .await
            .map_err(|e| from_db("find versions to rewrap", e))?;
        rows.into_iter()
            .map(|(v, k)| {
                let k = k.ok_or_else(Error::integrity)?;
                Ok((key_record(k)?, version_record(v)?))
            })
            .collect()
    }

    /// Replaces a version's wrapping by compare-and-set, moving its key record forward in the
    /// same transaction when asked.
    pub(crate) async fn swap_wrapping(
        &self,
        rewrapped: &VersionRecord,
        old_provider: &str,
        old_ref: &str,
        key: Option<&KeyWrite>,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        let txn = self.begin_write("rewrap version").await?;
        if let Some(write) = key {
            let moved = moved_forward(api_key::Entity::update_many(), write)?
                .filter(api_key::Column::Id.eq(uuid_text(rewrapped.key_id)))
                .exec(&txn)
                .await
                .map_err(|e| from_db("rewrap version", e))?;
            if moved.rows_affected == 0 {
                return Ok(false);
            }
        }
        let result = api_key_version::Entity::update_many()
            .col_expr(
                api_key_version::Column::Envelope,
                Expr::value(rewrapped.envelope.clone()),
            )
            .col_expr(
                api_key_version::Column::Provider,
                Expr::value(rewrapped.provider.clone()),
            )
            .col_expr(
                api_key_version::Column::MasterKeyRef,
                Expr::value(rewrapped.master_key_ref.clone()),
            )
            .filter(api_key_version::Column::KeyId.eq(uuid_text(rewrapped.key_id)))
            .filter(api_key_version::Column::Version.eq(version_i32(rewrapped.version)?))
            .filter(api_key_version::Column::Provider.eq(old_provider))
            .filter(api_key_version::Column::MasterKeyRef.eq(old_ref))
            .filter(api_key_version::Column::State.ne(VersionState::Retired.as_str()))
            .exec(&txn)
            .await
            .map_err(|e| from_db("rewrap version", e))?;
        if result.rows_affected == 0 {
            // Dropping the transaction rolls the key's move back too.
            return Ok(false);
        }
        if let Some(journal) = journal {
            journal_in(&txn, journal).await?;
        }
        self.publish_in(&txn, &[Change::Key(rewrapped.key_id)])
            .await?;
        commit(txn, "rewrap version").await?;
        Ok(true)
    }
}
