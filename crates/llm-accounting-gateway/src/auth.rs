//! Authentication of requests: the virtual key a request presents, checked against the keys
//! held in memory (reloaded every `gateway.key_refresh_ms`, and on PostgreSQL told of every
//! revocation at once).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use chrono::Utc;
use llm_accounting_core::{Change, ChangeSubscriber, Result};

use crate::errors::Refusal;
use crate::virtual_keys::{CHANGE_KIND, PresentedToken, VirtualKey, VirtualKeys};

/// The virtual keys in memory: `Some` for a key, `None` for an id looked up and not found
/// (until the next reload).
#[derive(Debug)]
pub struct Authenticator {
    keys: VirtualKeys,
    cache: RwLock<HashMap<i64, Option<Arc<VirtualKey>>>>,
}

impl Authenticator {
    /// An authenticator over `keys`, with every key loaded.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn start(keys: VirtualKeys) -> Result<Arc<Self>> {
        let auth = Arc::new(Authenticator {
            keys,
            cache: RwLock::new(HashMap::new()),
        });
        auth.reload().await?;
        Ok(auth)
    }

    /// Reloads every key (revocations and expiries made elsewhere are seen from now on).
    ///
    /// # Errors
    ///
    /// The database's (the keys held stay as they were).
    pub async fn reload(&self) -> Result<()> {
        let all = self.keys.list().await?;
        let map = all.into_iter().map(|k| (k.id, Some(Arc::new(k)))).collect();
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// Forgets key `id` (it is read again on its next use).
    pub fn evict(&self, id: i64) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Forgets every key.
    pub fn clear(&self) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A subscriber that keeps this authenticator told of changes.
    pub fn subscriber(self: &Arc<Self>) -> Arc<dyn ChangeSubscriber> {
        Arc::new(Subscriber(Arc::downgrade(self)))
    }

    /// The virtual key `token` belongs to, if it is one and may be used now.
    ///
    /// # Errors
    ///
    /// A 401 [`Refusal`] saying why (never echoing the token); a 503 when the key could not
    /// be looked up.
    pub async fn authenticate(&self, token: &str) -> std::result::Result<Arc<VirtualKey>, Refusal> {
        let invalid = || {
            Refusal::unauthorized(
                "invalid virtual key (send the token `llm-accounting gateway keys create` printed, \
                 as `Authorization: Bearer TOKEN` or `x-api-key: TOKEN`)",
            )
        };
        let presented = PresentedToken::parse(token).ok_or_else(invalid)?;
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&presented.id)
            .cloned();
        let key = match cached {
            Some(k) => k,
            None => {
                let found = self.keys.get(presented.id).await.map_err(|e| {
                    tracing::warn!(error = %e, "could not look up a virtual key");
                    Refusal::unavailable("the gateway cannot read its virtual keys now; try again")
                })?;
                let found = found.map(Arc::new);
                self.cache
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(presented.id, found.clone());
                found
            }
        };
        let key = key.ok_or_else(invalid)?;
        if !key.matches(self.keys.macs(), &presented) {
            return Err(invalid());
        }
        if let Err(why) = key.usable_at(Utc::now()) {
            if !key.intact {
                tracing::warn!(virtual_key = key.id, "a virtual key's row fails its MAC");
            }
            return Err(Refusal::unauthorized(why));
        }
        Ok(key)
    }
}

/// Evicts what a change names; forgets everything when changes may have been missed.
#[derive(Debug)]
struct Subscriber(Weak<Authenticator>);

impl ChangeSubscriber for Subscriber {
    fn changed(&self, change: &Change) {
        if let (Some(auth), Change::Other { kind, id }) = (self.0.upgrade(), change)
            && kind == CHANGE_KIND
            && let Ok(id) = id.parse()
        {
            auth.evict(id);
        }
    }

    fn resync(&self) {
        if let Some(auth) = self.0.upgrade() {
            auth.clear();
        }
    }
}
