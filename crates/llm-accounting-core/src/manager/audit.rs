//! The manager's side of the audit trail: one row per operation, batched in the background
//! or written before answering (fail-closed); cache hits aggregated per identity and
//! principal per interval unless every hit is to have its own row.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};

use super::Inner;
use super::hits::{CACHE_HIT, Counted as HitCounted, Hits};
use super::options::AuditOptions;
use crate::audit::{AuditChain, AuditEvent, AuditFilter, AuditHead, AuditLog, AuditRecord};
use crate::batcher::{Batcher, ClearOnDrop, Counted, Limits, Sink};
use crate::cache::Hit;
use crate::{Error, Journal, KeyIdentity, Principal, Result, SecureKeyManager};

/// Most rows appended at once (one transaction, one INSERT in the store).
const ROWS_PER_WRITE: usize = 1_000;

/// A row stands for `count` events, from `first_at` (or `at`) to `at`.
impl Counted for AuditEvent {
    fn events(&self) -> u64 {
        self.count
    }

    fn times(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        Some((self.first_at.unwrap_or(self.at), self.at))
    }

    /// The `dropped` row: a counted gap in the trail.
    fn dropped(count: u64, first: DateTime<Utc>, last: DateTime<Utc>) -> Option<Self> {
        Some(AuditEvent::dropped(count, first, last))
    }
}

/// Appends batches of events to the audit log, linked as the store's state says: keyed under
/// its audit key once the store is sealed, plain before.
#[derive(Debug)]
pub(super) struct LogSink {
    log: Arc<dyn AuditLog>,
    /// The manager, to find the store's audit key (set when the manager is built).
    manager: OnceLock<Weak<Inner>>,
    /// The keyed chain, once the store was found sealed (it never becomes unsealed).
    keyed: OnceLock<AuditChain>,
}

impl Sink<Vec<AuditEvent>> for LogSink {
    async fn write(&self, batch: &Vec<AuditEvent>) -> Result<()> {
        let chain = self.chain().await?;
        self.log.append(batch, &chain).await
    }
}

impl LogSink {
    /// How to link the next rows: keyed once the store is sealed, plain before. Never plain
    /// for a store found sealed, even after the manager is gone.
    async fn chain(&self) -> Result<AuditChain> {
        if let Some(keyed) = self.keyed.get() {
            return Ok(keyed.clone());
        }
        let Some(inner) = self.manager.get().and_then(Weak::upgrade) else {
            return Err(Error::config(
                "audit rows were left pending by a manager that is gone (call shutdown() \
                 before dropping it)",
            ));
        };
        let manager = SecureKeyManager {
            inner,
            principal: None,
        };
        match manager.state_keys(true).await? {
            Some(keys) => Ok(self
                .keyed
                .get_or_init(|| AuditChain::keyed(keys.audit_key()))
                .clone()),
            None => Ok(AuditChain::plain()),
        }
    }
}

type AuditBatcher = Batcher<Vec<AuditEvent>, LogSink>;

/// The manager's side of the audit trail: the log, rows waiting to be written, and cache
/// hits being counted.
#[derive(Debug)]
pub(super) struct AuditTrail {
    batcher: Arc<AuditBatcher>,
    hits: Arc<Hits>,
    options: AuditOptions,
}

impl AuditTrail {
    /// A trail into `log`; cache hits are timed by the cache clock started at `clock`.
    pub(super) fn new(log: Arc<dyn AuditLog>, options: AuditOptions, clock: Instant) -> Self {
        let limits = Limits {
            max_pending: options.max_pending,
            max_batch: ROWS_PER_WRITE,
        };
        let sink = LogSink {
            log,
            manager: OnceLock::new(),
            keyed: OnceLock::new(),
        };
        AuditTrail {
            batcher: Arc::new(Batcher::new(sink, "audit rows", limits)),
            hits: Arc::new(Hits::new(
                options.aggregate_interval,
                options.max_pending,
                clock,
            )),
            options,
        }
    }

    /// Lets the trail find its manager's store state (called once, when the manager is
    /// built).
    pub(super) fn bind(&self, manager: Weak<Inner>) {
        let _ = self.batcher.sink().manager.set(manager);
    }

    /// The log.
    pub(super) fn log(&self) -> &dyn AuditLog {
        self.batcher.sink().log.as_ref()
    }

    /// How the trail's rows are linked now.
    pub(super) async fn chain(&self) -> Result<AuditChain> {
        self.batcher.sink().chain().await
    }

    /// Closes the open aggregates and writes what is pending.
    pub(super) async fn flush(&self) -> Result<()> {
        close_hits(&self.hits, &self.batcher);
        self.batcher.flush().await
    }

    /// Records `event`: in the background, or before returning when fail-closed (then an
    /// error means the row was not written).
    pub(super) async fn record(&self, event: AuditEvent) -> Result<()> {
        if self.options.fail_closed {
            return self.batcher.write_now(event).await;
        }
        // A full queue drops and counts it.
        self.batcher.add(event);
        self.batcher.spawn_write();
        Ok(())
    }

    /// Whether a key change and its row commit in one transaction (the trail is in the key
    /// database).
    pub(super) fn same_transaction(&self) -> bool {
        self.options.same_transaction
    }

    /// Whether cache hits are counted into aggregates (fail-open, and not every hit).
    pub(super) fn aggregates_hits(&self) -> bool {
        !self.options.fail_closed && !self.options.every_hit
    }

    /// Counts `hit`, a cache hit of `identity` by `principal`.
    pub(super) fn count_hit(
        &self,
        hit: &Hit,
        identity: &KeyIdentity,
        principal: Option<&Arc<Principal>>,
    ) {
        match self.hits.count(hit, identity, principal, CACHE_HIT) {
            // Also after an added hit: a closer cut off with its runtime left open aggregates.
            HitCounted::Added | HitCounted::Opened => self.start_closer(),
            HitCounted::Full => {
                let now = Utc::now();
                self.batcher.count_dropped(1, now, now);
                self.batcher.spawn_write();
            }
        }
    }

    /// Starts the task that closes the aggregates after an interval, unless it runs (or
    /// there is no runtime: a flush closes them).
    fn start_closer(&self) {
        if self.hits.timer.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.hits.timer.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(close_every_interval(
            Arc::downgrade(&self.hits),
            Arc::downgrade(&self.batcher),
            ClearOnDrop::new(Arc::clone(&self.hits.timer)),
        ));
    }
}

/// Closes the open aggregates into rows waiting to be written.
fn close_hits(hits: &Hits, batcher: &Arc<AuditBatcher>) {
    let rows = hits.close();
    if rows.is_empty() {
        return;
    }
    for row in rows {
        batcher.add(row);
    }
    batcher.spawn_write();
}

/// Closes the aggregates every interval while any are open; ends with the trail.
async fn close_every_interval(
    hits: Weak<Hits>,
    batcher: Weak<AuditBatcher>,
    mut timer: ClearOnDrop,
) {
    loop {
        let Some(interval) = hits.upgrade().map(|h| h.interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let (Some(hits), Some(batcher)) = (hits.upgrade(), batcher.upgrade()) else {
            return;
        };
        close_hits(&hits, &batcher);
        hits.timer.store(false, Ordering::Release);
        // Aggregates opened while the flag was still set started no task: take them on,
        // unless another task did.
        if hits.is_empty() || hits.timer.swap(true, Ordering::AcqRel) {
            timer.disarm();
            return;
        }
    }
}

/// How one key change is audited.
#[derive(Debug)]
pub(super) enum ChangeAudit {
    /// No audit trail.
    Off,
    /// The trail is in the key database: the row goes into the change's own transaction.
    Journal(AuditChain),
    /// The trail is elsewhere: the intent row was written; the outcome row follows.
    Intent,
}

impl SecureKeyManager {
    /// Starts the audit of a key change described by `event`: with the trail in the key
    /// database, nothing yet (the row goes with the change); elsewhere, the intent row, now.
    /// Fail-closed, a change whose intent cannot be written is refused before anything changes.
    pub(super) async fn begin_change(&self, event: &AuditEvent) -> Result<ChangeAudit> {
        let Some(audit) = &self.inner.audit else {
            return Ok(ChangeAudit::Off);
        };
        if audit.options.same_transaction {
            return Ok(ChangeAudit::Journal(audit.chain().await?));
        }
        match audit.batcher.write_now(event.intent()).await {
            Ok(()) => Ok(ChangeAudit::Intent),
            Err(e) if audit.options.fail_closed => {
                tracing::error!(error = %e, "intent row not written; refusing the change (fail-closed)");
                Err(e)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not write the intent row of a key change");
                Ok(ChangeAudit::Intent)
            }
        }
    }

    /// `event` (outcome ok) as a journal for a change's own transaction when the trail is in
    /// the key database; `None` otherwise (no trail, or a trail elsewhere: no intent row is
    /// written, the caller records a summary instead).
    pub(super) async fn change_journal(&self, event: AuditEvent) -> Result<Option<Journal>> {
        match &self.inner.audit {
            Some(audit) if audit.options.same_transaction => Ok(Some(Journal {
                event,
                chain: audit.chain().await?,
            })),
            _ => Ok(None),
        }
    }

    /// The journal of one attempt of a change: `event` (outcome ok), when it goes into the
    /// change's own transaction.
    pub(super) fn journal(plan: &ChangeAudit, event: AuditEvent) -> Option<Journal> {
        match plan {
            ChangeAudit::Journal(chain) => Some(Journal {
                event,
                chain: chain.clone(),
            }),
            _ => None,
        }
    }

    /// Ends the audit of a key change with `event`, its outcome row, and passes `result` on.
    /// A journaled change that committed has its row already. A change that committed is never
    /// reported as failed because its outcome row could not be written (fail-closed included):
    /// its intent row records it. A failed change keeps its own error.
    pub(super) async fn end_change<T>(
        &self,
        plan: ChangeAudit,
        event: AuditEvent,
        result: Result<T>,
    ) -> Result<T> {
        let Some(audit) = &self.inner.audit else {
            return result;
        };
        if !(matches!(plan, ChangeAudit::Journal(_)) && result.is_ok()) {
            // The outcome row is timed at the end, after its intent row.
            let event = AuditEvent {
                at: chrono::Utc::now().trunc_subsecs(6),
                ..event
            };
            if let Err(e) = audit.record(event).await {
                tracing::error!(error = %e, "the outcome row of a key change was not written");
            }
        }
        if result.is_ok() {
            self.advance_anchor().await;
        }
        result
    }

    /// An audit event for an operation by this handle's principal.
    pub(crate) fn event(&self, operation: &str, identity: Option<&KeyIdentity>) -> AuditEvent {
        let principal = self
            .principal
            .as_ref()
            .map_or_else(|| self.inner.actor.clone(), |p| p.to_string());
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

    /// Verifies the whole audit chain (keyed, in a sealed store: see [`crate::audit`]);
    /// returns the number of records.
    ///
    /// # Errors
    ///
    /// [`Error::AuditChainBroken`] naming the first record that does not fit;
    /// [`Error::Forbidden`] for a handle bound to a principal.
    pub async fn verify_audit(&self) -> Result<u64> {
        self.verify_audit_head(None).await.map(|(n, _)| n)
    }

    /// Verifies the whole audit chain and, with `expected`, that it still holds that head (an
    /// `SEQ:MAC` kept elsewhere): a trail cut short before it, or replaced, is caught too.
    /// Returns the number of records and the trail's current head.
    ///
    /// # Errors
    ///
    /// As [`SecureKeyManager::verify_audit`], and [`Error::AuditChainBroken`] when the expected
    /// head is missing or different.
    pub async fn verify_audit_head(
        &self,
        expected: Option<&AuditHead>,
    ) -> Result<(u64, AuditHead)> {
        let records = self.audit_records(&AuditFilter::default()).await?;
        let chain = match &self.inner.audit {
            Some(audit) => audit.chain().await?,
            None => AuditChain::plain(),
        };
        let broken = |b: crate::audit::ChainBreak| Error::AuditChainBroken {
            seq: b.seq,
            reason: b.reason,
        };
        let n = crate::audit::verify_chain_with(&records, &chain).map_err(broken)?;
        if let Some(head) = expected {
            head.check(&records).map_err(broken)?;
        }
        Ok((n, AuditHead::of(&records)))
    }

    /// The audit records matching `filter`, oldest first. [`Error::Config`] if this manager
    /// has no audit trail; [`Error::Forbidden`] for a handle bound to a principal (the trail
    /// records every principal's operations).
    pub async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.check_unbound("reading the audit trail")?;
        let audit = self
            .inner
            .audit
            .as_ref()
            .ok_or_else(|| Error::config("this manager has no audit trail"))?;
        audit.flush().await?;
        audit.log().records(filter).await
    }
}
