//! Reading values: get (through the cache), get_previous, and get_many.

use std::collections::HashMap;

use chrono::Utc;

use super::checked_envelope;
use super::rollback::Latest;
use crate::cache::{Hit, Loaded};
use crate::seal::{check_current, check_previous};
use crate::{
    ApiKey, Error, KeyIdentity, KeyRecord, KeyState, LoadedCurrent, Result, SecureKeyManager,
    VersionRecord, VersionState, envelope,
};

/// A key got, and the cache hit it came from, if it did.
type Got = Result<(ApiKey, u32, Option<Hit>)>;

impl SecureKeyManager {
    /// The current value of the key. Served from the cache when possible; otherwise read,
    /// unwrapped and decrypted once however many callers ask at the same time.
    pub async fn get(&self, identity: &KeyIdentity) -> Result<ApiKey> {
        self.get_versioned(identity).await.map(|(key, _)| key)
    }

    /// Like [`SecureKeyManager::get`], also returning the version that was served (to
    /// attribute usage to it).
    pub async fn get_versioned(&self, identity: &KeyIdentity) -> Result<(ApiKey, u32)> {
        let result = self.get_unaudited(identity).await;
        self.audit_get(identity, result).await
    }

    /// Records in the audit trail that a hand-out of `identity`'s key was refused before
    /// anything was read (a quota denial: `detail` names the limit). Nothing else happens.
    ///
    /// # Errors
    ///
    /// With a fail-closed trail, the error of writing the row.
    pub async fn audit_refusal(
        &self,
        identity: &KeyIdentity,
        kind: crate::ErrorKind,
        detail: &str,
    ) -> Result<()> {
        let mut detail = detail.to_owned();
        if detail.len() > 256 {
            let mut end = 256;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        let event = self
            .event("get", Some(identity))
            .failed(kind)
            .detail(detail);
        self.audited(event, Ok(())).await
    }

    /// Records the audit row of one get (a cache hit counted into an aggregate) and passes
    /// its key on.
    async fn audit_get(&self, identity: &KeyIdentity, result: Got) -> Result<(ApiKey, u32)> {
        let Some(audit) = &self.inner.audit else {
            return result.map(|(key, version, _)| (key, version));
        };
        if let Ok((_, _, Some(hit))) = &result
            && audit.aggregates_hits()
        {
            audit.count_hit(hit, identity, self.principal.as_ref());
            return result.map(|(key, version, _)| (key, version));
        }
        let event = self.event("get", Some(identity)).outcome(&result);
        let event = match &result {
            Ok((_, _, hit)) => event.detail(if hit.is_some() {
                "cache hit"
            } else {
                "cache miss"
            }),
            Err(_) => event,
        };
        self.audited(event, result)
            .await
            .map(|(key, version, _)| (key, version))
    }

    /// `get` without the audit row; also returns the cache hit when it was one.
    async fn get_unaudited(&self, identity: &KeyIdentity) -> Got {
        self.check_read(identity)?;
        if let Some(hit) = self.inner.cache.get(identity) {
            self.inner.last_used.note(&hit);
            return Ok((hit.entry.key.clone(), hit.entry.version, Some(hit)));
        }
        self.ensure_refresher();
        let loaded = self
            .inner
            .cache
            .get_or_load(identity, self.load(identity))
            .await?;
        self.inner.last_used.note(&loaded);
        Ok((loaded.entry.key.clone(), loaded.entry.version, None))
    }

    async fn load(&self, identity: &KeyIdentity) -> Result<Loaded> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (key, version) =
                self.inner
                    .repo
                    .load_current(identity)
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        identity: identity.to_string(),
                    })?;
            let latest = self.latest_revisions(&[key.id]).await?;
            match self.open_current(identity, key, version, &latest).await {
                // Changed by another writer while being read: read it again.
                Err(Error::Conflict { .. }) if attempt < super::conflict::MAX_WRITE_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    /// Checks a record read for `identity` and its current version as `get` does (seal,
    /// state, expiry) and decrypts the value.
    async fn open_current(
        &self,
        identity: &KeyIdentity,
        key: KeyRecord,
        version: VersionRecord,
        latest: &Latest,
    ) -> Result<Loaded> {
        // The state that decides what is served must be the state as written, and the latest.
        let seal = self
            .check_record_in(&key, latest)
            .await
            .map_err(|e| e.with_identity(identity))?;
        if let Some(seal) = seal {
            check_current(seal, &version).map_err(|e| e.with_identity(identity))?;
        }
        if version.state != VersionState::Current {
            return Err(Error::integrity().with_identity(identity));
        }
        if key.state == KeyState::Disabled {
            return Err(Error::Disabled {
                identity: identity.to_string(),
            });
        }
        check_not_expired(identity, &version)?;
        let api_key = self
            .open_version(&key, &version)
            .await
            .map_err(|e| e.with_identity(identity))?;
        tracing::debug!(%identity, version = version.version, "loaded API key");
        Ok(Loaded {
            key: api_key,
            key_id: key.id,
            version: version.version,
            expires_at: version.expires_at,
        })
    }

    /// Decrypts one stored version of `key`, checking that the row, its envelope and the
    /// requested identity agree.
    async fn open_version(&self, key: &KeyRecord, version: &VersionRecord) -> Result<ApiKey> {
        let (env, context) = checked_envelope(key, version)?;
        let provider = self.provider_named(&env.wrapped.provider)?;
        envelope::open(provider.as_ref(), &context, &env).await
    }

    /// The previous value of a rotated key, during its grace period
    /// ([`ManagerOptions::previous_grace`](crate::ManagerOptions::previous_grace)). Never cached.
    ///
    /// # Errors
    ///
    /// [`Error::NoPrevious`] when the key was never rotated or the grace period ended;
    /// [`Error::NotFound`], [`Error::Disabled`], [`Error::Expired`] as for `get`.
    pub async fn get_previous(&self, identity: &KeyIdentity) -> Result<ApiKey> {
        let result = self.get_previous_unaudited(identity).await;
        let event = self.event("get_previous", Some(identity)).outcome(&result);
        self.audited(event, result).await
    }

    async fn get_previous_unaudited(&self, identity: &KeyIdentity) -> Result<ApiKey> {
        self.check_read(identity)?;
        let key = self.require_key(identity).await?;
        let seal = self
            .check_record(&key)
            .await
            .map_err(|e| e.with_identity(identity))?;
        if key.state == KeyState::Disabled {
            return Err(Error::Disabled {
                identity: identity.to_string(),
            });
        }
        let now = Utc::now();
        let versions = self.inner.repo.list_versions(key.id).await?;
        let previous = versions
            .iter()
            .filter(|v| v.version < key.current_version)
            .max_by_key(|v| v.version);
        let no_previous = |reason: String| Error::NoPrevious {
            identity: identity.to_string(),
            reason,
        };
        let never = || no_previous("the key was never rotated".into());
        let previous = match (seal, previous) {
            // Sealed: the seal says whether there is a previous version, and which.
            (Some(seal), _) if seal.previous.is_none() => return Err(never()),
            (Some(seal), Some(previous)) => {
                check_previous(seal, previous).map_err(|e| e.with_identity(identity))?;
                previous
            }
            (Some(_), None) => return Err(Error::integrity().with_identity(identity)),
            (None, Some(previous)) => previous,
            (None, None) => return Err(never()),
        };
        let retired_at = match previous.state {
            VersionState::Retired => Some(previous.retire_at),
            _ => previous.retire_at.filter(|at| *at <= now).map(Some),
        };
        if let Some(at) = retired_at {
            if let Err(e) = self.inner.repo.retire_due(Some(key.id), now).await {
                tracing::warn!(%identity, error = %e, "could not retire old versions");
            }
            let when = at.map_or_else(String::new, |at| format!(" at {}", at.to_rfc3339()));
            return Err(no_previous(format!(
                "version {} was retired{when}, when its grace period ended",
                previous.version
            )));
        }
        check_not_expired(identity, previous)?;
        self.open_version(&key, previous)
            .await
            .map_err(|e| e.with_identity(identity))
    }

    /// The current values of many keys. Cached keys are served from the cache; the others
    /// are read from the store together, in chunked queries (not one query per key), then
    /// unwrapped up to `concurrency` at the same time, so that N cold keys cost a few reads
    /// and about N / `concurrency` KMS round trips of waiting instead of N of each.
    ///
    /// Each key is checked, cached, audited and tracked for last use as
    /// [`SecureKeyManager::get`] does it; a key asked for twice is unwrapped once, and one
    /// already being loaded by another caller is shared. Results come back in the order of
    /// `identities`, one per identity, each with its own outcome: one missing, disabled or
    /// failing key does not hide the others (a store that cannot be read fails each key not
    /// in the cache). A `concurrency` of 0 is taken as 1.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use llm_accounting_core::*;
    /// # async fn demo(manager: SecureKeyManager) -> Result<()> {
    /// let ids = vec![KeyIdentity::new("openai")?, KeyIdentity::new("anthropic")?];
    /// for (identity, key) in manager.get_many(&ids, 16).await {
    ///     match key {
    ///         Ok(key) => println!("{identity}: {} bytes", key.len()),
    ///         Err(e) => eprintln!("{identity}: {e}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_many(
        &self,
        identities: &[KeyIdentity],
        concurrency: usize,
    ) -> Vec<(KeyIdentity, Result<ApiKey>)> {
        self.get_many_versioned(identities, concurrency)
            .await
            .into_iter()
            .map(|(identity, got)| (identity, got.map(|(key, _)| key)))
            .collect()
    }

    /// Like [`SecureKeyManager::get_many`], also returning the version of each key that was
    /// served (to attribute usage to it).
    pub async fn get_many_versioned(
        &self,
        identities: &[KeyIdentity],
        concurrency: usize,
    ) -> Vec<(KeyIdentity, Result<(ApiKey, u32)>)> {
        use futures_util::stream::{self, StreamExt};

        let mut results: Vec<Option<Got>> = Vec::with_capacity(identities.len());
        // Each identity not served from the cache, once, with the positions asking for it.
        let mut misses: HashMap<&KeyIdentity, Vec<usize>> = HashMap::new();
        let mut order: Vec<&KeyIdentity> = Vec::new();
        for (i, identity) in identities.iter().enumerate() {
            if let Err(e) = self.check_read(identity) {
                results.push(Some(Err(e)));
                continue;
            }
            if let Some(hit) = self.inner.cache.get(identity) {
                self.inner.last_used.note(&hit);
                results.push(Some(Ok((
                    hit.entry.key.clone(),
                    hit.entry.version,
                    Some(hit),
                ))));
                continue;
            }
            results.push(None);
            let at = misses.entry(identity).or_default();
            if at.is_empty() {
                order.push(identity);
            }
            at.push(i);
        }
        if !order.is_empty() {
            self.ensure_refresher();
            // Taken before the read: a change made here meanwhile keeps what was read out of
            // the cache.
            let epoch = self.inner.cache.epoch();
            let asked: Vec<KeyIdentity> = order.iter().map(|i| (*i).clone()).collect();
            let loaded: Vec<Got> = match self.inner.repo.load_current_many(&asked).await {
                Err(e) => asked.iter().map(|_| Err(e.clone())).collect(),
                Ok(rows) if rows.len() != asked.len() => {
                    asked.iter().map(|_| Err(Error::integrity())).collect()
                }
                Ok(rows) => {
                    match self.latest_revisions_of(&rows).await {
                        Err(e) => asked.iter().map(|_| Err(e.clone())).collect(),
                        Ok(latest) => {
                            let latest = &latest;
                            // Owned items: see `store_many` (the future stays `Send`).
                            stream::iter(rows.into_iter().enumerate())
                                .map(|(i, row)| self.load_row(&asked[i], row, epoch, latest))
                                .buffered(concurrency.max(1))
                                .collect()
                                .await
                        }
                    }
                }
            };
            for (identity, result) in order.iter().zip(loaded) {
                for &i in &misses[identity] {
                    results[i] = Some(match &result {
                        Ok((key, version, _)) => Ok((key.clone(), *version, None)),
                        Err(e) => Err(e.clone()),
                    });
                }
            }
        }
        let mut out = Vec::with_capacity(identities.len());
        for (identity, result) in identities.iter().zip(results) {
            let result = result.unwrap_or_else(|| Err(Error::integrity()));
            out.push((identity.clone(), self.audit_get(identity, result).await));
        }
        out
    }

    /// One row of a batched read, checked, decrypted and cached as `get` does it (sharing a
    /// load of the same key already under way).
    async fn load_row(
        &self,
        identity: &KeyIdentity,
        row: LoadedCurrent,
        epoch: u64,
        latest: &Latest,
    ) -> Got {
        let load = async {
            let (key, version) = row
                .ok_or_else(|| Error::NotFound {
                    identity: identity.to_string(),
                })?
                .map_err(|e| e.with_identity(identity))?;
            match self.open_current(identity, key, version, latest).await {
                // Changed by another writer since the batch was read: read it alone.
                Err(Error::Conflict { .. }) => self.load(identity).await,
                other => other,
            }
        };
        let loaded = self
            .inner
            .cache
            .get_or_load_since(identity, epoch, load)
            .await?;
        self.inner.last_used.note(&loaded);
        Ok((loaded.entry.key.clone(), loaded.entry.version, None))
    }
}

/// Refuses a version whose value expired.
fn check_not_expired(identity: &KeyIdentity, version: &VersionRecord) -> Result<()> {
    match version.expires_at {
        Some(at) if at <= Utc::now() => Err(Error::Expired {
            identity: identity.to_string(),
            expired_at: at.to_rfc3339(),
        }),
        _ => Ok(()),
    }
}
