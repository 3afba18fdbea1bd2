//! [`LocalQuota`]: quota checks against per-process counters, synchronised with the store at
//! an interval (`accounting.enforcement = "local"`).
//!
//! Each limit keeps three counters: usage in the database at the last synchronisation
//! (`synced`), budget held by this process's open reservations (`held`), and usage this
//! process committed since (`committed`). A check adds them and never waits for the
//! database; a reservation adds to `held` with atomic operations and takes it back if any
//! limit would pass, so that one process never overshoots on its own. Every interval, the
//! process writes what it committed, reads each limit's usage again, and reloads the limits.
//! Several processes each see the others' usage only at synchronisation: together they can
//! pass a limit by at most (processes − 1) × (their rate) × (the interval).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use llm_accounting_core::Result;

use crate::{
    Amounts, Denial, Limit, QuotaDecision, QuotaRequest, Scope, Usage, UsageEvent, UsageRecorder,
    UsageStore, Window, check_limit,
};

#[derive(Debug)]
struct Counter {
    limit: Limit,
    /// Usage in the store at the last synchronisation, in the limit's unit.
    synced: AtomicU64,
    /// End (µs since the epoch) of the fixed window `synced` was read for; past it, `synced`
    /// no longer counts.
    synced_until_us: AtomicI64,
    /// Oldest event in `synced`, µs (rolling windows' reset time); `i64::MIN` if none.
    oldest_us: AtomicI64,
    held: AtomicU64,
    committed: AtomicU64,
}

impl Counter {
    fn used(&self, now_us: i64) -> u64 {
        let synced = if now_us < self.synced_until_us.load(Ordering::Relaxed) {
            self.synced.load(Ordering::Relaxed)
        } else {
            0
        };
        synced
            .saturating_add(self.held.load(Ordering::Relaxed))
            .saturating_add(self.committed.load(Ordering::Relaxed))
    }

    fn usage(&self, now_us: i64) -> Usage {
        let oldest = self.oldest_us.load(Ordering::Relaxed);
        Usage {
            amounts: amounts_of(self.limit.kind, self.used(now_us)),
            oldest: (oldest != i64::MIN)
                .then(|| DateTime::from_timestamp_micros(oldest))
                .flatten(),
        }
    }
}

/// Amounts with `n` in the field `kind` counts (total tokens: all as input).
fn amounts_of(kind: crate::LimitKind, n: u64) -> Amounts {
    use crate::LimitKind::*;
    let mut a = Amounts::default();
    match kind {
        Requests => a.requests = n,
        InputTokens | TotalTokens => a.input_tokens = n,
        OutputTokens => a.output_tokens = n,
        Cost => a.cost = crate::Money::from_micros(n),
    }
    a
}

#[derive(Debug, Default)]
struct Snapshot {
    counters: Vec<Arc<Counter>>,
}

/// Budget held by [`LocalQuota::reserve`]: commit it with the actual usage, or release it.
#[derive(Debug)]
#[must_use = "commit or release a reservation"]
pub struct LocalReservation {
    held: Vec<(Arc<Counter>, u64)>,
}

/// Quota checks against in-process counters (see the module documentation).
#[derive(Debug)]
pub struct LocalQuota {
    store: Arc<dyn UsageStore>,
    recorder: UsageRecorder,
    snapshot: RwLock<Arc<Snapshot>>,
    stopped: AtomicBool,
}

impl LocalQuota {
    /// Loads the limits and their usage, and synchronises every `interval` in the background
    /// (on the current Tokio runtime) until [`LocalQuota::shutdown`]. Committed usage is
    /// written through `recorder`.
    ///
    /// # Errors
    ///
    /// The store's error from the first synchronisation.
    pub async fn start(
        store: Arc<dyn UsageStore>,
        recorder: UsageRecorder,
        interval: Duration,
    ) -> Result<Arc<LocalQuota>> {
        let quota = Arc::new(LocalQuota {
            store,
            recorder,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            stopped: AtomicBool::new(false),
        });
        quota.sync().await?;
        let weak = Arc::downgrade(&quota);
        tokio::spawn(sync_loop(weak, interval.max(Duration::from_millis(1))));
        Ok(quota)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `request` fits every limit that decides it now, from memory.
    pub fn check(&self, request: &QuotaRequest) -> QuotaDecision {
        let now = Utc::now();
        let now_us = now.timestamp_micros();
        let asked = request.amounts();
        let snapshot = self.snapshot();
        for c in &snapshot.counters {
            if !c.limit.scope.matches(&request.scope) {
                continue;
            }
            if c.limit.is_unlimited() {
                break;
            }
            if let Some(d) = check_limit(&c.limit, &c.usage(now_us), &asked, now) {
                return QuotaDecision::Denied(Box::new(d));
            }
        }
        QuotaDecision::Allowed
    }

    /// Holds the request's amounts on every limit that decides it (see
    /// [`crate::governing`]), or refuses without holding anything.
    ///
    /// # Errors
    ///
    /// The [`Denial`] of the first limit without room.
    pub fn reserve(
        &self,
        request: &QuotaRequest,
    ) -> std::result::Result<LocalReservation, Box<Denial>> {
        let now = Utc::now();
        let now_us = now.timestamp_micros();
        let asked = request.amounts();
        let snapshot = self.snapshot();
        let mut held = LocalReservation { held: Vec::new() };
        for c in &snapshot.counters {
            if !c.limit.scope.matches(&request.scope) {
                continue;
            }
            if c.limit.is_unlimited() {
                break;
            }
            let n = c.limit.kind.of(&asked);
            c.held.fetch_add(n, Ordering::AcqRel);
            held.held.push((Arc::clone(c), n));
            let used_before = c.used(now_us).saturating_sub(n);
            if used_before >= c.limit.max || used_before.saturating_add(n) > c.limit.max {
                let usage = Usage {
                    amounts: amounts_of(c.limit.kind, used_before),
                    oldest: c.usage(now_us).oldest,
                };
                let denial = check_limit(&c.limit, &usage, &asked, now);
                self.release(held);
                return Err(Box::new(denial.unwrap_or_else(|| Denial {
                    limit: c.limit.clone(),
                    usage: used_before,
                    requested: n,
                    max: c.limit.max,
                    resets_at: crate::resets_at(c.limit.window, None, now),
                })));
            }
        }
        Ok(held)
    }

    /// Gives the held budget back.
    pub fn release(&self, reservation: LocalReservation) {
        for (c, n) in reservation.held {
            c.held.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Replaces the held budget by the actual usage, which is queued for writing.
    ///
    /// # Errors
    ///
    /// An invalid event (the budget is released), or a recorder that was shut down.
    pub async fn commit(&self, reservation: LocalReservation, event: UsageEvent) -> Result<()> {
        if let Err(e) = event.validate() {
            self.release(reservation);
            return Err(e);
        }
        let actual = Amounts::of_event(&event);
        let scope = Scope::of_event(&event);
        for c in &self.snapshot().counters {
            if c.limit.scope.matches(&scope) {
                c.committed
                    .fetch_add(c.limit.kind.of(&actual), Ordering::AcqRel);
            }
        }
        self.release(reservation);
        self.recorder.record(event).await
    }

    /// Writes what this process committed, then reads every limit's usage and the limits
    /// again.
    ///
    /// # Errors
    ///
    /// The store's error; the counters are then left as they were.
    pub async fn sync(&self) -> Result<()> {
        let old = self.snapshot();
        // What was committed before the flush is in the store after it.
        let committed: Vec<(i64, u64)> = old
            .counters
            .iter()
            .map(|c| (c.limit.id, c.committed.load(Ordering::Acquire)))
            .collect();
        self.recorder.flush().await?;
        let now = Utc::now();
        let limits = self.store.limits().await?;
        let mut counters = Vec::with_capacity(limits.len());
        for limit in limits {
            let (since, until) = limit.window.bounds(now);
            let usage = self.store.usage(&limit.scope, since, until, now).await?;
            let previous = old.counters.iter().find(|c| c.limit == limit);
            let counter = match previous {
                Some(c) => Arc::clone(c),
                None => Arc::new(Counter {
                    limit: limit.clone(),
                    synced: AtomicU64::new(0),
                    synced_until_us: AtomicI64::new(i64::MIN),
                    oldest_us: AtomicI64::new(i64::MIN),
                    held: AtomicU64::new(0),
                    committed: AtomicU64::new(0),
                }),
            };
            let flushed = committed
                .iter()
                .find(|(id, _)| *id == limit.id)
                .map_or(0, |(_, n)| *n);
            if previous.is_some() {
                counter.committed.fetch_sub(
                    flushed.min(counter.committed.load(Ordering::Acquire)),
                    Ordering::AcqRel,
                );
            }
            counter
                .synced
                .store(limit.kind.of(&usage.amounts), Ordering::Release);
            let until_us = match limit.window {
                Window::Rolling { .. } | Window::RollingMonths { .. } => i64::MAX,
                Window::Fixed { .. } => until.timestamp_micros(),
            };
            counter.synced_until_us.store(until_us, Ordering::Release);
            counter.oldest_us.store(
                usage.oldest.map_or(i64::MIN, |t| t.timestamp_micros()),
                Ordering::Release,
            );
            counters.push(counter);
        }
        // Checks walk the counters in the order limits are checked (see `crate::governing`).
        counters.sort_by_key(|c| c.limit.precedence());
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot { counters });
        Ok(())
    }

    /// Stops synchronising and writes what is queued.
    ///
    /// # Errors
    ///
    /// The recorder's.
    pub async fn shutdown(&self) -> Result<()> {
        self.stopped.store(true, Ordering::Release);
        self.recorder.flush().await
    }
}

async fn sync_loop(quota: Weak<LocalQuota>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(q) = quota.upgrade() else { return };
        if q.stopped.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = q.sync().await {
            tracing::warn!(error = %e, "could not synchronise quota counters; using the last ones");
        }
    }
}
