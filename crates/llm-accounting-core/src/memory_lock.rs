//! Keeping decrypted keys out of swap, best effort.
//!
//! Each key the cache holds has its pages locked in RAM (`mlock`). Locks are never released:
//! `munlock` works on whole pages and does not nest, so unlocking one key's pages would also
//! unlock another key sharing a page. The locked set is therefore the heap pages that ever held
//! a cached key, bounded by the process's `RLIMIT_MEMLOCK`. When locking is not allowed (the
//! limit is reached, or the platform refuses), it is reported once as a warning and not tried
//! again; keys are still wiped on eviction either way.

use std::sync::atomic::{AtomicBool, Ordering};

static REFUSED: AtomicBool = AtomicBool::new(false);

/// Locks the pages holding `secret` in RAM, if the OS allows.
pub(crate) fn lock_in_ram(secret: &[u8]) {
    if secret.is_empty() || REFUSED.load(Ordering::Relaxed) {
        return;
    }
    match region::lock(secret.as_ptr(), secret.len()) {
        // Deliberately never unlocked (see the module docs).
        Ok(guard) => std::mem::forget(guard),
        Err(e) => {
            if !REFUSED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    error = %e,
                    "could not lock decrypted API keys in RAM (mlock); they may reach swap. \
                     Raise RLIMIT_MEMLOCK (ulimit -l) or use encrypted swap"
                );
            }
        }
    }
}
