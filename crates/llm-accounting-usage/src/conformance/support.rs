//! What the conformance checks share: times, new limits, clearing limits.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{LimitKind, NewLimit, QuotaDecision, Scope, UsageStore, Window};

/// The lifetime of the checks' reservations.
pub(super) const TTL: Duration = Duration::from_secs(600);

/// An RFC 3339 time.
pub(super) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A new limit.
pub(super) fn limit(scope: Scope, kind: LimitKind, max: u64, window: Window) -> NewLimit {
    NewLimit {
        scope,
        kind,
        max,
        window,
    }
}

/// Deletes every limit.
pub(super) async fn clear_limits(store: &dyn UsageStore) {
    for l in store.limits().await.unwrap() {
        assert!(store.delete_limit(l.id).await.unwrap());
    }
}

/// Whether the call was refused.
pub(super) fn denied(d: &QuotaDecision) -> bool {
    !d.is_allowed()
}
