//! Probing a store without serving anything: can this manager open what is stored? For a
//! health check (`doctor`): it unwraps the store's state key and one data key per master key
//! in use, which a wrap/unwrap round trip of a fresh key cannot tell (a master key file
//! swapped for another wraps and unwraps its own keys perfectly well).

use std::collections::BTreeMap;

use super::checked_envelope;
use crate::{Error, KeyFilter, Listed, Result, SecureKeyManager, envelope};

/// What [`SecureKeyManager::probe`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProbeReport {
    /// Whether the store has a state key (it unwrapped, or the probe failed before).
    pub sealed: bool,
    /// Keys stored (readable rows).
    pub keys: u64,
    /// Distinct services among them.
    pub services: u64,
    /// Each (provider, master-key reference) the current versions are wrapped under, with
    /// the outcome of unwrapping one of its data keys (the key's value is dropped at once).
    pub master_keys: Vec<ProbedMasterKey>,
}

/// One master key in use, and whether one of its data keys unwrapped.
#[derive(Debug, Clone)]
pub struct ProbedMasterKey {
    /// The provider name recorded on the versions.
    pub provider: String,
    /// The master-key reference recorded on them.
    pub master_key_ref: String,
    /// How many current versions it wraps.
    pub versions: u64,
    /// The error of unwrapping one of them, if it failed.
    pub error: Option<Error>,
}

impl SecureKeyManager {
    /// Unwraps the store's state key (if it has one) and one data key per master key the
    /// current versions are wrapped under, and decrypts that one key (dropping it at once):
    /// the checks a health check needs to tell a wrong or missing master key. Serves nothing,
    /// caches nothing and writes no audit row. Needs an unbound manager.
    ///
    /// # Errors
    ///
    /// The state key's unwrap error (a wrong master key, KMS access), database errors, and
    /// [`Error::Forbidden`] for a bound manager. A data key that does not unwrap is in the
    /// report, not an error.
    pub async fn probe(&self) -> Result<ProbeReport> {
        self.check_unbound("probe")?;
        let mut report = ProbeReport {
            sealed: self.state_keys(true).await?.is_some(),
            ..ProbeReport::default()
        };
        let identities: Vec<_> = self
            .inner
            .repo
            .list_keys(&KeyFilter::default())
            .await?
            .into_iter()
            .filter_map(|row| match row {
                Listed::Key(k) => Some(k.identity),
                Listed::Broken(_) => None,
            })
            .collect();
        report.keys = identities.len() as u64;
        let mut services: Vec<&str> = identities.iter().map(|i| i.service()).collect();
        services.sort_unstable();
        services.dedup();
        report.services = services.len() as u64;
        let rows = self.inner.repo.load_current_many(&identities).await?;
        let mut groups: BTreeMap<(String, String), (u64, Option<_>)> = BTreeMap::new();
        for (k, v) in rows.into_iter().flatten().flatten() {
            let group = groups
                .entry((v.provider.clone(), v.master_key_ref.clone()))
                .or_insert((0, None));
            group.0 += 1;
            if group.1.is_none() {
                group.1 = Some((k, v));
            }
        }
        for ((provider, master_key_ref), (versions, sample)) in groups {
            let error = match sample {
                None => None,
                Some((k, v)) => {
                    let opened = async {
                        let (env, context) = checked_envelope(&k, &v)?;
                        let provider = self.provider_named(&env.wrapped.provider)?;
                        envelope::open(provider.as_ref(), &context, &env).await
                    }
                    .await;
                    opened.err().map(|e| e.with_identity(&k.identity))
                }
            };
            report.master_keys.push(ProbedMasterKey {
                provider,
                master_key_ref,
                versions,
                error,
            });
        }
        Ok(report)
    }
}
