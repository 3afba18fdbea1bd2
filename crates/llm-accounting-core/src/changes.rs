//! Changes committed by any process, pushed to every manager on the same store.
//!
//! On PostgreSQL every committed key change publishes a notification in its own transaction
//! (delivered at commit), and each manager built with a [`ChangeFeed`] listens for them: a
//! rotate, disable, delete, rewrap or expiry change made anywhere drops the cached entry here
//! at once, instead of at the next poll of the cache refresh
//! ([`CacheOptions::refresh_interval`](crate::CacheOptions::refresh_interval)). While the feed
//! is down the manager polls at that interval, and it says so in the log; it reconnects with
//! a growing pause and says when notifications are back. Stores without a feed (SQLite,
//! MySQL/MariaDB) keep polling.
//!
//! A notification carries one [`Change`]: a kind and an id, `kind:id`. `key:<record id>` is
//! the manager's own; `branch:<branch id>` is reserved for branch keys; other kinds travel
//! the same way. Code that caches something else derived from the store (such as unwrapped
//! branch keys) registers a [`ChangeSubscriber`] with
//! [`SecureKeyManager::subscribe_changes`](crate::SecureKeyManager::subscribe_changes) and
//! evicts what a change names; it is also told when the feed (re)connects, since changes may
//! have been missed while it was down.

use std::fmt::{self, Debug};

use async_trait::async_trait;
use uuid::Uuid;

use crate::Result;

/// A change committed to the store, as a notification carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Change {
    /// A key record changed: stored, rotated, disabled, enabled, deleted, rewrapped, or its
    /// expiry (`key:<record id>`).
    Key(Uuid),
    /// A branch key changed (`branch:<branch id>`).
    Branch(String),
    /// Another kind of change (`<kind>:<id>`), passed on to subscribers as it came.
    Other {
        /// The kind, before the first `:`.
        kind: String,
        /// The rest.
        id: String,
    },
}

impl Change {
    /// The notification payload: `kind:id`.
    pub fn payload(&self) -> String {
        self.to_string()
    }

    /// Reads a payload; `None` when it has no kind, or a `key:` id that is not a UUID.
    pub fn parse(payload: &str) -> Option<Change> {
        let (kind, id) = payload.split_once(':')?;
        if kind.is_empty() {
            return None;
        }
        Some(match kind {
            "key" => Change::Key(Uuid::parse_str(id).ok()?),
            "branch" => Change::Branch(id.to_owned()),
            _ => Change::Other {
                kind: kind.to_owned(),
                id: id.to_owned(),
            },
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Key(id) => write!(f, "key:{}", id.as_hyphenated()),
            Change::Branch(id) => write!(f, "branch:{id}"),
            Change::Other { kind, id } => write!(f, "{kind}:{id}"),
        }
    }
}

/// Where a manager hears of changes committed by any process (the PostgreSQL store's
/// LISTEN/NOTIFY feed).
#[async_trait]
pub trait ChangeFeed: Send + Sync + Debug {
    /// Starts listening. Every change committed after this returns is delivered by the
    /// stream, until the stream ends.
    async fn subscribe(&self) -> Result<Box<dyn ChangeStream>>;
}

/// One subscription of a [`ChangeFeed`].
#[async_trait]
pub trait ChangeStream: Send + Debug {
    /// The next change. `Ok(None)` or an error: the connection was lost, changes may have
    /// been missed, and the stream is over (subscribe again).
    async fn next(&mut self) -> Result<Option<Change>>;
}

/// Told of the changes a manager's feed delivers (see the [module](self) documentation).
/// Called on the listener's task: keep it short, and never block.
pub trait ChangeSubscriber: Send + Sync + Debug {
    /// A change was committed (by this process or another).
    fn changed(&self, change: &Change);

    /// The feed (re)connected after being down or before its first subscription: changes
    /// made meanwhile were not delivered. Re-check or drop what is cached.
    fn resync(&self) {}

    /// The feed went down: until [`ChangeSubscriber::resync`], no change is delivered.
    fn lost(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let id = Uuid::new_v4();
        for change in [
            Change::Key(id),
            Change::Branch("b-1:v2".into()),
            Change::Other {
                kind: "quota".into(),
                id: "x".into(),
            },
        ] {
            assert_eq!(Change::parse(&change.payload()), Some(change));
        }
        assert_eq!(Change::parse(&format!("key:{id}")), Some(Change::Key(id)));
        assert_eq!(Change::parse("key:not-a-uuid"), None);
        assert_eq!(Change::parse("no kind"), None);
        assert_eq!(Change::parse(":x"), None);
    }
}
