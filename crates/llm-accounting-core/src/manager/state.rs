//! The store's state key, as this manager knows it: found (unwrapped once, cached for the
//! manager's life), or not there yet (an unsealed store, or an empty one that the first write
//! seals). See [`crate::seal`] for what it authenticates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use crate::seal::{STATE_KEY, StateKeys};
use crate::{
    EncryptionContext, Error, KeyRecord, RecordSeal, Result, SecureKeyManager, StoreKeyRecord,
};

/// The `tracing` target of the warning that a store's record state is not authenticated: it
/// is not sealed (and sealing is not required). The remedy is [`SecureKeyManager::seal`],
/// once; an application can add its own words for it to the warnings of this target.
pub const UNSEALED_WARNING_TARGET: &str = "llm_accounting_core::unsealed";

/// How long a read trusts that the store is still unsealed before looking again (writes always
/// look again).
const UNSEALED_RECHECK_MS: u64 = 2_000;

/// What the manager knows of its store's state key.
#[derive(Debug)]
pub(super) struct StoreState {
    keys: tokio::sync::OnceCell<Arc<StateKeys>>,
    /// Milliseconds after `base` when the store was last seen unsealed (0: never).
    unsealed_seen_ms: AtomicU64,
    base: Instant,
    warned: AtomicBool,
    /// Evidence that a store without a state key was sealed once (read once).
    pub(super) sealed_before: tokio::sync::OnceCell<Option<String>>,
}

impl StoreState {
    pub(super) fn new() -> Self {
        StoreState {
            keys: tokio::sync::OnceCell::new(),
            unsealed_seen_ms: AtomicU64::new(0),
            base: Instant::now(),
            warned: AtomicBool::new(false),
            sealed_before: tokio::sync::OnceCell::new(),
        }
    }

    /// The state keys, once found.
    pub(super) fn cached(&self) -> Option<Arc<StateKeys>> {
        self.keys.get().cloned()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn saw_unsealed(&self) {
        self.unsealed_seen_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    fn recently_unsealed(&self) -> bool {
        let seen = self.unsealed_seen_ms.load(Ordering::Relaxed);
        seen != 0 && self.now_ms().saturating_sub(seen) < UNSEALED_RECHECK_MS
    }
}

impl SecureKeyManager {
    /// The state keys of a sealed store, or `None` for an unsealed one. `fresh`: look in the
    /// store even if it was found unsealed a moment ago (writes, and reads of sealed records).
    pub(super) async fn state_keys(&self, fresh: bool) -> Result<Option<Arc<StateKeys>>> {
        let state = &self.inner.state;
        if let Some(keys) = state.cached() {
            return Ok(Some(keys));
        }
        if !fresh && state.recently_unsealed() {
            return Ok(None);
        }
        let Some(row) = self.inner.repo.store_key(STATE_KEY).await? else {
            // A trail anchored under a state key is not read as unsealed.
            self.check_anchor(None).await?;
            state.saw_unsealed();
            return Ok(None);
        };
        let keys = state
            .keys
            .get_or_try_init(|| async {
                let keys = self.unwrap_state_key(&row).await?;
                // The database still holds the trail anchored outside it.
                self.check_anchor(Some(&keys)).await?;
                Ok::<_, Error>(keys)
            })
            .await?;
        Ok(Some(Arc::clone(keys)))
    }

    /// Unwraps a stored state key with the provider that wrapped it, under its own context.
    async fn unwrap_state_key(&self, row: &StoreKeyRecord) -> Result<Arc<StateKeys>> {
        let provider = self.provider_named(&row.wrapped.provider)?;
        let context = EncryptionContext::store_key(row.store_id);
        let root = provider.unwrap_key(&row.wrapped, &context).await?;
        tracing::debug!(provider = %row.wrapped.provider, "unwrapped the store's state key");
        Ok(Arc::new(StateKeys::derive(&root)))
    }

    /// The state keys for a write: the store's, or, when the store holds no key at all yet,
    /// new ones (a new store is sealed from its first write). `None` for an unsealed store
    /// that holds keys: sealing it is an explicit step (`seal`).
    pub(super) async fn state_keys_for_write(&self) -> Result<Option<Arc<StateKeys>>> {
        if let Some(keys) = self.state_keys(true).await? {
            return Ok(Some(keys));
        }
        if self.inner.repo.is_empty().await? {
            return self.make_state_key().await.map(Some);
        }
        // A store is sealed before its first record is written: a record that appeared since
        // the first look comes with a state key (another writer just made both).
        if let Some(keys) = self.state_keys(true).await? {
            return Ok(Some(keys));
        }
        self.unsealed().await?;
        Ok(None)
    }

    /// Makes the store's state key: 256 random bits from the main provider (a KMS's own
    /// `GenerateDataKey` where it has one), wrapped under the store-key context, inserted
    /// unless another writer made one first (then that one is used).
    pub(super) async fn make_state_key(&self) -> Result<Arc<StateKeys>> {
        let store_id = Uuid::new_v4();
        let (root, wrapped) = self
            .inner
            .provider
            .generate_data_key(&EncryptionContext::store_key(store_id))
            .await?;
        let row = StoreKeyRecord {
            name: STATE_KEY.to_owned(),
            store_id,
            wrapped,
            created_at: Utc::now().trunc_subsecs(6),
        };
        if self.inner.repo.insert_store_key(&row).await? {
            tracing::info!("made the store's state key; record state is authenticated from now on");
            let keys = Arc::new(StateKeys::derive(&root));
            // Another task of this manager may have found it first: keep whichever is set.
            let _ = self.inner.state.keys.set(Arc::clone(&keys));
            return Ok(self.inner.state.cached().unwrap_or(keys));
        }
        self.state_keys(true).await?.ok_or_else(Error::integrity)
    }

    /// Refuses an unsealed store when sealing is required, or when it was sealed once (its
    /// state key was removed: [`SecureKeyManager::sealed_before`]); otherwise says once per
    /// process that the store's record state is not authenticated.
    async fn unsealed(&self) -> Result<()> {
        if self.inner.require_sealed {
            return Err(Error::Integrity {
                identity: Some(
                    "this store: it is not sealed (no state key), but sealing is required"
                        .to_owned(),
                ),
            });
        }
        if let Some(evidence) = self.sealed_before().await? {
            tracing::debug!(%evidence, "a sealed store has lost its state key");
            return Err(Self::state_key_removed(&evidence));
        }
        self.warn_unsealed();
        Ok(())
    }

    /// The error for a store that was sealed but has no state key any more.
    pub(super) fn state_key_removed(evidence: &str) -> Error {
        Error::Integrity {
            identity: Some(format!(
                "this store: it has no state key, but it was sealed ({evidence}): its state key \
                 was removed, and its records are not read as unsealed; restore the store_keys \
                 table from a backup"
            )),
        }
    }

    /// Says once per process that the store's record state is not authenticated.
    fn warn_unsealed(&self) {
        if !self.inner.state.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: UNSEALED_WARNING_TARGET,
                "the state of the keys in this store (current version, disabled, expiry) is not \
                 authenticated: a database writer could change it unseen; seal the store once"
            );
        }
    }

    /// Checks a record's seal: against the store's state keys when the store is sealed (a
    /// record without a seal is then refused like a wrong one), or, in an unsealed store,
    /// that the record carries none (a record with a seal but no state key to check it is
    /// refused too). Returns the verified seal, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] on any mismatch.
    pub(super) async fn check_seal<'k>(
        &self,
        key: &'k KeyRecord,
    ) -> Result<Option<&'k RecordSeal>> {
        let fresh = key.seal.is_some();
        match self.state_keys(fresh).await? {
            Some(keys) => keys.verify(key).map(Some),
            None if key.seal.is_some() => Err(Error::integrity()),
            None => self.unsealed().await.map(|()| None),
        }
    }
}

impl SecureKeyManager {
    /// A 256-bit key of this store for `purpose` (a fixed name, such as
    /// `"gateway/virtual-keys/v1"`), derived from the store's state key: the same in every
    /// process that can unwrap the state key, unknown to anyone who can only read or write the
    /// database. Components use it to authenticate their own rows (an HMAC under it) without a
    /// KMS call per row. A store that holds no key yet gets its state key now (as its first
    /// write would).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a store that holds keys but is not sealed (`keys seal` first):
    /// it has no state key to derive from; the provider's errors unwrapping the state key.
    pub async fn purpose_key(&self, purpose: &str) -> Result<crate::DataKey> {
        match self.state_keys_for_write().await? {
            Some(keys) => keys.purpose_key(purpose),
            None => Err(Error::Integrity {
                identity: Some(
                    "this store: it is not sealed, and keys derived from its state key need \
                     one (run `llm-accounting keys seal` once)"
                        .to_owned(),
                ),
            }),
        }
    }
}
