//! [`Stack`]: the whole stack the settings name, built in one place.
//!
//! Provider, layers, repository, branch keys, audit trail, change feed, manager and
//! accounting are assembled here and nowhere else: the CLI, the benches and a gateway build
//! a [`Stack`] and never put a [`SecureKeyManager`] together themselves, so that every one of
//! them audits, caches and listens the way the settings say.
//!
//! ```no_run
//! # async fn demo() -> llm_accounting::Result<()> {
//! use llm_accounting::{Settings, Stack};
//! let stack = Stack::from_settings(&Settings::from_env()?).await?;
//! let manager = stack.manager();
//! // ... manager.get(..), stack.accounting(), stack.metrics().snapshot() ...
//! stack.shutdown().await?; // queued usage events, last-used times, the cache
//! # let _ = manager;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use llm_accounting_core::branch::{BranchKeyLayer, BranchKeyStore};
use llm_accounting_core::layers::Layer;

use crate::build::DefaultsUsed;
use crate::layers::KmsMetrics;
use crate::settings::KmsProviderKind;
use crate::{KmsProvider, Result, SeaOrmKeyRepository, SecureKeyManager, Settings};

/// Where a rewrap moves keys: another provider, another master key, or both (unset parts are
/// the configured ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewrapTarget {
    /// The provider to move keys under (`keys rewrap --to-provider`).
    pub provider: Option<KmsProviderKind>,
    /// The master key to move keys under (`keys rewrap --to-key`): `kms.key_id` of the target.
    pub key_id: Option<String>,
}

impl RewrapTarget {
    /// A target with this provider and master key (`None`: the configured one).
    pub fn new(provider: Option<KmsProviderKind>, key_id: Option<String>) -> Self {
        RewrapTarget { provider, key_id }
    }

    /// Whether it names anything other than the configured provider and master key.
    fn moves(&self) -> bool {
        self.provider.is_some() || self.key_id.is_some()
    }

    /// The settings of the target: `settings` with the provider and key id replaced.
    fn settings(&self, settings: &Settings) -> Settings {
        let mut target = settings.clone();
        if let Some(p) = self.provider {
            target.kms.provider = p;
        }
        if let Some(k) = &self.key_id {
            target.kms.key_id = Some(k.clone());
        }
        target
    }
}

/// How to build a [`Stack`]: [`Stack::builder`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct StackBuilder {
    settings: Settings,
    accounting: bool,
    rewrap: Option<RewrapTarget>,
    layers: Vec<ExtraLayer>,
}

/// A layer of the caller's, applied to every provider of the stack.
type ExtraLayer = Arc<dyn Fn(Arc<dyn KmsProvider>) -> Arc<dyn KmsProvider> + Send + Sync>;

impl fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("settings", &self.settings)
            .field("accounting", &self.accounting)
            .field("rewrap", &self.rewrap)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl StackBuilder {
    /// Whether to start the accounting (usage recorder, quota checks) beside the manager.
    /// On by default when the crate is built with feature `accounting`; a program that only
    /// stores and reads keys turns it off and starts no background writer.
    pub fn accounting(mut self, on: bool) -> Self {
        self.accounting = on;
        self
    }

    /// Adds a layer of the caller's (see [`crate::layers::Layer`]) around each provider of the
    /// stack: over the standard retry, metrics and timeout layers, under the branch-key layer
    /// (so it sees every KMS call, and the calls the branch keys save it do not reach it).
    /// Layers added later go around earlier ones. For instrumentation, policy, or simulated
    /// latency in benchmarks.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Arc<dyn KmsProvider>> + Send + Sync + 'static,
        L::Layered: 'static,
    {
        self.layers.push(Arc::new(move |inner| {
            Arc::new(layer.layer(inner)) as Arc<dyn KmsProvider>
        }));
        self
    }

    /// The layers of the caller's around `provider`.
    fn wrap(&self, provider: Arc<dyn KmsProvider>) -> Arc<dyn KmsProvider> {
        self.layers.iter().fold(provider, |p, layer| layer(p))
    }

    /// Builds the manager for a rewrap to `target`: it wraps with the target's provider and
    /// master key (behind the target's branch-key layer), and keeps the configured provider
    /// to unwrap what it wrapped. Everything else (audit trail, change feed, cache) is as
    /// configured.
    pub fn rewrap_to(mut self, target: RewrapTarget) -> Self {
        self.rewrap = Some(target);
        self
    }

    /// Opens the repository (with migrations), the provider and its layers, the branch-key
    /// layer, the audit trail and (on PostgreSQL) the change feed, and builds the manager and,
    /// if asked, the accounting.
    ///
    /// # Errors
    ///
    /// A configuration error found without opening anything (a provider that is not built, a
    /// missing master key file that may not be created) before the database is opened; then
    /// the errors of opening each part. Nothing is left running on an error.
    pub async fn build(self) -> Result<Stack> {
        let settings = &self.settings;
        settings.validate()?;
        let metrics = Arc::new(KmsMetrics::new());
        let (source, repo, defaults) =
            crate::provider::provider_and_repository(settings, Arc::clone(&metrics)).await?;
        let source = self.wrap(source);
        let log = audit_log(settings, &repo).await?;
        let configured =
            Arc::new(branch_layer(settings, &repo, log.as_ref()).layer(Arc::clone(&source)));
        let (branches, decrypt_only) = match &self.rewrap {
            Some(target) if target.moves() => {
                let target_settings = target.settings(settings);
                let (inner, _) =
                    crate::provider::provider_for(&target_settings, &repo, Arc::clone(&metrics))
                        .await?;
                let inner = self.wrap(inner);
                // Branch keys the configured provider wrapped are unwrapped by it.
                let layer = branch_layer(&target_settings, &repo, log.as_ref())
                    .with_decrypt_provider(Arc::clone(&source))
                    .layer(inner);
                (Arc::new(layer), Some(configured))
            }
            _ => (configured, None),
        };
        let mut builder =
            SecureKeyManager::builder(Arc::clone(&branches) as _, Arc::clone(&repo) as _)
                .branch_keys(Arc::clone(&branches))
                .options(settings.manager_options());
        if let Some(configured) = &decrypt_only {
            builder = builder.decrypt_provider(Arc::clone(configured) as Arc<dyn KmsProvider>);
        }
        if let Some(log) = log {
            builder = builder
                .audit_with(log, settings.audit_options())
                .audit_actor(settings.audit_actor());
            if let Some(anchor) = &settings.audit.anchor_file {
                builder = builder.audit_anchor(anchor.clone());
            }
        }
        // PostgreSQL: changes made by any process drop cached keys here at once.
        #[cfg(feature = "postgres")]
        if let Some(feed) = llm_accounting_store::PgChangeFeed::of(&repo) {
            builder = builder.change_feed(Arc::new(feed));
        }
        let manager = builder.build();
        // A branch changed by any process drops its cached key here (with a change feed).
        manager.subscribe_changes(branches);
        if let Some(configured) = decrypt_only {
            manager.subscribe_changes(configured);
        }
        #[cfg(feature = "accounting")]
        let accounting = if self.accounting {
            match crate::build::accounting(settings, Some(&repo)).await {
                Ok(a) => Some(a),
                Err(e) => {
                    if let Err(s) = manager.shutdown().await {
                        tracing::warn!(error = %s, "could not shut the manager down");
                    }
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(Stack {
            manager,
            #[cfg(feature = "accounting")]
            accounting,
            metrics,
            defaults,
            repository: repo,
        })
    }

    /// Only the accounting, over the key database, or over `accounting.database_url` (then the
    /// key database is neither opened nor created): no KMS is built or needed (usage, limits
    /// and statistics of a machine without the master key).
    ///
    /// # Errors
    ///
    /// Opening the database; local enforcement: the first synchronisation.
    #[cfg(feature = "accounting")]
    pub async fn build_accounting_only(self) -> Result<(crate::usage::Accounting, DefaultsUsed)> {
        // With a database of its own, the key database is neither opened nor created.
        if self.settings.accounting.database_url.is_some() {
            let accounting = crate::build::accounting(&self.settings, None).await?;
            return Ok((accounting, DefaultsUsed::default()));
        }
        let (repo, defaults) = crate::build::build_repository(&self.settings).await?;
        let accounting = crate::build::accounting(&self.settings, Some(&repo)).await?;
        Ok((accounting, defaults))
    }
}

/// The whole stack of one configuration: the [`SecureKeyManager`], the accounting, the KMS
/// metrics, and one [`Stack::shutdown`] for all of them. Build it with [`Stack::from_settings`]
/// or [`Stack::builder`].
pub struct Stack {
    manager: SecureKeyManager,
    #[cfg(feature = "accounting")]
    accounting: Option<crate::usage::Accounting>,
    metrics: Arc<KmsMetrics>,
    defaults: DefaultsUsed,
    repository: Arc<SeaOrmKeyRepository>,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Stack");
        d.field("manager", &self.manager);
        #[cfg(feature = "accounting")]
        d.field("accounting", &self.accounting);
        d.field("defaults", &self.defaults).finish_non_exhaustive()
    }
}

impl Stack {
    /// Everything the settings name, accounting included (with feature `accounting`).
    ///
    /// # Errors
    ///
    /// As [`StackBuilder::build`].
    pub async fn from_settings(settings: &Settings) -> Result<Stack> {
        Self::builder(settings).build().await
    }

    /// A builder for the stack of `settings`.
    pub fn builder(settings: &Settings) -> StackBuilder {
        StackBuilder {
            settings: settings.clone(),
            accounting: cfg!(feature = "accounting"),
            rewrap: None,
            layers: Vec::new(),
        }
    }

    /// The key manager.
    pub fn manager(&self) -> &SecureKeyManager {
        &self.manager
    }

    /// The accounting, unless the builder was told to leave it out.
    #[cfg(feature = "accounting")]
    pub fn accounting(&self) -> Option<&crate::usage::Accounting> {
        self.accounting.as_ref()
    }

    /// Counters of the KMS calls made through the provider layers (calls, failures,
    /// retries); with a rewrap target, the calls to both providers.
    pub fn metrics(&self) -> &Arc<KmsMetrics> {
        &self.metrics
    }

    /// Which defaults were used (and created) where nothing was configured.
    pub fn defaults_used(&self) -> &DefaultsUsed {
        &self.defaults
    }

    /// The key database.
    pub fn repository(&self) -> &Arc<SeaOrmKeyRepository> {
        &self.repository
    }

    /// Stops everything: writes every queued usage event and stops the accounting's
    /// background work, then flushes pending last-used times and wipes the manager's cache.
    /// Both halves run even if the first fails.
    ///
    /// # Errors
    ///
    /// The first error of the two.
    pub async fn shutdown(&self) -> Result<()> {
        #[cfg(feature = "accounting")]
        let accounting = match &self.accounting {
            Some(a) => a.shutdown().await,
            None => Ok(()),
        };
        #[cfg(not(feature = "accounting"))]
        let accounting = Ok(());
        let manager = self.manager.shutdown().await;
        accounting.and(manager)
    }
}

/// The audit log the settings ask for: none (`audit.enabled = false`), the key database, or
/// the database of `audit.database_url`.
async fn audit_log(
    settings: &Settings,
    repo: &Arc<SeaOrmKeyRepository>,
) -> Result<Option<Arc<dyn llm_accounting_core::AuditLog>>> {
    if !settings.audit.enabled {
        return Ok(None);
    }
    Ok(Some(match &settings.audit.database_url {
        Some(url) => Arc::new(SeaOrmKeyRepository::connect(url, &settings.store_options()).await?),
        None => Arc::clone(repo) as Arc<dyn llm_accounting_core::AuditLog>,
    }))
}

/// The branch-key layer of `settings` (`kms.hierarchy`, `kms.branch_key_ttl_secs`; see
/// [`llm_accounting_core::branch`]), keeping branch keys in `repo`. It goes over the layered
/// provider (outermost in the stacking order of [`crate::layers`]), so that the metrics count
/// the KMS calls made for branch keys.
///
/// It is installed whatever the hierarchy: with `off` it wraps every data key with the
/// provider directly, and only reads the keys wrapped under branch keys while the hierarchy
/// was on, until a rewrap moves them back.
fn branch_layer(
    settings: &Settings,
    repo: &Arc<SeaOrmKeyRepository>,
    log: Option<&Arc<dyn llm_accounting_core::AuditLog>>,
) -> BranchKeyLayer {
    let layer = BranchKeyLayer::new(
        Arc::clone(repo) as Arc<dyn BranchKeyStore>,
        settings.kms.hierarchy.to_core(),
        Duration::from_secs(settings.kms.branch_key_ttl_secs),
    );
    // Each branch's current version is checked against the rotations the trail records.
    match log {
        Some(log) => layer.with_audit_log(Arc::clone(log)),
        None => layer,
    }
}
