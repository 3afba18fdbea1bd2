//! The manager's side of the audit trail: one row per operation, batched in the background
//! or written before answering (fail-closed).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::{AuditEvent, AuditFilter, AuditLog, AuditRecord};
use crate::batcher::{Batcher, Counted, Limits, Sink};
use crate::{Error, KeyIdentity, Result, SecureKeyManager};

/// Most rows appended at once (one transaction, one INSERT in the store).
const ROWS_PER_WRITE: usize = 1_000;

/// Most rows waiting to be written (fail-open); beyond, events are dropped and counted.
const MAX_PENDING: usize = 10_000;

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

/// The manager's side of the audit trail: the log, and events waiting to be written.
#[derive(Debug)]
pub(super) struct AuditTrail {
    batcher: Arc<Batcher<Vec<AuditEvent>, LogSink>>,
    fail_closed: bool,
}

impl AuditTrail {
    pub(super) fn new(log: Arc<dyn AuditLog>, fail_closed: bool) -> Self {
        let limits = Limits {
            max_pending: MAX_PENDING,
            max_batch: ROWS_PER_WRITE,
        };
        AuditTrail {
            batcher: Arc::new(Batcher::new(LogSink(log), "audit rows", limits)),
            fail_closed,
        }
    }

    /// The log.
    fn log(&self) -> &dyn AuditLog {
        self.batcher.sink().0.as_ref()
    }

    /// Writes what is pending.
    pub(super) async fn flush(&self) -> Result<()> {
        self.batcher.flush().await
    }

    /// Records `event`: in the background, or before returning when fail-closed (then an
    /// error means the row was not written).
    async fn record(&self, event: AuditEvent) -> Result<()> {
        if self.fail_closed {
            return self.batcher.write_now(event).await;
        }
        // A full queue drops and counts it.
        self.batcher.add(event);
        self.batcher.spawn_write();
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
        audit.log().records(filter).await
    }
}
