//! The `branch_keys` table: [`BranchKeyStore`] for the branch-key layer of `kms.hierarchy`.

use async_trait::async_trait;
use llm_accounting_core::branch::{BranchKeyRecord, BranchKeyStore, BranchScope, ScopeKind};
use llm_accounting_core::{Change, Error, Result, WrappedKey};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use uuid::Uuid;

use crate::SeaOrmKeyRepository;
use crate::entity::branch_key;
use crate::error::{from_db, is_unique_violation};
use crate::rows::{uuid_text, version_i32};

/// Converts a row; anything unparseable is a corrupted row.
fn branch_record(row: branch_key::Model) -> Result<BranchKeyRecord> {
    Ok(BranchKeyRecord {
        branch_id: Uuid::parse_str(&row.branch_id).map_err(|_| Error::integrity())?,
        version: u32::try_from(row.version).map_err(|_| Error::integrity())?,
        scope: BranchScope::new(ScopeKind::parse(&row.scope_kind)?, row.scope_value)?,
        wrapped: WrappedKey::new(&row.provider, row.master_key_ref, row.wrapped),
        commitment: row.commitment,
        created_at: row.created_at,
    })
}

#[async_trait]
impl BranchKeyStore for SeaOrmKeyRepository {
    async fn current_branch_key(&self, scope: &BranchScope) -> Result<Option<BranchKeyRecord>> {
        branch_key::Entity::find()
            .filter(branch_key::Column::ScopeKey.eq(scope.lookup_key()))
            .order_by_desc(branch_key::Column::Version)
            .one(&self.db)
            .await
            .map_err(|e| from_db("read branch key", e))?
            .map(branch_record)
            .transpose()
    }

    async fn branch_key(&self, branch_id: Uuid, version: u32) -> Result<Option<BranchKeyRecord>> {
        branch_key::Entity::find_by_id((uuid_text(branch_id), version_i32(version)?))
            .one(&self.db)
            .await
            .map_err(|e| from_db("read branch key", e))?
            .map(branch_record)
            .transpose()
    }

    async fn insert_branch_key(&self, key: &BranchKeyRecord) -> Result<bool> {
        let row = branch_key::ActiveModel {
            branch_id: Set(uuid_text(key.branch_id)),
            version: Set(version_i32(key.version)?),
            scope_kind: Set(key.scope.kind().as_str().to_owned()),
            scope_value: Set(key.scope.value().map(str::to_owned)),
            scope_key: Set(key.scope.lookup_key()),
            provider: Set(key.wrapped.provider.clone()),
            master_key_ref: Set(key.wrapped.master_key_ref.clone()),
            wrapped: Set(key.wrapped.ciphertext.clone()),
            commitment: Set(key.commitment.clone()),
            created_at: Set(key.created_at),
        };
        match branch_key::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => {
                self.publish_branch_change(key.branch_id).await;
                Ok(true)
            }
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(from_db("make branch key", e)),
        }
    }

    async fn branch_keys(
        &self,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<BranchKeyRecord>> {
        let mut query = branch_key::Entity::find();
        if let Some((id, version)) = after {
            let id = uuid_text(id);
            query = query.filter(
                Condition::any()
                    .add(branch_key::Column::BranchId.gt(id.clone()))
                    .add(
                        Condition::all()
                            .add(branch_key::Column::BranchId.eq(id))
                            .add(branch_key::Column::Version.gt(version_i32(version)?)),
                    ),
            );
        }
        query
            .order_by_asc(branch_key::Column::BranchId)
            .order_by_asc(branch_key::Column::Version)
            .limit(u64::try_from(limit).unwrap_or(u64::MAX))
            .all(&self.db)
            .await
            .map_err(|e| from_db("list branch keys", e))?
            .into_iter()
            .map(branch_record)
            .collect()
    }

    async fn replace_branch_key_wrapping(
        &self,
        branch_id: Uuid,
        version: u32,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool> {
        let result = branch_key::Entity::update_many()
            .col_expr(
                branch_key::Column::Wrapped,
                Expr::value(rewrapped.ciphertext.clone()),
            )
            .col_expr(
                branch_key::Column::Provider,
                Expr::value(rewrapped.provider.clone()),
            )
            .col_expr(
                branch_key::Column::MasterKeyRef,
                Expr::value(rewrapped.master_key_ref.clone()),
            )
            .filter(branch_key::Column::BranchId.eq(uuid_text(branch_id)))
            .filter(branch_key::Column::Version.eq(version_i32(version)?))
            .filter(branch_key::Column::Provider.eq(old_provider))
            .filter(branch_key::Column::MasterKeyRef.eq(old_ref))
            .exec(&self.db)
            .await
            .map_err(|e| from_db("rewrap branch key", e))?;
        let replaced = result.rows_affected > 0;
        if replaced {
            self.publish_branch_change(branch_id).await;
        }
        Ok(replaced)
    }
}

impl SeaOrmKeyRepository {
    /// Tells other managers (PostgreSQL's LISTEN/NOTIFY; nothing elsewhere) that a branch
    /// changed, after the change committed. A notification that cannot be sent is logged, not
    /// returned: the change is made, and the others' caches still expire with their TTL.
    async fn publish_branch_change(&self, branch_id: Uuid) {
        let change = Change::Branch(branch_id.as_hyphenated().to_string());
        if let Err(e) = self.publish_in(&self.db, &[change]).await {
            tracing::warn!(error = %e, %branch_id, "could not publish a branch key change");
        }
    }
}
