//! [`Reservation`]: budget held for one call until it is committed with the call's usage
//! ([`CallUsage`]) or released; [`GatedKey`]: a key handed out under a quota with its
//! reservation.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use llm_accounting_core::{ApiKey, Result};
use uuid::Uuid;

use crate::{Accounting, KeyRef, LocalReservation, Money, Scope, UsageEvent};

/// Where the budget of a [`Reservation`] is held.
pub(crate) enum Held {
    /// In the store (strict enforcement): the reservation's id.
    Strict(Uuid),
    /// In this process's counters (local enforcement); `None` once committed or released.
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
    /// The key (and version) that serves the call, set by gated hand-outs.
    pub(crate) key: Option<KeyRef>,
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
    /// A reservation of `accounting` for a call in `scope`, held in `held`.
    pub(crate) fn new(accounting: Accounting, held: Held, scope: Scope) -> Self {
        Reservation {
            accounting,
            held,
            scope,
            key: None,
            done: false,
        }
    }

    /// The event this reservation turns into with `usage`.
    fn event(&self, usage: CallUsage) -> UsageEvent {
        let mut e = self.scope.event_at(Utc::now());
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
            Held::Strict(id) => match &a.committer {
                Some(c) => {
                    event.validate()?;
                    c.commit(*id, event).await
                }
                None => a.store.commit(*id, &event).await,
            },
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

impl GatedKey {
    /// Version `version` of `identity`'s key, served under `reservation`, which from now on
    /// attributes the call's usage to that version.
    pub(crate) fn served(
        identity: &llm_accounting_core::KeyIdentity,
        key: ApiKey,
        version: u32,
        mut reservation: Reservation,
    ) -> Self {
        reservation.key = Some(KeyRef {
            identity: identity.to_string(),
            version,
        });
        GatedKey {
            key,
            version,
            reservation,
        }
    }
}
