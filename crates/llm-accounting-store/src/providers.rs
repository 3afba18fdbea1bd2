//! Which providers the stored versions need.

use llm_accounting_core::branch::BRANCH_PROVIDER_SUFFIX;
use llm_accounting_core::{Result, VersionState};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::SeaOrmKeyRepository;
use crate::entity::api_key_version;
use crate::error::from_db;

impl SeaOrmKeyRepository {
    /// Whether any key version that can still be read (not retired) was wrapped by the
    /// provider named `provider` (the name each version records, e.g. `local`), directly or
    /// under a branch key it wrapped (see `llm_accounting_core::branch`).
    ///
    /// A cheap check, for a caller about to create a new master key: if versions of that
    /// provider exist, a new key would not open them.
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
        Ok(found.is_some())
    }
}
