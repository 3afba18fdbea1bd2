//! `LlmAccounting`: the two-call entry point (store and get a key of a default user and project).

use crate::{ApiKey, KeyIdentity, Result, SecureKeyManager, Settings, StoreOutcome};

/// Stores and reads API keys for one default user and project.
///
/// ```no_run
/// # async fn demo() -> llm_accounting::Result<()> {
/// use llm_accounting::{ApiKey, LlmAccounting};
/// let accounting = LlmAccounting::from_env().await?; // SQLite + local master key by default
/// accounting.store_api_key("openai", ApiKey::new("sk-test-FAKE".into())).await?;
/// let key = accounting.get_api_key("openai").await?;
/// assert_eq!(key.expose_secret(), "sk-test-FAKE");
/// accounting.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LlmAccounting {
    manager: SecureKeyManager,
    user: Option<String>,
    project: Option<String>,
}

impl LlmAccounting {
    /// Wraps a manager; no default user or project.
    pub fn new(manager: SecureKeyManager) -> Self {
        LlmAccounting {
            manager,
            user: None,
            project: None,
        }
    }

    /// Built from the environment (`LLM_ACCOUNTING_*`), with embedded defaults for the rest.
    pub async fn from_env() -> Result<Self> {
        Self::from_settings(&Settings::from_env()?).await
    }

    /// Built from settings, with their default user and project.
    pub async fn from_settings(settings: &Settings) -> Result<Self> {
        let stack = crate::Stack::builder(settings)
            .accounting(false)
            .build()
            .await?;
        let manager = stack.manager().clone();
        Ok(LlmAccounting {
            manager,
            user: settings.default_user.clone(),
            project: settings.default_project.clone(),
        })
    }

    /// Sets the default user.
    pub fn with_user(mut self, user: Option<impl Into<String>>) -> Self {
        self.user = user.map(Into::into);
        self
    }

    /// Sets the default project.
    pub fn with_project(mut self, project: Option<impl Into<String>>) -> Self {
        self.project = project.map(Into::into);
        self
    }

    fn identity(&self, service: &str) -> Result<KeyIdentity> {
        KeyIdentity::from_parts(service, self.user.as_deref(), self.project.as_deref())
    }

    /// Stores (or replaces, keeping the old value as the previous version) the key of
    /// `service` for the default user and project.
    pub async fn store_api_key(&self, service: &str, key: ApiKey) -> Result<StoreOutcome> {
        self.manager.store(&self.identity(service)?, &key).await
    }

    /// The key of `service` for the default user and project. A missing key is
    /// [`crate::Error::NotFound`]; KMS or database trouble is its own error, never "no key".
    pub async fn get_api_key(&self, service: &str) -> Result<ApiKey> {
        self.manager.get(&self.identity(service)?).await
    }

    /// The underlying manager, for everything else.
    pub fn manager(&self) -> &SecureKeyManager {
        &self.manager
    }

    /// Flushes pending last-used times and wipes the cache.
    pub async fn shutdown(&self) -> Result<()> {
        self.manager.shutdown().await
    }
}
