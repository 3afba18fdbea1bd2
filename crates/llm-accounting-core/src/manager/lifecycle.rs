//! The life of a key: its versions, listing, disable, enable and delete.

use chrono::Utc;

use crate::{
    Error, KeyFilter, KeyIdentity, KeyRecord, KeyState, Result, SecureKeyManager, VersionInfo,
};

impl SecureKeyManager {
    /// Every version of a key with its state, dates, hint and master key; never a value.
    /// Previous versions whose grace period ended are retired first.
    pub async fn versions(&self, identity: &KeyIdentity) -> Result<Vec<VersionInfo>> {
        let result = self.versions_unaudited(identity).await;
        let event = self.event("versions", Some(identity)).outcome(&result);
        self.audited(event, result).await
    }

    async fn versions_unaudited(&self, identity: &KeyIdentity) -> Result<Vec<VersionInfo>> {
        self.check_read(identity)?;
        let key = self.require_key(identity).await?;
        self.inner.repo.retire_due(Some(key.id), Utc::now()).await?;
        Ok(self
            .inner
            .repo
            .list_versions(key.id)
            .await?
            .iter()
            .map(VersionInfo::from)
            .collect())
    }
    /// Keys matching `filter`, with non-secret metadata only.
    pub async fn list(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>> {
        let result = self.inner.repo.list_keys(filter).await.map(|mut keys| {
            if let Some(p) = &self.principal {
                keys.retain(|k| p.may_read(&k.identity));
            }
            keys
        });
        let event = self.event("list", None).outcome(&result);
        let event = match &result {
            Ok(keys) => event.detail(format!("{} keys", keys.len())),
            Err(_) => event,
        };
        self.audited(event, result).await
    }

    /// Refuses reads of the key until [`SecureKeyManager::enable`]; evicts it from the cache.
    pub async fn disable(&self, identity: &KeyIdentity) -> Result<()> {
        self.set_state(identity, KeyState::Disabled).await
    }

    /// Makes a disabled key readable again.
    pub async fn enable(&self, identity: &KeyIdentity) -> Result<()> {
        self.set_state(identity, KeyState::Active).await
    }

    async fn set_state(&self, identity: &KeyIdentity, state: KeyState) -> Result<()> {
        let result = self.set_state_unaudited(identity, state).await;
        let op = if state == KeyState::Active {
            "enable"
        } else {
            "disable"
        };
        let event = self.event(op, Some(identity)).outcome(&result);
        self.audited(event, result).await
    }

    async fn set_state_unaudited(&self, identity: &KeyIdentity, state: KeyState) -> Result<()> {
        self.check_write(identity)?;
        let key = self.require_key(identity).await?;
        let found = self.inner.repo.set_state(key.id, state, Utc::now()).await?;
        self.inner.cache.invalidate(identity);
        if !found {
            return Err(Error::NotFound {
                identity: identity.to_string(),
            });
        }
        tracing::info!(%identity, %state, "changed API key state");
        Ok(())
    }

    /// Deletes the key and every version of it from the store, for good, and evicts it.
    pub async fn delete(&self, identity: &KeyIdentity) -> Result<()> {
        let result = self.delete_unaudited(identity).await;
        let event = self.event("delete", Some(identity)).outcome(&result);
        self.audited(event, result).await
    }

    async fn delete_unaudited(&self, identity: &KeyIdentity) -> Result<()> {
        self.check_write(identity)?;
        let key = self.require_key(identity).await?;
        let found = self.inner.repo.delete_key(key.id).await?;
        self.inner.cache.invalidate(identity);
        self.inner.last_used.forget(key.id);
        if !found {
            return Err(Error::NotFound {
                identity: identity.to_string(),
            });
        }
        tracing::info!(%identity, "deleted API key");
        Ok(())
    }
}
