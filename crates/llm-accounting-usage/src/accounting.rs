//! [`Accounting`]: a [`UsageStore`], its background [`UsageRecorder`] and the enforcement mode
//! together: quota checks, reservations, recording, and quota-gated key hand-out.
//!
//! `strict` enforcement reserves in the database (atomic, no overshoot across processes),
//! `local` against per-process counters ([`LocalQuota`]). [`Accounting::get_key`] checks the
//! quota first and only then decrypts the key; the [`Reservation`] it returns is committed with
//! the call's actual usage, attributed to the key version that served it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use llm_accounting_core::{Error, ErrorKind, KeyIdentity, Result, SecureKeyManager};

use crate::reservation::Held;
use crate::{
    Enforcement, GatedKey, LocalQuota, QuotaDecision, QuotaRequest, RecorderOptions, Reservation,
    ReserveOutcome, UsageEvent, UsageRecorder, UsageStore,
};

/// How many keys [`Accounting::get_keys`] reads at once.
const GET_KEYS_CONCURRENCY: usize = 8;

/// How an [`Accounting`] enforces limits and writes events. Start from
/// `AccountingOptions::default()` and set what differs (with the methods, or the fields with
/// `..AccountingOptions::default()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountingOptions {
    /// Strict (in the database) or local (per-process counters).
    pub enforcement: Enforcement,
    /// Local enforcement: time between synchronisations.
    pub sync_interval: Duration,
    /// A reservation neither committed nor released stops holding budget after this.
    pub reservation_ttl: Duration,
    /// Bounds of the background writer.
    pub recorder: RecorderOptions,
}

impl Default for AccountingOptions {
    fn default() -> Self {
        AccountingOptions {
            enforcement: Enforcement::Strict,
            sync_interval: Duration::from_secs(1),
            reservation_ttl: Duration::from_secs(600),
            recorder: RecorderOptions::default(),
        }
    }
}

impl AccountingOptions {
    /// Sets the enforcement mode.
    pub fn enforcement(mut self, enforcement: Enforcement) -> Self {
        self.enforcement = enforcement;
        self
    }

    /// Sets the local enforcement's synchronisation interval.
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// Sets the reservation lifetime.
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.reservation_ttl = ttl;
        self
    }

    /// Sets the bounds of the background writer.
    pub fn recorder(mut self, recorder: RecorderOptions) -> Self {
        self.recorder = recorder;
        self
    }
}

/// What an [`Accounting`] and its reservations share.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn UsageStore>,
    pub(crate) recorder: UsageRecorder,
    pub(crate) local: Option<Arc<LocalQuota>>,
    /// Strict reservations, grouped (stores that [batch](UsageStore::batches_commits) only).
    reserver: Option<crate::groups::Reserver>,
    /// Strict commits, grouped (likewise).
    pub(crate) committer: Option<crate::groups::Committer>,
    ttl: Duration,
}

/// Usage recording and quota checks over one store. Cheap to clone.
#[derive(Clone)]
pub struct Accounting {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounting")
            .field("store", &self.inner.store)
            .field("local", &self.inner.local.is_some())
            .finish_non_exhaustive()
    }
}

impl Accounting {
    /// Starts the background writer (and, for local enforcement, the counters' first
    /// synchronisation) on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// Local enforcement: the store's error from the first synchronisation.
    pub async fn start(store: Arc<dyn UsageStore>, options: AccountingOptions) -> Result<Self> {
        let recorder = UsageRecorder::start(Arc::clone(&store), options.recorder);
        let local = match options.enforcement {
            Enforcement::Local => Some(
                LocalQuota::start(Arc::clone(&store), recorder.clone(), options.sync_interval)
                    .await?,
            ),
            _ => None,
        };
        let grouped = local.is_none() && store.batches_commits();
        let committer = grouped.then(|| crate::groups::Committer::start(Arc::clone(&store)));
        let reserver = grouped
            .then(|| crate::groups::Reserver::start(Arc::clone(&store), options.reservation_ttl));
        Ok(Accounting {
            inner: Arc::new(Inner {
                store,
                recorder,
                local,
                reserver,
                committer,
                ttl: options.reservation_ttl,
            }),
        })
    }

    /// The store (limits, statistics, tail, purge).
    pub fn store(&self) -> &Arc<dyn UsageStore> {
        &self.inner.store
    }

    /// Whether `request` fits every applicable limit now (holds nothing).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a request [`QuotaRequest::validate`] refuses; the store's
    /// (strict enforcement only).
    pub async fn check(&self, request: &QuotaRequest) -> Result<QuotaDecision> {
        request.validate()?;
        match &self.inner.local {
            Some(local) => Ok(local.check(request)),
            None => self.inner.store.check(request, Utc::now()).await,
        }
    }

    /// Holds the request's estimate on every applicable limit.
    ///
    /// # Errors
    ///
    /// [`Error::QuotaExceeded`] naming the limit, its usage and maximum and its reset time;
    /// [`Error::InvalidInput`] for a request [`QuotaRequest::validate`] refuses; the store's
    /// errors.
    pub async fn reserve(&self, request: &QuotaRequest) -> Result<Reservation> {
        request.validate()?;
        let held = match &self.inner.local {
            Some(local) => Held::Local(Mutex::new(Some(
                local.reserve(request).map_err(|d| Error::from(*d))?,
            ))),
            None => match match &self.inner.reserver {
                Some(r) => r.reserve(request.clone()).await?,
                None => {
                    self.inner
                        .store
                        .reserve(request, self.inner.ttl, Utc::now())
                        .await?
                }
            } {
                ReserveOutcome::Reserved(r) => Held::Strict(r.id),
                ReserveOutcome::Denied(d) => return Err(Error::from(*d)),
            },
        };
        Ok(Reservation::new(self.clone(), held, request.scope.clone()))
    }

    /// Queues an event for the background writer (waits for room if the queue is full).
    /// [`Accounting::shutdown`] writes it before it returns.
    ///
    /// # Errors
    ///
    /// An invalid event (nothing is queued); a recorder that was shut down.
    pub async fn record(&self, event: UsageEvent) -> Result<()> {
        self.inner.recorder.record(event).await
    }

    /// Checks the quota for `request`, and only if it is allowed decrypts and returns the key
    /// of `identity`, with a reservation to commit with the call's actual usage. The request
    /// is scoped to the key (`key` = its identity; `service` = its service unless set).
    ///
    /// # Errors
    ///
    /// [`Error::QuotaExceeded`] (audited as a refused `get`; no key is read or decrypted);
    /// every error of [`SecureKeyManager::get`] (the reservation is then released).
    pub async fn get_key(
        &self,
        manager: &SecureKeyManager,
        identity: &KeyIdentity,
        request: &QuotaRequest,
    ) -> Result<GatedKey> {
        let mut request = request.clone();
        request.scope.key = Some(identity.to_string());
        if request.scope.service.is_none() {
            request.scope.service = Some(identity.service().to_owned());
        }
        let reservation = self.reserve_audited(manager, identity, &request).await?;
        match manager.get_versioned(identity).await {
            Ok((key, version)) => Ok(GatedKey::served(identity, key, version, reservation)),
            Err(e) => {
                release_all(vec![reservation]).await;
                Err(e)
            }
        }
    }

    /// Quota-gated hand-out of the keys of several identities for one call (`exec` with
    /// several keys): all or nothing.
    ///
    /// `request` is validated ([`QuotaRequest::validate`]), then scoped to each key in turn
    /// (`key` = its identity; `service`, `user` and `project` = the identity's unless set)
    /// and reserved: every reservation is held before any key is read, so a denial reads,
    /// decrypts and records nothing. Then the keys are read together
    /// ([`SecureKeyManager::get_many_versioned`]). The keys come back in the order of
    /// `identities`, each with its reservation: commit each with the usage of the call it
    /// served (nothing known yet: [`crate::CallUsage::default`] counts one request).
    ///
    /// # Errors
    ///
    /// An invalid request (nothing is held or read); [`Error::QuotaExceeded`] for the first
    /// identity whose request does not fit (audited as a refused `get` of that identity;
    /// every reservation already held is released); the first error reading a key (every
    /// reservation is released).
    pub async fn get_keys(
        &self,
        manager: &SecureKeyManager,
        identities: &[KeyIdentity],
        request: &QuotaRequest,
    ) -> Result<Vec<GatedKey>> {
        request.validate()?;
        let mut reservations = Vec::with_capacity(identities.len());
        for identity in identities {
            let scoped = request.for_key(identity);
            match self.reserve_audited(manager, identity, &scoped).await {
                Ok(r) => reservations.push(r),
                Err(e) => {
                    release_all(reservations).await;
                    return Err(e);
                }
            }
        }
        let read = manager
            .get_many_versioned(identities, GET_KEYS_CONCURRENCY)
            .await;
        let mut keys = Vec::with_capacity(read.len());
        let mut first_error = None;
        for (identity, got) in read {
            match got {
                Ok(k) => keys.push((identity, k)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            release_all(reservations).await;
            return Err(e);
        }
        Ok(keys
            .into_iter()
            .zip(reservations)
            .map(|((identity, (key, version)), reservation)| {
                GatedKey::served(&identity, key, version, reservation)
            })
            .collect())
    }

    /// [`Accounting::reserve`], a denial audited as a refused `get` of `identity`.
    async fn reserve_audited(
        &self,
        manager: &SecureKeyManager,
        identity: &KeyIdentity,
        request: &QuotaRequest,
    ) -> Result<Reservation> {
        match self.reserve(request).await {
            Ok(r) => Ok(r),
            Err(e @ Error::QuotaExceeded { .. }) => {
                manager
                    .audit_refusal(identity, ErrorKind::QuotaExceeded, &e.to_string())
                    .await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes every queued event and stops the background writer (and local
    /// synchronisation). Nothing recorded before it is lost.
    ///
    /// # Errors
    ///
    /// The store's error writing the last batch.
    pub async fn shutdown(&self) -> Result<()> {
        if let Some(local) = &self.inner.local {
            local.shutdown().await?;
        }
        self.inner.recorder.shutdown().await
    }
}

/// Gives back reservations of a hand-out that did not happen (a failure to release is only
/// logged: the reservation lapses by itself).
async fn release_all(reservations: Vec<Reservation>) {
    for r in reservations {
        if let Err(e) = r.release().await {
            tracing::warn!(error = %e, "could not release a reservation; it lapses by itself");
        }
    }
}
