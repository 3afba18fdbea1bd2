//! Authenticated record state: what decides which value is served is covered by a MAC under a
//! key the database does not hold.
//!
//! The AEAD of each envelope only authenticates the ciphertext: on its own it cannot stop a
//! database writer from setting a key's `current_version` back to a rotated-out value, turning
//! a disabled key active again, clearing an expiry or a retirement. So every key record carries
//! a [`RecordSeal`]:
//!
//! - a digest of each version that can be served: the current one, and the latest previous
//!   one (what `get_previous` serves during its grace period): version number, expiry,
//!   retirement time, provider and master-key reference ([`version_digest`]);
//! - an HMAC-SHA-256, under the store's *record key*, over the record's id, identity, state,
//!   current version, revision, hint and expiry, and both digests ([`StateKeys::seal`]).
//!
//! The record key (and the audit chain's key) are derived with HKDF-SHA-256 from one 256-bit
//! *state key*, which the KMS wraps once under a context of its own
//! ([`crate::EncryptionContext::store_key`]) and the manager unwraps once and caches. A reader
//! verifies the MAC on every load, in listings, in rewraps and when it checks cached keys;
//! any mismatch is [`Error::Integrity`]. Version envelopes themselves are not in the digest:
//! each is already bound by its AEAD to its record and version number, so swapping one can only
//! yield the same value or an integrity error.
//!
//! Timestamps enter the MAC as whole microseconds, the finest precision every supported
//! database keeps; writers truncate them to that before storing.

use std::fmt;

use chrono::{DateTime, Utc};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{DataKey, Error, KeyRecord, RecordSeal, Result, VersionRecord};

/// The name of the state key in the store's key table.
pub(crate) const STATE_KEY: &str = "state";

/// Length of a digest and of a MAC.
pub(crate) const TAG_LEN: usize = 32;

/// Something that takes bytes: a hash or a MAC.
trait Sink {
    fn take(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn take(&mut self, bytes: &[u8]) {
        Digest::update(self, bytes);
    }
}

impl Sink for Hmac<Sha256> {
    fn take(&mut self, bytes: &[u8]) {
        Mac::update(self, bytes);
    }
}

/// Writes fields into a [`Sink`]: each present field as `1, length (u64 BE), bytes`, each
/// absent one as `0`.
struct Fields<'a, S: Sink>(&'a mut S);

impl<S: Sink> Fields<'_, S> {
    fn bytes(&mut self, field: Option<&[u8]>) -> &mut Self {
        match field {
            None => self.0.take(&[0]),
            Some(b) => {
                self.0.take(&[1]);
                self.0.take(&(b.len() as u64).to_be_bytes());
                self.0.take(b);
            }
        }
        self
    }

    fn str(&mut self, field: Option<&str>) -> &mut Self {
        self.bytes(field.map(str::as_bytes))
    }

    fn u64(&mut self, n: u64) -> &mut Self {
        self.bytes(Some(&n.to_be_bytes()))
    }

    fn time(&mut self, t: Option<DateTime<Utc>>) -> &mut Self {
        self.bytes(
            t.map(|t| t.timestamp_micros().to_be_bytes())
                .as_ref()
                .map(|b| &b[..]),
        )
    }
}

/// The digest of one version's servable state: key id, version number, expiry, retirement
/// time, provider and master-key reference.
pub(crate) fn version_digest(v: &VersionRecord) -> Vec<u8> {
    let mut h = Sha256::new();
    h.take(b"llm-accounting/version-state/v1");
    Fields(&mut h)
        .bytes(Some(v.key_id.as_bytes()))
        .u64(u64::from(v.version))
        .time(v.expires_at)
        .time(v.retire_at)
        .str(Some(&v.provider))
        .str(Some(&v.master_key_ref));
    h.finalize().to_vec()
}

/// The keys derived from a store's state key: one for record seals, one for the audit chain,
/// and the root of the keys other components derive for their own purposes
/// ([`StateKeys::purpose_key`]). All are wiped on drop; `Debug` shows nothing.
pub(crate) struct StateKeys {
    record: Zeroizing<[u8; TAG_LEN]>,
    audit: Zeroizing<[u8; TAG_LEN]>,
    purposes: Zeroizing<[u8; TAG_LEN]>,
}

impl fmt::Debug for StateKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKeys([REDACTED])")
    }
}

impl StateKeys {
    /// Derives the keys from the unwrapped state key (HKDF-SHA-256, one `info` per use).
    pub(crate) fn derive(root: &DataKey) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"llm-accounting/state-key/v1"), root.expose_secret());
        let mut record = Zeroizing::new([0u8; TAG_LEN]);
        let mut audit = Zeroizing::new([0u8; TAG_LEN]);
        let mut purposes = Zeroizing::new([0u8; TAG_LEN]);
        // 32 bytes is far below HKDF-SHA-256's limit of 255 x 32: expand cannot fail.
        let ok = hk.expand(b"record-state", record.as_mut_slice()).is_ok()
            && hk.expand(b"audit-chain", audit.as_mut_slice()).is_ok()
            && hk.expand(b"purposes", purposes.as_mut_slice()).is_ok();
        debug_assert!(ok, "HKDF expand of 32 bytes");
        StateKeys {
            record,
            audit,
            purposes,
        }
    }

    /// A key of its own for `purpose` (HKDF-SHA-256 from the purposes root, `info` = the
    /// purpose): independent of the record and audit keys and of every other purpose's.
    pub(crate) fn purpose_key(&self, purpose: &str) -> Result<DataKey> {
        let hk =
            Hkdf::<Sha256>::from_prk(self.purposes.as_slice()).map_err(|_| Error::integrity())?;
        let mut out = Zeroizing::new(vec![0u8; crate::DATA_KEY_LEN]);
        hk.expand(purpose.as_bytes(), out.as_mut_slice())
            .map_err(|_| Error::integrity())?;
        DataKey::from_zeroizing(out)
    }

    /// The audit chain's key.
    #[allow(dead_code)]
    pub(crate) fn audit_key(&self) -> &[u8; TAG_LEN] {
        &self.audit
    }

    fn record_mac(&self, key: &KeyRecord, current: &[u8], previous: Option<&[u8]>) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.record.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.take(b"llm-accounting/record-state/v1");
        Fields(&mut mac)
            .bytes(Some(key.id.as_bytes()))
            .str(Some(key.identity.service()))
            .str(key.identity.user())
            .str(key.identity.project())
            .str(Some(key.state.as_str()))
            .u64(u64::from(key.current_version))
            .u64(key.revision)
            .str(key.hint.as_deref())
            .time(key.expires_at)
            .bytes(Some(current))
            .bytes(previous);
        mac
    }

    /// The seal of `key` (as it will be stored: its state, current version, revision, hint
    /// and expiry), given the digests of its current and latest previous versions.
    pub(crate) fn seal(
        &self,
        key: &KeyRecord,
        current: Vec<u8>,
        previous: Option<Vec<u8>>,
    ) -> RecordSeal {
        let mac = self
            .record_mac(key, &current, previous.as_deref())
            .finalize()
            .into_bytes()
            .to_vec();
        RecordSeal {
            current,
            previous,
            mac,
        }
    }

    /// Checks the seal of `key`: present, and its MAC matches (in constant time).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when the seal is missing or does not match.
    pub(crate) fn verify<'k>(&self, key: &'k KeyRecord) -> Result<&'k RecordSeal> {
        let seal = key.seal.as_ref().ok_or_else(Error::integrity)?;
        self.record_mac(key, &seal.current, seal.previous.as_deref())
            .verify_slice(&seal.mac)
            .map_err(|_| Error::integrity())?;
        Ok(seal)
    }
}

/// Checks that `version` is the one `seal` names as current.
pub(crate) fn check_current(seal: &RecordSeal, version: &VersionRecord) -> Result<()> {
    if version_digest(version) == seal.current {
        Ok(())
    } else {
        Err(Error::integrity())
    }
}

/// Checks that `version` is the one `seal` names as the latest previous version.
pub(crate) fn check_previous(seal: &RecordSeal, version: &VersionRecord) -> Result<()> {
    match &seal.previous {
        Some(d) if *d == version_digest(version) => Ok(()),
        _ => Err(Error::integrity()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::SubsecRound;
    use uuid::Uuid;

    use super::*;
    use crate::{KeyIdentity, KeyState, VersionState};

    fn keys() -> StateKeys {
        StateKeys::derive(&DataKey::from_slice(&[7u8; 32]).expect("32 bytes"))
    }

    fn record() -> KeyRecord {
        let now = Utc::now().trunc_subsecs(6);
        KeyRecord {
            id: Uuid::new_v4(),
            identity: KeyIdentity::from_parts("openai", Some("alice"), None).expect("valid"),
            state: KeyState::Active,
            current_version: 2,
            hint: Some("…wxyz".into()),
            created_at: now,
            updated_at: now,
            last_used_at: None,
            expires_at: None,
            revision: 3,
            seal: None,
        }
    }

    fn version(key: &KeyRecord, n: u32) -> VersionRecord {
        VersionRecord {
            key_id: key.id,
            version: n,
            state: VersionState::Current,
            envelope: vec![1, 2, 3],
            provider: "local".into(),
            master_key_ref: "v1".into(),
            hint: None,
            created_at: key.created_at,
            expires_at: None,
            retire_at: None,
        }
    }

    #[test]
    fn a_sealed_record_verifies_and_every_authenticated_field_is_covered() {
        let k = keys();
        let mut r = record();
        let cur = version(&r, 2);
        let prev = VersionRecord {
            retire_at: Some(r.created_at),
            ..version(&r, 1)
        };
        r.seal = Some(k.seal(&r, version_digest(&cur), Some(version_digest(&prev))));
        let seal = k.verify(&r).expect("intact").clone();
        check_current(&seal, &cur).expect("current");
        check_previous(&seal, &prev).expect("previous");
        assert!(check_current(&seal, &prev).is_err());
        assert!(check_previous(&seal, &cur).is_err());

        type Edit = Box<dyn Fn(&mut KeyRecord)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("state", Box::new(|r| r.state = KeyState::Disabled)),
            ("current_version", Box::new(|r| r.current_version = 1)),
            ("revision", Box::new(|r| r.revision = 2)),
            ("hint", Box::new(|r| r.hint = None)),
            (
                "expires_at",
                Box::new(|r| r.expires_at = Some(r.created_at)),
            ),
            ("id", Box::new(|r| r.id = Uuid::new_v4())),
            (
                "identity",
                Box::new(|r| r.identity = KeyIdentity::new("openaj").expect("valid")),
            ),
            (
                "previous",
                Box::new(|r| r.seal.as_mut().expect("s").previous = None),
            ),
            (
                "current",
                Box::new(|r| r.seal.as_mut().expect("s").current[0] ^= 1),
            ),
            (
                "mac",
                Box::new(|r| r.seal.as_mut().expect("s").mac[31] ^= 1),
            ),
            ("no seal", Box::new(|r| r.seal = None)),
        ];
        for (what, edit) in edits {
            let mut t = r.clone();
            edit(&mut t);
            assert!(
                matches!(k.verify(&t), Err(Error::Integrity { .. })),
                "{what} changed"
            );
        }
        // Unauthenticated metadata may change.
        let mut t = r.clone();
        t.last_used_at = Some(Utc::now());
        t.updated_at = Utc::now();
        k.verify(&t)
            .expect("last use and update times are not authenticated");
        // Another store's keys do not verify it.
        let other = StateKeys::derive(&DataKey::from_slice(&[8u8; 32]).expect("32 bytes"));
        assert!(other.verify(&r).is_err());
    }

    #[test]
    fn version_digests_cover_the_servable_state() {
        let r = record();
        let v = version(&r, 2);
        let d = version_digest(&v);
        for t in [
            VersionRecord {
                version: 3,
                ..v.clone()
            },
            VersionRecord {
                expires_at: Some(r.created_at),
                ..v.clone()
            },
            VersionRecord {
                retire_at: Some(r.created_at),
                ..v.clone()
            },
            VersionRecord {
                provider: "aws".into(),
                ..v.clone()
            },
            VersionRecord {
                master_key_ref: "v2".into(),
                ..v.clone()
            },
            VersionRecord {
                key_id: Uuid::new_v4(),
                ..v.clone()
            },
        ] {
            assert_ne!(version_digest(&t), d, "{t:?}");
        }
        // The envelope and the stored state name are not part of it (see the module docs).
        let same = VersionRecord {
            envelope: vec![9],
            state: VersionState::Previous,
            ..v.clone()
        };
        assert_eq!(version_digest(&same), d);
    }

    #[test]
    fn derived_keys_differ_and_are_redacted() {
        let k = keys();
        assert_ne!(k.record.as_slice(), k.audit.as_slice());
        assert_eq!(format!("{k:?}"), "StateKeys([REDACTED])");
    }
}
