//! An in-memory [`KeyRepository`], for unit tests and examples. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::branch::{BranchKeyRecord, BranchKeyStore, BranchScope};
use crate::{
    Error, Journal, KeyChange, KeyFilter, KeyIdentity, KeyRecord, KeyRepository, KeyState,
    KeyWrite, Listed, LoadedCurrent, Result, StoreKeyRecord, VersionRecord, VersionState,
    WrappedKey,
};

/// A [`KeyRepository`] in a `Mutex<HashMap>`. Passes the repository conformance suite.
#[derive(Debug, Default)]
pub struct MemoryKeyRepository {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<Uuid, KeyRecord>,
    by_identity: HashMap<KeyIdentity, Uuid>,
    versions: HashMap<(Uuid, u32), VersionRecord>,
    store_keys: HashMap<String, StoreKeyRecord>,
    branch_keys: BTreeMap<(Uuid, u32), BranchKeyRecord>,
}

/// The memory repository keeps no audit trail of its own: a journal is a mistake of the
/// caller's setup, never silently dropped.
fn no_journal(journal: Option<&Journal>) -> Result<()> {
    match journal {
        None => Ok(()),
        Some(_) => Err(Error::config(
            "the in-memory repository keeps no audit trail: its audit rows cannot be written in \
             the key change's transaction",
        )),
    }
}

/// Moves a key record forward as `write` says, if its revision is the expected one.
fn apply(k: &mut KeyRecord, write: &KeyWrite) -> bool {
    if k.revision != write.expected_revision {
        return false;
    }
    k.revision = write.expected_revision + 1;
    k.seal = write.seal.clone();
    true
}

impl MemoryKeyRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic in another test thread; the data is still consistent
        // because every change below is applied only after all checks pass.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every version of a key (for tests).
    pub fn versions_of(&self, key_id: Uuid) -> Vec<VersionRecord> {
        let s = self.lock();
        let mut v: Vec<_> = s
            .versions
            .values()
            .filter(|v| v.key_id == key_id)
            .cloned()
            .collect();
        v.sort_by_key(|v| v.version);
        v
    }

    /// Replaces (or adds) a branch key row as it is, unchecked (for tamper tests).
    pub fn overwrite_branch_key(&self, row: BranchKeyRecord) {
        self.lock()
            .branch_keys
            .insert((row.branch_id, row.version), row);
    }

    /// Removes a branch key row (for tamper tests); returns whether it was there.
    pub fn remove_branch_key(&self, branch_id: Uuid, version: u32) -> bool {
        self.lock()
            .branch_keys
            .remove(&(branch_id, version))
            .is_some()
    }

    /// Replaces a stored version's envelope (for tamper tests).
    pub fn overwrite_envelope(&self, key_id: Uuid, version: u32, envelope: Vec<u8>) -> bool {
        let mut s = self.lock();
        match s.versions.get_mut(&(key_id, version)) {
            Some(v) => {
                v.envelope = envelope;
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl KeyRepository for MemoryKeyRepository {
    async fn load_current(
        &self,
        identity: &KeyIdentity,
    ) -> Result<Option<(KeyRecord, VersionRecord)>> {
        let s = self.lock();
        let Some(id) = s.by_identity.get(identity) else {
            return Ok(None);
        };
        let key = s.keys[id].clone();
        let v = s
            .versions
            .get(&(key.id, key.current_version))
            .cloned()
            .ok_or_else(Error::integrity)?;
        Ok(Some((key, v)))
    }

    async fn find_key(&self, identity: &KeyIdentity) -> Result<Option<KeyRecord>> {
        let s = self.lock();
        Ok(s.by_identity.get(identity).map(|id| s.keys[id].clone()))
    }

    async fn create_key(
        &self,
        key: &KeyRecord,
        first: &VersionRecord,
        journal: Option<&Journal>,
    ) -> Result<()> {
        no_journal(journal)?;
        let mut s = self.lock();
        if s.by_identity.contains_key(&key.identity) || s.keys.contains_key(&key.id) {
            return Err(Error::Conflict {
                identity: key.identity.to_string(),
            });
        }
        if first.version != 1 || key.current_version != 1 || first.key_id != key.id {
            return Err(Error::invalid("version", "a new key starts at version 1"));
        }
        s.by_identity.insert(key.identity.clone(), key.id);
        s.keys.insert(key.id, key.clone());
        s.versions.insert((key.id, 1), first.clone());
        Ok(())
    }

    async fn add_version(
        &self,
        key_id: Uuid,
        expected_current: u32,
        version: &VersionRecord,
        previous_retire_at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<()> {
        no_journal(journal)?;
        let mut s = self.lock();
        let Some(key) = s.keys.get(&key_id).cloned() else {
            return Err(Error::NotFound {
                identity: key_id.to_string(),
            });
        };
        if key.current_version != expected_current
            || key.revision != write.expected_revision
            || version.version != expected_current + 1
            || s.versions.contains_key(&(key_id, version.version))
        {
            return Err(Error::Conflict {
                identity: key.identity.to_string(),
            });
        }
        if let Some(old) = s.versions.get_mut(&(key_id, expected_current)) {
            old.state = VersionState::Previous;
            old.retire_at = Some(previous_retire_at);
        }
        s.versions
            .insert((key_id, version.version), version.clone());
        let k = s.keys.get_mut(&key_id).ok_or_else(Error::integrity)?;
        k.current_version = version.version;
        k.hint = version.hint.clone();
        k.expires_at = version.expires_at;
        k.updated_at = version.created_at;
        apply(k, write);
        Ok(())
    }

    async fn write_batch(&self, changes: &[KeyChange], journal: &[Journal]) -> Result<()> {
        no_journal(journal.first())?;
        let mut s = self.lock();
        // Every check first, against the state and the batch itself; then every change.
        let mut ids = std::collections::HashSet::new();
        let mut identities = std::collections::HashSet::new();
        for change in changes {
            if !ids.insert(change.key_id()) || !identities.insert(change.identity()) {
                return Err(Error::invalid(
                    "batch",
                    format!("{} appears twice", change.identity()),
                ));
            }
            let conflict = || Error::Conflict {
                identity: change.identity().to_string(),
            };
            match change {
                KeyChange::Create { key, first } => {
                    if first.version != 1 || key.current_version != 1 || first.key_id != key.id {
                        return Err(Error::invalid("version", "a new key starts at version 1"));
                    }
                    if s.by_identity.contains_key(&key.identity) || s.keys.contains_key(&key.id) {
                        return Err(conflict());
                    }
                }
                KeyChange::AddVersion {
                    expected_current,
                    version,
                    write,
                    ..
                } => {
                    let Some(key) = s.keys.get(&version.key_id) else {
                        return Err(Error::NotFound {
                            identity: change.identity().to_string(),
                        });
                    };
                    if key.current_version != *expected_current
                        || key.revision != write.expected_revision
                        || version.version != expected_current + 1
                        || s.versions.contains_key(&(version.key_id, version.version))
                    {
                        return Err(conflict());
                    }
                }
            }
        }
        for change in changes {
            match change {
                KeyChange::Create { key, first } => {
                    s.by_identity.insert(key.identity.clone(), key.id);
                    s.keys.insert(key.id, key.clone());
                    s.versions.insert((key.id, 1), first.clone());
                }
                KeyChange::AddVersion {
                    expected_current,
                    version,
                    previous_retire_at,
                    write,
                    ..
                } => {
                    let key_id = version.key_id;
                    if let Some(old) = s.versions.get_mut(&(key_id, *expected_current)) {
                        old.state = VersionState::Previous;
                        old.retire_at = Some(*previous_retire_at);
                    }
                    s.versions
                        .insert((key_id, version.version), version.clone());
                    let k = s.keys.get_mut(&key_id).ok_or_else(Error::integrity)?;
                    k.current_version = version.version;
                    k.hint = version.hint.clone();
                    k.expires_at = version.expires_at;
                    k.updated_at = version.created_at;
                    apply(k, write);
                }
            }
        }
        Ok(())
    }

    async fn load_current_many(&self, identities: &[KeyIdentity]) -> Result<Vec<LoadedCurrent>> {
        let s = self.lock();
        Ok(identities
            .iter()
            .map(|identity| {
                let id = s.by_identity.get(identity)?;
                let key = s.keys[id].clone();
                Some(
                    s.versions
                        .get(&(key.id, key.current_version))
                        .cloned()
                        .map(|v| (key, v))
                        .ok_or_else(Error::integrity),
                )
            })
            .collect())
    }

    async fn list_versions(&self, key_id: Uuid) -> Result<Vec<VersionRecord>> {
        let s = self.lock();
        let mut out: Vec<VersionRecord> = s
            .versions
            .values()
            .filter(|v| v.key_id == key_id)
            .cloned()
            .collect();
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    async fn retire_due(&self, key_id: Option<Uuid>, now: DateTime<Utc>) -> Result<u64> {
        let mut s = self.lock();
        let mut n = 0;
        for v in s.versions.values_mut() {
            if key_id.is_none_or(|id| id == v.key_id)
                && v.state == VersionState::Previous
                && v.retire_at.is_some_and(|at| at <= now)
            {
                v.state = VersionState::Retired;
                v.envelope.clear();
                n += 1;
            }
        }
        Ok(n)
    }

    async fn versions_to_rewrap(
        &self,
        provider: &str,
        master_key_ref: &str,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<(KeyRecord, VersionRecord)>> {
        let s = self.lock();
        let mut out: Vec<(KeyRecord, VersionRecord)> = s
            .versions
            .values()
            .filter(|v| v.state != VersionState::Retired)
            .filter(|v| v.provider != provider || v.master_key_ref != master_key_ref)
            .filter(|v| after.is_none_or(|a| (v.key_id, v.version) > a))
            .filter_map(|v| s.keys.get(&v.key_id).map(|k| (k.clone(), v.clone())))
            .collect();
        out.sort_by_key(|(_, v)| (v.key_id, v.version));
        out.truncate(limit);
        Ok(out)
    }

    async fn replace_wrapping(
        &self,
        rewrapped: &VersionRecord,
        old_provider: &str,
        old_ref: &str,
        key: Option<&KeyWrite>,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        no_journal(journal)?;
        let mut s = self.lock();
        let applies = s
            .versions
            .get(&(rewrapped.key_id, rewrapped.version))
            .is_some_and(|v| {
                v.provider == old_provider
                    && v.master_key_ref == old_ref
                    && v.state != VersionState::Retired
            });
        let key_ok = match (key, s.keys.get(&rewrapped.key_id)) {
            (None, _) => true,
            (Some(w), Some(k)) => k.revision == w.expected_revision,
            (Some(_), None) => false,
        };
        if !applies || !key_ok {
            return Ok(false);
        }
        if let (Some(w), Some(k)) = (key, s.keys.get_mut(&rewrapped.key_id)) {
            apply(k, w);
        }
        if let Some(v) = s.versions.get_mut(&(rewrapped.key_id, rewrapped.version)) {
            v.envelope = rewrapped.envelope.clone();
            v.provider = rewrapped.provider.clone();
            v.master_key_ref = rewrapped.master_key_ref.clone();
        }
        Ok(true)
    }

    async fn set_state(
        &self,
        key_id: Uuid,
        state: KeyState,
        at: DateTime<Utc>,
        write: &KeyWrite,
        journal: Option<&Journal>,
    ) -> Result<bool> {
        no_journal(journal)?;
        let mut s = self.lock();
        Ok(match s.keys.get_mut(&key_id) {
            Some(k) if k.revision == write.expected_revision => {
                k.state = state;
                k.updated_at = at;
                apply(k, write)
            }
            _ => false,
        })
    }

    async fn delete_key(&self, key_id: Uuid, journal: Option<&Journal>) -> Result<bool> {
        no_journal(journal)?;
        let mut s = self.lock();
        let Some(k) = s.keys.remove(&key_id) else {
            return Ok(false);
        };
        s.by_identity.remove(&k.identity);
        // Overwritten before it is dropped (a copy of the pattern real stores follow).
        for v in s.versions.values_mut().filter(|v| v.key_id == key_id) {
            v.envelope.fill(0);
        }
        s.versions.retain(|(id, _), _| *id != key_id);
        Ok(true)
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Listed>> {
        let s = self.lock();
        let mut out: Vec<KeyRecord> = s
            .keys
            .values()
            .filter(|k| filter.matches(&k.identity))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(out.into_iter().map(Listed::Key).collect())
    }

    async fn record_last_used(&self, uses: &[(Uuid, DateTime<Utc>)]) -> Result<()> {
        let mut s = self.lock();
        for (id, at) in uses {
            if let Some(k) = s.keys.get_mut(id)
                && k.last_used_at.is_none_or(|old| old < *at)
            {
                k.last_used_at = Some(*at);
            }
        }
        Ok(())
    }

    async fn keys_by_id(&self, key_ids: &[Uuid]) -> Result<Vec<KeyRecord>> {
        let s = self.lock();
        Ok(key_ids
            .iter()
            .filter_map(|id| s.keys.get(id))
            .cloned()
            .collect())
    }

    async fn is_empty(&self) -> Result<bool> {
        Ok(self.lock().keys.is_empty())
    }

    async fn store_key(&self, name: &str) -> Result<Option<StoreKeyRecord>> {
        Ok(self.lock().store_keys.get(name).cloned())
    }

    async fn insert_store_key(&self, key: &StoreKeyRecord) -> Result<bool> {
        let mut s = self.lock();
        if s.store_keys.contains_key(&key.name) {
            return Ok(false);
        }
        s.store_keys.insert(key.name.clone(), key.clone());
        Ok(true)
    }

    async fn replace_store_key_wrapping(
        &self,
        name: &str,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool> {
        let mut s = self.lock();
        Ok(match s.store_keys.get_mut(name) {
            Some(k)
                if k.wrapped.provider == old_provider && k.wrapped.master_key_ref == old_ref =>
            {
                k.wrapped = rewrapped.clone();
                true
            }
            _ => false,
        })
    }
}

#[async_trait]
impl BranchKeyStore for MemoryKeyRepository {
    async fn current_branch_key(&self, scope: &BranchScope) -> Result<Option<BranchKeyRecord>> {
        let wanted = scope.lookup_key();
        Ok(self
            .lock()
            .branch_keys
            .values()
            .filter(|r| r.scope.lookup_key() == wanted)
            .max_by_key(|r| r.version)
            .cloned())
    }

    async fn branch_key(&self, branch_id: Uuid, version: u32) -> Result<Option<BranchKeyRecord>> {
        Ok(self.lock().branch_keys.get(&(branch_id, version)).cloned())
    }

    async fn insert_branch_key(&self, key: &BranchKeyRecord) -> Result<bool> {
        let mut s = self.lock();
        let wanted = key.scope.lookup_key();
        let taken = s.branch_keys.contains_key(&(key.branch_id, key.version))
            || s.branch_keys
                .values()
                .any(|r| r.version == key.version && r.scope.lookup_key() == wanted);
        if taken {
            return Ok(false);
        }
        s.branch_keys
            .insert((key.branch_id, key.version), key.clone());
        Ok(true)
    }

    async fn branch_keys(
        &self,
        after: Option<(Uuid, u32)>,
        limit: usize,
    ) -> Result<Vec<BranchKeyRecord>> {
        let s = self.lock();
        let rows = s.branch_keys.iter();
        Ok(rows
            .filter(|(k, _)| after.is_none_or(|a| **k > a))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn replace_branch_key_wrapping(
        &self,
        branch_id: Uuid,
        version: u32,
        rewrapped: &WrappedKey,
        old_provider: &str,
        old_ref: &str,
    ) -> Result<bool> {
        let mut s = self.lock();
        Ok(match s.branch_keys.get_mut(&(branch_id, version)) {
            Some(r)
                if r.wrapped.provider == old_provider && r.wrapped.master_key_ref == old_ref =>
            {
                r.wrapped = rewrapped.clone();
                true
            }
            _ => false,
        })
    }
}
