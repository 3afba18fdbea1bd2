//! The `store_keys` table: the store's KMS-wrapped state key.

use llm_accounting_core::{Result, StoreKeyRecord, WrappedKey};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use crate::SeaOrmKeyRepository;
use crate::entity::store_key;
use crate::error::{from_db, is_unique_violation};
use crate::rows::{store_key_record, uuid_text};

impl SeaOrmKeyRepository {
    /// The store key `name`, if it was made.
    pub(crate) async fn read_store_key(&self, name: &str) -> Result<Option<StoreKeyRecord>> {
        store_key::Entity::find_by_id(name)
            .one(&self.db)
            .await
            .map_err(|e| from_db("read store key", e))?
            .map(store_key_record)
            .transpose()
    }

    /// Inserts a store key unless one of that name exists; returns whether it was inserted.
    pub(crate) async fn write_store_key(&self, key: &StoreKeyRecord) -> Result<bool> {
        let row = store_key::ActiveModel {
            name: Set(key.name.clone()),
            store_id: Set(uuid_text(key.store_id)),
            provider: Set(key.wrapped.provider.clone()),
            master_key_ref: Set(key.wrapped.master_key_ref.clone()),
            wrapped: Set(key.wrapped.ciphertext.clone()),
            created_at: Set(key.created_at),
        };
        match store_key::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(from_db("make store key", e)),
        }
    }

    /// Replaces a store key's wrapping by compare-and-set; returns whether it did.
    pub(crate) async fn rewrap_store_key(
        &self,
        name: &str,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool> {
        let result = store_key::Entity::update_many()
            .col_expr(
                store_key::Column::Wrapped,
                Expr::value(rewrapped.ciphertext.clone()),
            )
            .col_expr(
                store_key::Column::Provider,
                Expr::value(rewrapped.provider.clone()),
            )
            .col_expr(
                store_key::Column::MasterKeyRef,
                Expr::value(rewrapped.master_key_ref.clone()),
            )
            .filter(store_key::Column::Name.eq(name))
            .filter(store_key::Column::Provider.eq(old_provider))
            .filter(store_key::Column::MasterKeyRef.eq(old_ref))
            .exec(&self.db)
            .await
            .map_err(|e| from_db("rewrap store key", e))?;
        Ok(result.rows_affected > 0)
    }
}
