//! Repeated events aggregated per identity and principal per interval: one audit row with a
//! count and the first and last time, instead of one row each.
//!
//! Cache hits are such events (and quota denials will be). Counting one costs a lock and the
//! lookup of a pointer (the clock was read by the cache), where writing a row costs an
//! allocation per field and a share of a database write. Times are kept to the millisecond. Every interval (started by the first event after a quiet one) the open
//! aggregates are closed into rows and handed to the audit trail's writer; a flush closes them
//! at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use foldhash::fast::RandomState;

use crate::audit::AuditEvent;
use crate::cache::{CachedKey, Hit};
use crate::{KeyIdentity, Principal};

/// Independent locks over the open aggregates, so that hits on different keys from several
/// threads rarely wait for each other.
const SHARDS: usize = 16;

/// What is repeated: the fields every event of an aggregate shares besides the identity and
/// the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Repeat {
    operation: &'static str,
    outcome: &'static str,
    detail: &'static str,
}

/// A get served from the cache.
pub(super) const CACHE_HIT: Repeat = Repeat {
    operation: "get",
    outcome: "ok",
    detail: "cache hit",
};

/// One open aggregate.
#[derive(Debug)]
struct Slot {
    /// The cached entry whose hits these are: held weakly (it is wiped when the cache drops
    /// it), so that its address, the map key, stays unique while the slot is open.
    _entry: Weak<CachedKey>,
    identity: KeyIdentity,
    principal: Option<Arc<Principal>>,
    repeat: Repeat,
    count: u64,
    /// Cache clock (ms) of the first and the last event.
    first_ms: u64,
    last_ms: u64,
}

/// Open aggregates keyed by the address of the cached entry (one identity, one version):
/// a lookup hashes a pointer, not three names. Few slots per entry (one per principal and
/// kind of event).
type Shard = HashMap<usize, Vec<Slot>, RandomState>;

/// What became of a counted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counted {
    /// Added to an open aggregate.
    Added,
    /// Opened a new aggregate.
    Opened,
    /// Not counted: as many aggregates are open as allowed.
    Full,
}

/// Open aggregates, at most `max_open` of them, closed every `interval`.
#[derive(Debug)]
pub(super) struct Hits {
    shards: [Mutex<Shard>; SHARDS],
    open: AtomicUsize,
    max_open: usize,
    /// The cache's clock: hits carry its milliseconds, turned into UTC times on closing.
    clock: Instant,
    pub(super) interval: Duration,
    /// A task that closes the aggregates after `interval` is running.
    pub(super) timer: Arc<AtomicBool>,
}

fn same_principal(a: Option<&Arc<Principal>>, b: Option<&Arc<Principal>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

impl Hits {
    /// Aggregates closed every `interval`, at most `max_open` open, timed by the cache clock
    /// that started at `clock`.
    pub(super) fn new(interval: Duration, max_open: usize, clock: Instant) -> Self {
        Hits {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            open: AtomicUsize::new(0),
            max_open: max_open.max(1),
            clock,
            interval,
            timer: Arc::new(AtomicBool::new(false)),
        }
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one `repeat` event, served by `hit`, on `identity` by `principal`.
    pub(super) fn count(
        &self,
        hit: &Hit,
        identity: &KeyIdentity,
        principal: Option<&Arc<Principal>>,
        repeat: Repeat,
    ) -> Counted {
        let key = Arc::as_ptr(&hit.entry) as usize;
        // Entries are allocated at least 8 bytes apart.
        let mut shard = self.shard((key >> 4) % SHARDS);
        let slots = shard.entry(key).or_default();
        if let Some(slot) = slots
            .iter_mut()
            .find(|s| s.repeat == repeat && same_principal(s.principal.as_ref(), principal))
        {
            slot.count += 1;
            slot.last_ms = slot.last_ms.max(hit.now_ms);
            return Counted::Added;
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_open {
            self.open.fetch_sub(1, Ordering::AcqRel);
            if slots.is_empty() {
                shard.remove(&key);
            }
            return Counted::Full;
        }
        slots.push(Slot {
            _entry: Arc::downgrade(&hit.entry),
            identity: identity.clone(),
            principal: principal.cloned(),
            repeat,
            count: 1,
            first_ms: hit.now_ms,
            last_ms: hit.now_ms,
        });
        Counted::Opened
    }

    /// Whether no aggregate is open.
    pub(super) fn is_empty(&self) -> bool {
        self.open.load(Ordering::Acquire) == 0
    }

    /// Closes every open aggregate: one row each, oldest first. A row of one event is a plain
    /// event row.
    pub(super) fn close(&self) -> Vec<AuditEvent> {
        let now = Utc::now();
        let now_ms = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let at = |ms: u64| {
            let ago = i64::try_from(now_ms.saturating_sub(ms)).unwrap_or(i64::MAX);
            (now - chrono::Duration::milliseconds(ago)).trunc_subsecs(6)
        };
        let mut rows: Vec<(u64, AuditEvent)> = Vec::new();
        for i in 0..SHARDS {
            let shard = std::mem::take(&mut *self.shard(i));
            for s in shard.into_values().flatten() {
                self.open.fetch_sub(1, Ordering::AcqRel);
                let principal = s
                    .principal
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |p| p.to_string());
                let mut row = AuditEvent::now(s.repeat.operation, Some(&s.identity), &principal)
                    .detail(s.repeat.detail);
                s.repeat.outcome.clone_into(&mut row.outcome);
                row.at = at(s.last_ms);
                if s.count > 1 {
                    row = row.aggregated(s.count, at(s.first_ms));
                }
                rows.push((s.first_ms, row));
            }
        }
        rows.sort_by_key(|(first, _)| *first);
        rows.into_iter().map(|(_, row)| row).collect()
    }
}
