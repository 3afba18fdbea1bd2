//! [`SecureKeyManager`]: store, get, list, rotate, disable, enable and delete API keys.
//!
//! The manager is split by concern: [`write`] (store, rotate), [`read`] (get, get_previous,
//! get_many), [`lifecycle`] (versions, list, disable, enable, delete), [`list`] (listing with
//! options: keys expiring soon, versions), [`audit`] (the trail of
//! every operation), [`rewrap`] (moving data keys under another master key) and [`refresh`]
//! (checking cached keys against the store). This module holds the type, its builder and what
//! every operation shares.

mod anchor;
mod audit;
mod batch;
mod conflict;
mod hits;
mod lifecycle;
mod list;
mod listen;
mod options;
mod probe;
mod read;
mod refresh;
mod rewrap;
mod rollback;
mod seal;
mod state;
mod write;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::audit::AuditLog;
use crate::branch::BranchKeyProvider;
use crate::cache::KeyCache;
use crate::changes::ChangeFeed;
use crate::last_used::LastUsed;
use crate::{
    EncryptionContext, Envelope, Error, KeyIdentity, KeyRecord, KeyRepository, KmsProvider,
    Principal, Result, VersionRecord,
};

use self::audit::AuditTrail;
pub use self::batch::BatchMode;
pub use self::lifecycle::{BrokenKey, KeyListing};
pub use self::list::ListOptions;
pub use self::options::{AuditOptions, ManagerOptions, StoreOutcome, VersionInfo, WriteOptions};
pub use self::probe::{ProbeReport, ProbedMasterKey};
pub use self::rewrap::{RewrapFailure, RewrapOptions, RewrapProgress, RewrapReport};
pub use self::seal::SealReport;
pub use self::state::UNSEALED_WARNING_TARGET;

/// Stores and serves API keys: envelope encryption through a [`KmsProvider`], persistence
/// through a [`KeyRepository`], and a cache of decrypted keys.
///
/// Cheap to clone (one `Arc`); clones share the cache.
///
/// ```
/// # use std::sync::Arc;
/// # use llm_accounting_core::*;
/// # async fn demo(provider: Arc<dyn KmsProvider>) -> Result<()> {
/// let manager = SecureKeyManager::new(provider, Arc::new(MemoryKeyRepository::new()));
/// let id = KeyIdentity::new("openai")?.with_user(Some("alice"))?;
/// manager.store(&id, &ApiKey::new("sk-test-FAKE".into())).await?;
/// assert_eq!(manager.get(&id).await?.expose_secret(), "sk-test-FAKE");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SecureKeyManager {
    inner: Arc<Inner>,
    /// When bound: whose keys this handle may read and write.
    principal: Option<Arc<Principal>>,
}

/// What every clone of a manager shares.
#[derive(Debug)]
pub(crate) struct Inner {
    provider: Arc<dyn KmsProvider>,
    decrypt_only: Vec<Arc<dyn KmsProvider>>,
    /// The branch-key layer `provider` wraps through, if any: rewraps move its keys too.
    branch_keys: Option<Arc<BranchKeyProvider>>,
    repo: Arc<dyn KeyRepository>,
    cache: KeyCache,
    last_used: LastUsed,
    previous_grace: Duration,
    require_sealed: bool,
    audit: Option<AuditTrail>,
    /// Where the audit trail's head is kept outside the database, if anywhere.
    anchor: Option<anchor::Anchor>,
    /// Who the audit rows of an unbound handle name (`-` unless set).
    actor: String,
    /// The store's state key, once found.
    state: state::StoreState,
    /// Zero: no check of cached keys against the store.
    refresh_interval: Duration,
    refresher_started: AtomicBool,
    /// The change feed's listener (a feed that does nothing without one).
    listener: listen::Listener,
}

/// Builds a [`SecureKeyManager`] with non-default settings.
#[derive(Debug)]
pub struct SecureKeyManagerBuilder {
    provider: Arc<dyn KmsProvider>,
    decrypt_only: Vec<Arc<dyn KmsProvider>>,
    branch_keys: Option<Arc<BranchKeyProvider>>,
    repo: Arc<dyn KeyRepository>,
    options: ManagerOptions,
    audit: Option<(Arc<dyn AuditLog>, AuditOptions)>,
    anchor: Option<std::path::PathBuf>,
    actor: Option<String>,
    feed: Option<Arc<dyn ChangeFeed>>,
}

impl SecureKeyManagerBuilder {
    /// Listens to `feed` for changes committed by any process (PostgreSQL's LISTEN/NOTIFY:
    /// see [`crate::changes`]), dropping changed keys from the cache at once; the cache
    /// refresh then polls the store only while the feed is down.
    pub fn change_feed(mut self, feed: Arc<dyn ChangeFeed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Replaces all settings.
    pub fn options(mut self, options: ManagerOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a provider used only to unwrap keys it wrapped earlier (during a migration).
    pub fn decrypt_provider(mut self, provider: Arc<dyn KmsProvider>) -> Self {
        self.decrypt_only.push(provider);
        self
    }

    /// The branch-key layer (see [`crate::branch`]) the builder's provider wraps through:
    /// normally that provider itself,
    /// `SecureKeyManager::builder(Arc::clone(&layer) as _, repo).branch_keys(layer)`.
    /// [`SecureKeyManager::rewrap`] then starts with the layer's own keys
    /// ([`BranchKeyProvider::rewrap_branch_keys`]: moving them under the current master key,
    /// rotating them when asked, counting them with `check_only`). Without it, a rewrap leaves
    /// branch keys alone and reports none.
    pub fn branch_keys(mut self, layer: Arc<BranchKeyProvider>) -> Self {
        self.branch_keys = Some(layer);
        self
    }

    /// Records every operation in `log` (see [`crate::audit`]) with the default
    /// [`AuditOptions`], fail-closed or not. Rows are written in batches in the background,
    /// cache hits aggregated, unless `fail_closed`: then each operation waits for its row, and
    /// fails (a get returns no key) if the row cannot be written.
    pub fn audit(self, log: Arc<dyn AuditLog>, fail_closed: bool) -> Self {
        let options = AuditOptions {
            fail_closed,
            ..AuditOptions::default()
        };
        self.audit_with(log, options)
    }

    /// Records every operation in `log` (see [`crate::audit`]), as `options` say.
    pub fn audit_with(mut self, log: Arc<dyn AuditLog>, options: AuditOptions) -> Self {
        self.audit = Some((log, options));
        self
    }

    /// Keeps the audit trail's head in the file at `path`, outside the database: written
    /// after every key change, checked the first time the manager looks at the store (see
    /// the `anchor` module of the manager). Needs an audit trail; without one it does nothing.
    pub fn audit_anchor(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.anchor = Some(path.into());
        self
    }

    /// Names `actor` as the principal of the audit rows of operations by an unbound handle
    /// (instead of `-`): the operating-system user of a command-line tool, the service
    /// account of a server. A handle bound to a principal names that principal.
    pub fn audit_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Builds the manager.
    pub fn build(self) -> SecureKeyManager {
        let cache = KeyCache::new(self.options.cache);
        let audit = self
            .audit
            .map(|(log, options)| AuditTrail::new(log, options, cache.clock()));
        let inner = Arc::new(Inner {
            last_used: LastUsed::new(
                self.options.last_used_interval,
                // One pending use per cached key.
                usize::try_from(self.options.cache.max_entries).unwrap_or(usize::MAX),
                Arc::clone(&self.repo),
            ),
            provider: self.provider,
            decrypt_only: self.decrypt_only,
            branch_keys: self.branch_keys,
            repo: self.repo,
            cache,
            refresh_interval: self.options.cache.refresh_interval,
            previous_grace: self.options.previous_grace,
            require_sealed: self.options.require_sealed,
            audit,
            anchor: self.anchor.map(anchor::Anchor::new),
            actor: self.actor.unwrap_or_else(|| "-".to_owned()),
            state: state::StoreState::new(),
            refresher_started: AtomicBool::new(false),
            listener: listen::Listener::new(self.feed),
        });
        if let Some(audit) = &inner.audit {
            // The trail links its rows with the store's audit key, which the manager finds.
            audit.bind(Arc::downgrade(&inner));
        }
        SecureKeyManager {
            principal: None,
            inner,
        }
    }
}

impl SecureKeyManager {
    /// A handle on the same store and cache that acts for `principal`: it reads only the
    /// principal's keys and those shared with it, writes only the principal's own, and
    /// refuses the rest with [`Error::Forbidden`] (rules in [`Principal`]). Rewrapping needs an
    /// unbound manager.
    pub fn bound_to(&self, principal: Principal) -> SecureKeyManager {
        SecureKeyManager {
            inner: Arc::clone(&self.inner),
            principal: Some(Arc::new(principal)),
        }
    }

    /// The principal this handle is bound to, if any.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    fn check_read(&self, identity: &KeyIdentity) -> Result<()> {
        self.principal
            .as_ref()
            .map_or(Ok(()), |p| p.check(identity, false))
    }

    fn check_write(&self, identity: &KeyIdentity) -> Result<()> {
        self.principal
            .as_ref()
            .map_or(Ok(()), |p| p.check(identity, true))
    }

    /// Refuses operations on the whole store (rewrap) to a bound handle.
    pub(crate) fn check_unbound(&self, operation: &str) -> Result<()> {
        match &self.principal {
            None => Ok(()),
            Some(p) => Err(Error::Forbidden {
                identity: format!("every key ({operation})"),
                principal: p.to_string(),
            }),
        }
    }

    /// A manager with default settings.
    pub fn new(provider: Arc<dyn KmsProvider>, repo: Arc<dyn KeyRepository>) -> Self {
        Self::builder(provider, repo).build()
    }

    /// A builder, for settings other than the defaults.
    pub fn builder(
        provider: Arc<dyn KmsProvider>,
        repo: Arc<dyn KeyRepository>,
    ) -> SecureKeyManagerBuilder {
        SecureKeyManagerBuilder {
            provider,
            decrypt_only: Vec::new(),
            branch_keys: None,
            audit: None,
            anchor: None,
            actor: None,
            repo,
            options: ManagerOptions::default(),
            feed: None,
        }
    }

    /// The provider new keys are wrapped with; `None` for a handle bound to a principal (it
    /// must not reach around its boundary).
    pub fn provider(&self) -> Option<&Arc<dyn KmsProvider>> {
        self.principal.is_none().then_some(&self.inner.provider)
    }

    /// The repository; `None` for a handle bound to a principal (it must not reach around its
    /// boundary).
    pub fn repository(&self) -> Option<&Arc<dyn KeyRepository>> {
        self.principal.is_none().then_some(&self.inner.repo)
    }

    /// The provider that unwraps keys recorded as wrapped by `name` (see
    /// [`KmsProvider::handles`]): the main one, or one added to unwrap old keys.
    pub(crate) fn provider_named(&self, name: &str) -> Result<&Arc<dyn KmsProvider>> {
        std::iter::once(&self.inner.provider)
            .chain(self.inner.decrypt_only.iter())
            .find(|p| p.handles(name))
            .ok_or_else(|| Error::ProviderNotConfigured {
                provider: name.to_owned(),
            })
    }

    /// The key record of `identity`, or [`Error::NotFound`].
    async fn require_key(&self, identity: &KeyIdentity) -> Result<KeyRecord> {
        self.inner
            .repo
            .find_key(identity)
            .await?
            .ok_or_else(|| Error::NotFound {
                identity: identity.to_string(),
            })
    }

    /// Writes pending audit rows and `last_used_at` times now.
    pub async fn flush(&self) -> Result<()> {
        let audit = match &self.inner.audit {
            Some(a) => a.flush().await,
            None => Ok(()),
        };
        self.inner.last_used.flush().await.and(audit)
    }

    /// Empties the cache, wiping every decrypted key that no caller still holds.
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Number of keys in the cache.
    pub fn cached_keys(&self) -> u64 {
        self.inner.cache.len()
    }

    /// Stops the change listener (the cache refresh then polls), flushes pending audit rows
    /// and last-used times and clears the cache. Call before exiting.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.listener.stop();
        let flushed = self.flush().await;
        self.clear_cache();
        flushed
    }
}

/// The envelope of a stored version and the context it is bound to, once the row and the
/// envelope are checked to agree: the version belongs to `key`, and the envelope names the
/// provider and master key the row records. Any disagreement is the (identity-less)
/// integrity error. Every path that opens or rewraps a stored version starts here.
pub(crate) fn checked_envelope(
    key: &KeyRecord,
    version: &VersionRecord,
) -> Result<(Envelope, EncryptionContext)> {
    let env = Envelope::from_bytes(&version.envelope)?;
    if version.key_id != key.id
        || env.wrapped.provider != version.provider
        || env.wrapped.master_key_ref != version.master_key_ref
    {
        return Err(Error::integrity());
    }
    let context = EncryptionContext::new(key.id, key.identity.clone(), version.version);
    Ok((env, context))
}
