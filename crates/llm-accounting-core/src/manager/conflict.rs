//! Retrying a write that lost an optimistic-concurrency race (store, rotate, batches,
//! lifecycle changes and rewraps share it).

use std::time::Duration;

/// How many times a write that lost an optimistic-concurrency race is tried in all.
pub(super) const MAX_WRITE_ATTEMPTS: u32 = 8;

/// A random pause before trying a lost write again: up to 2^attempt ms (at most 128 ms), so
/// that writers racing for one key spread out instead of colliding again.
pub(super) fn conflict_backoff(attempt: u32) -> Duration {
    let mut b = [0u8; 2];
    let r = crate::random_bytes(&mut b).map_or(0, |()| u16::from_le_bytes(b));
    let cap_ms = 1u64 << attempt.min(7);
    Duration::from_micros(u64::from(r) * cap_ms * 1000 / u64::from(u16::MAX))
}
