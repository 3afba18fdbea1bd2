//! The audit-log conformance suite on the in-memory log.

use llm_accounting_core::MemoryAuditLog;
use llm_accounting_core::conformance;

#[tokio::test]
async fn audit_conformance_in_memory() {
    let log = MemoryAuditLog::new();
    conformance::audit::run(&log).await;
    // Again on the same log: it already holds rows.
    conformance::audit::run(&log).await;
}
