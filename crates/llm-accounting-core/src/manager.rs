//! `SecureKeyManager`: store, get, list, rotate, disable, enable and delete API keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditFilter, AuditLog, AuditRecord};
use crate::cache::{KeyCache, Loaded};
use crate::last_used::LastUsed;
use crate::refresh;
use crate::{
    ApiKey, CacheOptions, EncryptionContext, Envelope, Error, KeyFilter, KeyIdentity, KeyRecord,
    KeyRepository, KeyState, KmsProvider, Principal, Result, VersionRecord, VersionState, envelope,
};

/// How many times a write that lost an optimistic-concurrency race is tried in all.
const MAX_WRITE_ATTEMPTS: u32 = 8;

/// A random pause before trying a lost write again: up to 2^attempt ms (at most 128 ms), so
/// that writers racing for one key spread out instead of colliding again.
fn conflict_backoff(attempt: u32) -> Duration {
    let mut b = [0u8; 2];
    let r = crate::random_bytes(&mut b).map_or(0, |()| u16::from_le_bytes(b));
    let cap_ms = 1u64 << attempt.min(7);
    Duration::from_micros(u64::from(r) * cap_ms * 1000 / u64::from(u16::MAX))
}

/// Settings of a [`SecureKeyManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerOptions {
    /// Cache of decrypted keys.
    pub cache: CacheOptions,
    /// `last_used_at` is written at most once per key per this interval (default 60 s).
    pub last_used_interval: Duration,
    /// After a rotation the previous value stays readable (`get_previous`) this long, then is
    /// retired and its ciphertext wiped (default 24 h).
    pub previous_grace: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            cache: CacheOptions::default(),
            last_used_interval: Duration::from_secs(60),
            previous_grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// Options of one store or rotate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// When the new value expires: from then on `get` refuses it with [`Error::Expired`].
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

/// One version of a key, without its ciphertext (for listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Current, previous or retired.
    pub state: VersionState,
    /// Provider that wrapped the data key.
    pub provider: String,
    /// Master key the data key is wrapped under.
    pub master_key_ref: String,
    /// Non-secret hint of the value.
    pub hint: Option<String>,
    /// When this version was stored.
    pub created_at: chrono::DateTime<Utc>,
    /// When the value expires, if it does.
    pub expires_at: Option<chrono::DateTime<Utc>>,
    /// For a previous version: when its grace period ends.
    pub retire_at: Option<chrono::DateTime<Utc>>,
}

impl From<&VersionRecord> for VersionInfo {
    fn from(v: &VersionRecord) -> Self {
        VersionInfo {
            version: v.version,
            state: v.state,
            provider: v.provider.clone(),
            master_key_ref: v.master_key_ref.clone(),
            hint: v.hint.clone(),
            created_at: v.created_at,
            expires_at: v.expires_at,
            retire_at: v.retire_at,
        }
    }
}

/// What a store or rotate produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The key's record id.
    pub key_id: Uuid,
    /// The version just written (1 for a new key).
    pub version: u32,
    /// Whether the identity was new.
    pub created: bool,
}

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
    pub(crate) inner: Arc<Inner>,
    /// When bound: whose keys this handle may read and write.
    principal: Option<Arc<Principal>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) provider: Arc<dyn KmsProvider>,
    pub(crate) decrypt_only: Vec<Arc<dyn KmsProvider>>,
    pub(crate) repo: Arc<dyn KeyRepository>,
    pub(crate) cache: KeyCache,
    last_used: Arc<LastUsed>,
    previous_grace: Duration,
    audit: Option<Arc<AuditTrail>>,
    /// Zero: no check of cached keys against the store.
    refresh_interval: Duration,
    refresher_started: AtomicBool,
}

/// Builds a [`SecureKeyManager`] with non-default settings.
#[derive(Debug)]
pub struct SecureKeyManagerBuilder {
    provider: Arc<dyn KmsProvider>,
    decrypt_only: Vec<Arc<dyn KmsProvider>>,
    repo: Arc<dyn KeyRepository>,
    options: ManagerOptions,
    audit: Option<Arc<AuditTrail>>,
}

impl SecureKeyManagerBuilder {
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

    /// Records every operation in `log` (see [`crate::audit`]). Rows are written in batches
    /// in the background, unless `fail_closed`: then each operation waits for its row, and
    /// fails (a get returns no key) if the row cannot be written.
    pub fn audit(mut self, log: Arc<dyn AuditLog>, fail_closed: bool) -> Self {
        self.audit = Some(Arc::new(AuditTrail::new(log, fail_closed)));
        self
    }

    /// Builds the manager.
    pub fn build(self) -> SecureKeyManager {
        SecureKeyManager {
            principal: None,
            inner: Arc::new(Inner {
                provider: self.provider,
                decrypt_only: self.decrypt_only,
                repo: self.repo,
                cache: KeyCache::new(self.options.cache),
                last_used: Arc::new(LastUsed::new(self.options.last_used_interval)),
                refresh_interval: self.options.cache.refresh_interval,
                previous_grace: self.options.previous_grace,
                audit: self.audit,
                refresher_started: AtomicBool::new(false),
            }),
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
            audit: None,
            repo,
            options: ManagerOptions::default(),
        }
    }

    /// The provider new keys are wrapped with.
    pub fn provider(&self) -> &Arc<dyn KmsProvider> {
        &self.inner.provider
    }

    /// The repository.
    pub fn repository(&self) -> &Arc<dyn KeyRepository> {
        &self.inner.repo
    }

    /// Stores `key` under `identity`: a new key, or a new current version of an existing one
    /// (the old value stays as the previous version). On any failure nothing changes.
    pub async fn store(&self, identity: &KeyIdentity, key: &ApiKey) -> Result<StoreOutcome> {
        self.write_version(identity, key, false, &WriteOptions::default())
            .await
    }

    /// [`SecureKeyManager::store`] with options (an expiry time).
    pub async fn store_with(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        options: &WriteOptions,
    ) -> Result<StoreOutcome> {
        self.write_version(identity, key, false, options).await
    }

    /// Replaces the value of an existing key with a new version. [`Error::NotFound`] if there
    /// is no such key.
    pub async fn rotate(&self, identity: &KeyIdentity, key: &ApiKey) -> Result<StoreOutcome> {
        self.write_version(identity, key, true, &WriteOptions::default())
            .await
    }

    /// [`SecureKeyManager::rotate`] with options (an expiry time).
    pub async fn rotate_with(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        options: &WriteOptions,
    ) -> Result<StoreOutcome> {
        self.write_version(identity, key, true, options).await
    }

    async fn write_version(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        must_exist: bool,
        options: &WriteOptions,
    ) -> Result<StoreOutcome> {
        let result = self
            .write_version_unaudited(identity, key, must_exist, options)
            .await;
        let op = if must_exist { "rotate" } else { "store" };
        let event = self.event(op, Some(identity)).outcome(&result);
        let event = match &result {
            Ok(o) => event.detail(format!("version {}", o.version)).key_ref(
                self.inner.provider.name(),
                &self.inner.provider.master_key_ref(),
            ),
            Err(_) => event,
        };
        self.audited(event, result).await
    }

    async fn write_version_unaudited(
        &self,
        identity: &KeyIdentity,
        key: &ApiKey,
        must_exist: bool,
        options: &WriteOptions,
    ) -> Result<StoreOutcome> {
        self.check_write(identity)?;
        key.validate()?;
        if options.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::invalid("expiry", "it is not in the future"));
        }
        let hint = key.hint();
        let repo = &self.inner.repo;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let existing = repo.find_key(identity).await?;
            if must_exist && existing.is_none() {
                return Err(Error::NotFound {
                    identity: identity.to_string(),
                });
            }
            let now = Utc::now();
            let (key_id, version) = match &existing {
                Some(k) => (k.id, k.current_version + 1),
                None => (Uuid::new_v4(), 1),
            };
            let context = EncryptionContext::new(key_id, identity.clone(), version);
            let sealed = envelope::seal(self.inner.provider.as_ref(), &context, key).await?;
            let row = VersionRecord {
                key_id,
                version,
                state: VersionState::Current,
                envelope: sealed.to_bytes()?,
                provider: sealed.wrapped.provider.clone(),
                master_key_ref: sealed.wrapped.master_key_ref.clone(),
                hint: hint.clone(),
                created_at: now,
                expires_at: options.expires_at,
                retire_at: None,
            };
            let written = match &existing {
                Some(k) => {
                    let retire_at = now
                        + chrono::Duration::from_std(self.inner.previous_grace)
                            .unwrap_or(chrono::Duration::MAX);
                    repo.add_version(k.id, k.current_version, &row, retire_at)
                        .await
                }
                None => {
                    let record = KeyRecord {
                        id: key_id,
                        identity: identity.clone(),
                        state: KeyState::Active,
                        current_version: 1,
                        hint: hint.clone(),
                        created_at: now,
                        updated_at: now,
                        last_used_at: None,
                        expires_at: options.expires_at,
                    };
                    repo.create_key(&record, &row).await
                }
            };
            match written {
                Ok(()) => {
                    break StoreOutcome {
                        key_id,
                        version,
                        created: existing.is_none(),
                    };
                }
                Err(Error::Conflict { .. }) if attempt < MAX_WRITE_ATTEMPTS => {
                    tracing::debug!(%identity, attempt, "concurrent write; retrying");
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                    continue;
                }
                Err(Error::Conflict { .. }) => {
                    return Err(Error::Conflict {
                        identity: identity.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        };
        self.inner.cache.invalidate(identity);
        tracing::info!(%identity, version = outcome.version, "stored API key");
        if !outcome.created {
            // Older previous versions whose grace ended: wipe them now (best effort; reads
            // refuse them anyway).
            if let Err(e) = repo.retire_due(Some(outcome.key_id), Utc::now()).await {
                tracing::warn!(%identity, error = %e, "could not retire old versions");
            }
        }
        Ok(outcome)
    }

    /// The current value of the key. Served from the cache when possible; otherwise read,
    /// unwrapped and decrypted once however many callers ask at the same time.
    pub async fn get(&self, identity: &KeyIdentity) -> Result<ApiKey> {
        if self.inner.audit.is_none() {
            return self.get_unaudited(identity).await.map(|(key, _)| key);
        }
        let result = self.get_unaudited(identity).await;
        let event = self.event("get", Some(identity)).outcome(&result);
        let event = match &result {
            Ok((_, hit)) => event.detail(if *hit { "cache hit" } else { "cache miss" }),
            Err(_) => event,
        };
        self.audited(event, result).await.map(|(key, _)| key)
    }

    /// `get` without the audit row; also says whether it was a cache hit.
    async fn get_unaudited(&self, identity: &KeyIdentity) -> Result<(ApiKey, bool)> {
        self.check_read(identity)?;
        let (hit, cached) = match self.inner.cache.get(identity) {
            Some(hit) => (hit, true),
            None => {
                self.ensure_refresher();
                let hit = self
                    .inner
                    .cache
                    .get_or_load(identity, self.load(identity))
                    .await?;
                (hit, false)
            }
        };
        if self.inner.last_used.note(&hit) {
            self.inner
                .last_used
                .spawn_flush(Arc::clone(&self.inner.repo));
        }
        Ok((hit.entry.key.clone(), cached))
    }

    /// Starts the background check of cached keys against the store (see `refresh`), once,
    /// on the Tokio runtime of the first cache miss. It ends when the last clone of the
    /// manager is dropped.
    fn ensure_refresher(&self) {
        let interval = self.inner.refresh_interval;
        if interval.is_zero() || self.inner.refresher_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                if let Err(e) = refresh::check_cached(&inner.cache, inner.repo.as_ref()).await {
                    tracing::warn!(error = %e, "could not check cached keys against the store");
                }
            }
        });
    }

    async fn load(&self, identity: &KeyIdentity) -> Result<Loaded> {
        let (key, version) = self
            .inner
            .repo
            .load_current(identity)
            .await?
            .ok_or_else(|| Error::NotFound {
                identity: identity.to_string(),
            })?;
        if key.state == KeyState::Disabled {
            return Err(Error::Disabled {
                identity: identity.to_string(),
            });
        }
        check_not_expired(identity, &version)?;
        let api_key = self
            .open_version(&key, &version)
            .await
            .map_err(|e| e.with_identity(identity))?;
        tracing::debug!(%identity, version = version.version, "loaded API key");
        Ok(Loaded {
            key: api_key,
            key_id: key.id,
            version: version.version,
            expires_at: version.expires_at,
        })
    }

    /// Decrypts one stored version of `key`, checking that the row, its envelope and the
    /// requested identity agree.
    pub(crate) async fn open_version(
        &self,
        key: &KeyRecord,
        version: &VersionRecord,
    ) -> Result<ApiKey> {
        let env = Envelope::from_bytes(&version.envelope)?;
        if version.key_id != key.id
            || env.wrapped.provider != version.provider
            || env.wrapped.master_key_ref != version.master_key_ref
        {
            return Err(Error::integrity());
        }
        let provider = self.provider_named(&env.wrapped.provider)?;
        let context = EncryptionContext::new(key.id, key.identity.clone(), version.version);
        envelope::open(provider.as_ref(), &context, &env).await
    }

    /// The previous value of a rotated key, during its grace period
    /// ([`ManagerOptions::previous_grace`]). Never cached.
    ///
    /// # Errors
    ///
    /// [`Error::NoPrevious`] when the key was never rotated or the grace period ended;
    /// [`Error::NotFound`], [`Error::Disabled`], [`Error::Expired`] as for `get`.
    pub async fn get_previous(&self, identity: &KeyIdentity) -> Result<ApiKey> {
        let result = self.get_previous_unaudited(identity).await;
        let event = self.event("get_previous", Some(identity)).outcome(&result);
        self.audited(event, result).await
    }

    async fn get_previous_unaudited(&self, identity: &KeyIdentity) -> Result<ApiKey> {
        self.check_read(identity)?;
        let key = self.require_key(identity).await?;
        if key.state == KeyState::Disabled {
            return Err(Error::Disabled {
                identity: identity.to_string(),
            });
        }
        let now = Utc::now();
        let versions = self.inner.repo.list_versions(key.id).await?;
        let previous = versions
            .iter()
            .filter(|v| v.version < key.current_version)
            .max_by_key(|v| v.version);
        let no_previous = |reason: String| Error::NoPrevious {
            identity: identity.to_string(),
            reason,
        };
        let Some(previous) = previous else {
            return Err(no_previous("the key was never rotated".into()));
        };
        let retired_at = match previous.state {
            VersionState::Retired => Some(previous.retire_at),
            _ => previous.retire_at.filter(|at| *at <= now).map(Some),
        };
        if let Some(at) = retired_at {
            if let Err(e) = self.inner.repo.retire_due(Some(key.id), now).await {
                tracing::warn!(%identity, error = %e, "could not retire old versions");
            }
            let when = at.map_or_else(String::new, |at| format!(" at {}", at.to_rfc3339()));
            return Err(no_previous(format!(
                "version {} was retired{when}, when its grace period ended",
                previous.version
            )));
        }
        check_not_expired(identity, previous)?;
        self.open_version(&key, previous)
            .await
            .map_err(|e| e.with_identity(identity))
    }

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

    pub(crate) fn provider_named(&self, name: &str) -> Result<&Arc<dyn KmsProvider>> {
        std::iter::once(&self.inner.provider)
            .chain(self.inner.decrypt_only.iter())
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::ProviderNotConfigured {
                provider: name.to_owned(),
            })
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

    async fn require_key(&self, identity: &KeyIdentity) -> Result<KeyRecord> {
        self.inner
            .repo
            .find_key(identity)
            .await?
            .ok_or_else(|| Error::NotFound {
                identity: identity.to_string(),
            })
    }

    /// Writes pending `last_used_at` times now.
    pub async fn flush(&self) -> Result<()> {
        let audit = match &self.inner.audit {
            Some(a) => a.flush().await,
            None => Ok(()),
        };
        self.inner
            .last_used
            .flush(self.inner.repo.as_ref())
            .await
            .and(audit)
    }

    /// Empties the cache, wiping every decrypted key that no caller still holds.
    pub async fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Number of keys in the cache.
    pub async fn cached_keys(&self) -> u64 {
        self.inner.cache.len()
    }

    /// Flushes pending last-used times and clears the cache. Call before exiting.
    pub async fn shutdown(&self) -> Result<()> {
        let flushed = self.flush().await;
        self.clear_cache().await;
        flushed
    }
}

/// Refuses a version whose value expired.
fn check_not_expired(identity: &KeyIdentity, version: &VersionRecord) -> Result<()> {
    match version.expires_at {
        Some(at) if at <= Utc::now() => Err(Error::Expired {
            identity: identity.to_string(),
            expired_at: at.to_rfc3339(),
        }),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Bulk loading (issue 3): many keys at once with bounded concurrency. Additive on purpose: it
// only calls `get`, so the cache, single-flight and freshness rules stay in one place.
// ---------------------------------------------------------------------------------------------

impl SecureKeyManager {
    /// The current values of many keys, loading up to `concurrency` of them at the same time,
    /// so that N cold keys cost about N / `concurrency` KMS round trips of waiting instead of N.
    ///
    /// Each key goes through [`SecureKeyManager::get`] (cache, single-flight loading,
    /// last-used tracking), so a key asked for twice, or already being loaded by another
    /// caller, is unwrapped once. Results come back in the order of `identities`, one per
    /// identity, each with its own outcome: one missing, disabled or failing key does not
    /// hide the others. A `concurrency` of 0 is taken as 1.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use llm_accounting_core::*;
    /// # async fn demo(manager: SecureKeyManager) -> Result<()> {
    /// let ids = vec![KeyIdentity::new("openai")?, KeyIdentity::new("anthropic")?];
    /// for (identity, key) in manager.get_many(&ids, 16).await {
    ///     match key {
    ///         Ok(key) => println!("{identity}: {} bytes", key.len()),
    ///         Err(e) => eprintln!("{identity}: {e}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_many(
        &self,
        identities: &[KeyIdentity],
        concurrency: usize,
    ) -> Vec<(KeyIdentity, Result<ApiKey>)> {
        use futures_util::stream::{self, StreamExt};

        let mut results: Vec<(usize, KeyIdentity, Result<ApiKey>)> =
            stream::iter(identities.iter().enumerate())
                .map(|(i, identity)| async move {
                    let result = self.get(identity).await;
                    (i, identity.clone(), result)
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        results.sort_unstable_by_key(|(i, _, _)| *i);
        results
            .into_iter()
            .map(|(_, identity, result)| (identity, result))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Audit (issue 7): one row per operation, batched in the background or written before
// answering (fail-closed).
// ---------------------------------------------------------------------------------------------

/// The manager's side of the audit trail: the log, and events waiting to be written.
#[derive(Debug)]
pub(crate) struct AuditTrail {
    log: Arc<dyn AuditLog>,
    fail_closed: bool,
    pending: std::sync::Mutex<Vec<AuditEvent>>,
    /// Held while a batch is written, so rows keep the order of the operations.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl AuditTrail {
    fn new(log: Arc<dyn AuditLog>, fail_closed: bool) -> Self {
        AuditTrail {
            log,
            fail_closed,
            pending: std::sync::Mutex::new(Vec::new()),
            writing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<AuditEvent>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what is pending, then `extra`. On failure the pending events are kept for the
    /// next try; `extra` is not (its operation is refused instead: fail-closed).
    async fn write(&self, extra: Option<AuditEvent>) -> Result<()> {
        let _writing = self.writing.lock().await;
        let pending = std::mem::take(&mut *self.pending());
        let kept = pending.len();
        let mut batch = pending;
        batch.extend(extra);
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.log.append(&batch).await {
            batch.truncate(kept);
            let mut pending = self.pending();
            let newer = std::mem::take(&mut *pending);
            *pending = batch;
            pending.extend(newer);
            return Err(e);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.write(None).await
    }

    async fn record(self: &Arc<Self>, event: AuditEvent) -> Result<()> {
        if self.fail_closed {
            return self.write(Some(event)).await;
        }
        self.pending().push(event);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let this = Arc::clone(self);
            handle.spawn(async move {
                if let Err(e) = this.write(None).await {
                    tracing::warn!(error = %e, "could not write audit rows; kept for the next try");
                }
            });
        }
        Ok(())
    }
}

impl SecureKeyManager {
    /// An audit event for an operation by this handle's principal.
    pub(crate) fn event(&self, operation: &str, identity: Option<&KeyIdentity>) -> AuditEvent {
        let principal = self
            .principal
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p| p.to_string());
        AuditEvent::now(operation, identity, &principal)
    }

    /// Records `event` and passes `result` on; with a fail-closed audit trail, a row that
    /// cannot be written turns the result into that error.
    pub(crate) async fn audited<T>(&self, event: AuditEvent, result: Result<T>) -> Result<T> {
        let Some(audit) = &self.inner.audit else {
            return result;
        };
        match audit.record(event).await {
            Ok(()) => result,
            Err(e) => {
                tracing::error!(error = %e, "audit row not written; refusing the result (fail-closed)");
                Err(e)
            }
        }
    }

    /// Verifies the whole audit chain; returns the number of records.
    ///
    /// # Errors
    ///
    /// [`Error::AuditChainBroken`] naming the first record that does not fit.
    pub async fn verify_audit(&self) -> Result<u64> {
        let records = self.audit_records(&AuditFilter::default()).await?;
        crate::audit::verify_chain(&records).map_err(|b| Error::AuditChainBroken {
            seq: b.seq,
            reason: b.reason,
        })
    }

    /// The audit records matching `filter`, oldest first. [`Error::Config`] if this manager
    /// has no audit trail.
    pub async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let audit = self
            .inner
            .audit
            .as_ref()
            .ok_or_else(|| Error::config("this manager has no audit trail"))?;
        audit.flush().await?;
        audit.log.records(filter).await
    }
}
