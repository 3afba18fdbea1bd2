//! The manager's side of the audit trail: one row per operation, batched in the background
//! or written before answering (fail-closed); cache hits aggregated per identity and
//! principal per interval unless every hit is to have its own row.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::hits::{CACHE_HIT, Counted as HitCounted, Hits};
use super::options::AuditOptions;
use crate::audit::{AuditEvent, AuditFilter, AuditLog, AuditRecord};
use crate::batcher::{Batcher, ClearOnDrop, Counted, Limits, Sink};
use crate::cache::Hit;
use crate::{Error, KeyIdentity, Principal, Result, SecureKeyManager};

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

/// Appends batches of events to the audit log.
#[derive(Debug)]
pub(super) struct LogSink(Arc<dyn AuditLog>);

impl Sink<Vec<AuditEvent>> for LogSink {
    async fn write(&self, batch: &Vec<AuditEvent>) -> Result<()> {
        self.0.append(batch).await
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
        AuditTrail {
            batcher: Arc::new(Batcher::new(LogSink(log), "audit rows", limits)),
            hits: Arc::new(Hits::new(
                options.aggregate_interval,
                options.max_pending,
                clock,
            )),
            options,
        }
    }

    /// The log.
    fn log(&self) -> &dyn AuditLog {
        self.batcher.sink().0.as_ref()
    }

    /// Closes the open aggregates and writes what is pending.
    pub(super) async fn flush(&self) -> Result<()> {
        close_hits(&self.hits, &self.batcher);
        self.batcher.flush().await
    }

    /// Records `event`: in the background, or before returning when fail-closed (then an
    /// error means the row was not written).
    async fn record(&self, event: AuditEvent) -> Result<()> {
        if self.options.fail_closed {
            return self.batcher.write_now(event).await;
        }
        // A full queue drops and counts it.
        self.batcher.add(event);
        self.batcher.spawn_write();
        Ok(())
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
    /// [`Error::AuditChainBroken`] naming the first record that does not fit;
    /// [`Error::Forbidden`] for a handle bound to a principal.
    pub async fn verify_audit(&self) -> Result<u64> {
        let records = self.audit_records(&AuditFilter::default()).await?;
        crate::audit::verify_chain(&records).map_err(|b| Error::AuditChainBroken {
            seq: b.seq,
            reason: b.reason,
        })
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
