//! Which providers the stored versions need.

use llm_accounting_core::branch::BRANCH_PROVIDER_SUFFIX;
use llm_accounting_core::{Result, VersionState};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::SeaOrmKeyRepository;
use crate::entity::{api_key_version, branch_key, store_key};
use crate::error::from_db;

impl SeaOrmKeyRepository {
    /// Whether the store holds anything wrapped by the provider named `provider` (the name
    /// each row records, e.g. `local`) that it still needs: a key version that can still be
    /// read (not retired), directly or under a branch key it wrapped (see
    /// `llm_accounting_core::branch`); the store's state key; a branch key.
    ///
    /// A cheap check, for a caller about to create a new master key: if such rows exist, a
    /// new key would not open them (a store whose keys were all deleted still has its state
    /// key, which seals every record and keys the audit trail).
    ///
    /// # Errors
    ///
    /// [`Error::DatabaseUnavailable`](llm_accounting_core::Error::DatabaseUnavailable) or
    /// [`Error::Database`](llm_accounting_core::Error::Database) when the query fails.
    pub async fn has_versions_wrapped_by(&self, provider: &str) -> Result<bool> {
        let found = api_key_version::Entity::find()
            .select_only()
            .column(api_key_version::Column::Version)
            .filter(api_key_version::Column::Provider.is_in([
                provider.to_owned(),
                format!("{provider}{BRANCH_PROVIDER_SUFFIX}"),
            ]))
            .filter(api_key_version::Column::State.ne(VersionState::Retired.as_str()))
            .limit(1)
            .into_tuple::<i32>()
            .one(self.connection())
            .await
            .map_err(|e| from_db("find versions of a provider", e))?;
        if found.is_some() {
            return Ok(true);
        }
        let state = store_key::Entity::find()
            .select_only()
            .column(store_key::Column::Name)
            .filter(store_key::Column::Provider.eq(provider))
            .limit(1)
            .into_tuple::<String>()
            .one(self.connection())
            .await
            .map_err(|e| from_db("find store keys of a provider", e))?;
        if state.is_some() {
            return Ok(true);
        }
        let branch = branch_key::Entity::find()
            .select_only()
            .column(branch_key::Column::BranchId)
            .filter(branch_key::Column::Provider.eq(provider))
            .limit(1)
            .into_tuple::<String>()
            .one(self.connection())
            .await
            .map_err(|e| from_db("find branch keys of a provider", e))?;
        Ok(branch.is_some())
    }
}
