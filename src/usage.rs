//! Usage accounting, quotas, and quota-gated key hand-out (feature `accounting`, on by
//! default).
//!
//! [`Accounting`] ties a [`UsageStore`] (the key database, or `accounting.database_url`) to a
//! background [`UsageRecorder`] and the enforcement mode of `accounting.enforcement`:
//! `strict` reserves in the database (atomic, no overshoot across processes), `local` against
//! per-process counters ([`LocalQuota`]). [`Accounting::get_key`] checks the quota first and
//! only then decrypts the key; the [`Reservation`] it returns is committed with the call's
//! actual usage, attributed to the key version that served it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use llm_accounting_usage::LocalReservation;
pub use llm_accounting_usage::{
    Amounts, Denial, GroupBy, KeyRef, Limit, LimitKind, LocalQuota, MemoryUsageStore, Money,
    NewLimit, QuotaDecision, QuotaRequest, RecorderOptions, ReserveOutcome, Scope, StatsQuery,
    StatsRow, Usage, UsageEvent, UsageRecorder, UsageStore, Window, WindowUnit,
};
use uuid::Uuid;

use crate::{ApiKey, Enforcement, Error, ErrorKind, KeyIdentity, Result, SecureKeyManager};

/// How an [`Accounting`] enforces limits and writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
}

struct Inner {
    store: Arc<dyn UsageStore>,
    recorder: UsageRecorder,
    local: Option<Arc<LocalQuota>>,
    ttl: Duration,
}

/// Usage recording and quota checks over one store. Cheap to clone.
#[derive(Clone)]
pub struct Accounting {
    inner: Arc<Inner>,
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
        Ok(Accounting {
            inner: Arc::new(Inner {
                store,
                recorder,
                local,
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
    /// The store's (strict enforcement only).
    pub async fn check(&self, request: &QuotaRequest) -> Result<QuotaDecision> {
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
    /// the store's errors.
    pub async fn reserve(&self, request: &QuotaRequest) -> Result<Reservation> {
        let held = match &self.inner.local {
            Some(local) => Held::Local(Mutex::new(Some(
                local.reserve(request).map_err(|d| Error::from(*d))?,
            ))),
            None => match self
                .inner
                .store
                .reserve(request, self.inner.ttl, Utc::now())
                .await?
            {
                ReserveOutcome::Reserved(r) => Held::Strict(r.id),
                ReserveOutcome::Denied(d) => return Err(Error::from(*d)),
            },
        };
        Ok(Reservation {
            accounting: self.clone(),
            held,
            scope: request.scope.clone(),
            key: None,
            done: false,
        })
    }

    /// Queues an event for the background writer (waits for room if the queue is full).
    ///
    /// # Errors
    ///
    /// An invalid event; a recorder that was shut down.
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
        let mut reservation = match self.reserve(&request).await {
            Ok(r) => r,
            Err(e @ Error::QuotaExceeded { .. }) => {
                manager
                    .audit_refusal(identity, ErrorKind::QuotaExceeded, &e.to_string())
                    .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match manager.get_versioned(identity).await {
            Ok((key, version)) => {
                reservation.key = Some(KeyRef {
                    identity: identity.to_string(),
                    version,
                });
                Ok(GatedKey {
                    key,
                    version,
                    reservation,
                })
            }
            Err(e) => {
                if let Err(r) = reservation.release().await {
                    tracing::warn!(error = %r, "could not release a reservation; it lapses by itself");
                }
                Err(e)
            }
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

enum Held {
    Strict(Uuid),
    Local(Mutex<Option<LocalReservation>>),
}

/// What a call actually used, for [`Reservation::commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Cost.
    pub cost: Money,
    /// How long the call took.
    pub execution_time: Option<Duration>,
    /// A session id.
    pub session: Option<String>,
}

impl CallUsage {
    /// Prompt and completion tokens and the cost.
    pub fn new(prompt_tokens: u64, completion_tokens: u64, cost: Money) -> Self {
        CallUsage {
            prompt_tokens,
            completion_tokens,
            cost,
            ..CallUsage::default()
        }
    }
}

/// Budget held for one call: commit it with the actual usage, or release it. Dropped without
/// either, it is released (local) or lapses after `accounting.reservation_ttl_secs` (strict).
#[must_use = "commit the reservation with the call's usage, or release it"]
pub struct Reservation {
    accounting: Accounting,
    held: Held,
    scope: Scope,
    key: Option<KeyRef>,
    done: bool,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("scope", &self.scope)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// The event this reservation turns into with `usage`.
    fn event(&self, usage: CallUsage) -> UsageEvent {
        let s = &self.scope;
        let mut e = UsageEvent::new(s.model.clone().unwrap_or_default(), Utc::now());
        e.service = s.service.clone();
        e.user = s.user.clone();
        e.project = s.project.clone();
        e.caller = s.caller.clone();
        e.session = usage.session;
        e.prompt_tokens = usage.prompt_tokens;
        e.completion_tokens = usage.completion_tokens;
        e.cached_tokens = usage.cached_tokens;
        e.reasoning_tokens = usage.reasoning_tokens;
        e.cost = usage.cost;
        e.execution_time = usage.execution_time;
        e.key = self.key.clone();
        e
    }

    /// Replaces the held estimate by what the call used (one request), attributed to the key
    /// version that served it.
    ///
    /// # Errors
    ///
    /// The store's (strict: the reservation then still lapses by itself).
    pub async fn commit(mut self, usage: CallUsage) -> Result<()> {
        let event = self.event(usage);
        self.done = true;
        let a = &self.accounting.inner;
        match &self.held {
            Held::Strict(id) => a.store.commit(*id, &event).await,
            Held::Local(held) => {
                let held = held.lock().unwrap_or_else(|p| p.into_inner()).take();
                match (held, &a.local) {
                    (Some(h), Some(local)) => local.commit(h, event).await,
                    _ => a.recorder.record(event).await,
                }
            }
        }
    }

    /// Gives the held budget back.
    ///
    /// # Errors
    ///
    /// The store's (strict: the reservation then lapses by itself).
    pub async fn release(mut self) -> Result<()> {
        self.done = true;
        self.release_now().await
    }

    async fn release_now(&self) -> Result<()> {
        let a = &self.accounting.inner;
        match &self.held {
            Held::Strict(id) => a.store.release(*id).await.map(drop),
            Held::Local(_) => {
                self.release_local();
                Ok(())
            }
        }
    }

    fn release_local(&self) {
        if let (Held::Local(held), Some(local)) = (&self.held, &self.accounting.inner.local)
            && let Some(h) = held.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            local.release(h);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            // Strict reservations lapse by themselves; local ones are given back now.
            self.release_local();
        }
    }
}

/// A key handed out under a quota: the key, its version, and the reservation to commit.
#[derive(Debug)]
#[non_exhaustive]
pub struct GatedKey {
    /// The API key.
    pub key: ApiKey,
    /// The version served.
    pub version: u32,
    /// The held budget: commit it with the call's usage.
    pub reservation: Reservation,
}
