//! Listing with options: only the keys expiring soon, and each key's versions
//! ([`SecureKeyManager::list_with`]).

use std::time::Duration;

use chrono::Utc;

use super::lifecycle::{BrokenKey, KeyListing};
use crate::{BrokenKeyRow, ErrorKind, KeyFilter, Result, SecureKeyManager};

/// What [`SecureKeyManager::list_with`] adds to a plain [`SecureKeyManager::list`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys whose value expires within this time from now, or has expired already
    /// (keys that never expire are left out).
    pub expiring_within: Option<Duration>,
    /// Also read the versions of each listed key ([`SecureKeyManager::versions`], into
    /// [`KeyListing::versions`]); a key whose versions do not verify moves to
    /// [`KeyListing::broken`].
    pub versions: bool,
}

impl SecureKeyManager {
    /// [`SecureKeyManager::list`], then what `options` ask: [`KeyListing::matched`] counts the
    /// readable keys, then those not expiring within [`ListOptions::expiring_within`] are left
    /// out, then, with [`ListOptions::versions`], each key's versions are read (a key whose
    /// versions fail integrity is moved to [`KeyListing::broken`], after the rows the listing
    /// found broken). Audited as those operations are: one `list`, and one `versions` per key.
    ///
    /// # Errors
    ///
    /// As [`SecureKeyManager::list`]; and the first error reading a key's versions that is
    /// not an integrity error.
    pub async fn list_with(&self, filter: &KeyFilter, options: &ListOptions) -> Result<KeyListing> {
        let mut listing = self.list(filter).await?;
        listing.matched = listing.keys.len();
        if let Some(within) = options.expiring_within {
            let horizon =
                Utc::now() + chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
            listing
                .keys
                .retain(|k| k.expires_at.is_some_and(|at| at <= horizon));
        }
        if options.versions {
            let mut readable = Vec::with_capacity(listing.keys.len());
            for k in std::mem::take(&mut listing.keys) {
                match self.versions(&k.identity).await {
                    Ok(v) => {
                        listing.versions.push(v);
                        readable.push(k);
                    }
                    Err(error) if error.kind() == ErrorKind::Integrity => {
                        listing.broken.push(BrokenKey {
                            row: BrokenKeyRow {
                                id: k.id.to_string(),
                                service: k.identity.service().to_owned(),
                                user: k.identity.user().map(str::to_owned),
                                project: k.identity.project().map(str::to_owned),
                            },
                            error,
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            listing.keys = readable;
        }
        Ok(listing)
    }
}
