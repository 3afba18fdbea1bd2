//! The branch layer's own crypto: data keys wrapped locally under a key derived from the
//! branch key, and the commitment that binds a branch row to its key.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::BranchScope;
use crate::envelope::{aead_open, aead_seal};
use crate::{DATA_KEY_LEN, DataKey, EncryptionContext, Error, Result};

/// Prefix of the master-key reference of a branch-wrapped data key: `branch/ID/vN`.
const REF_PREFIX: &str = "branch/";
/// Nonce, wrapped data key and tag.
pub(crate) const WRAPPED_LEN: usize = 12 + DATA_KEY_LEN + 16;

/// One version of one branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BranchRef {
    pub(crate) id: Uuid,
    pub(crate) version: u32,
}

impl BranchRef {
    /// The master-key reference a data key wrapped under this branch version records.
    pub(crate) fn to_master_key_ref(self) -> String {
        format!("{REF_PREFIX}{}/v{}", self.id.hyphenated(), self.version)
    }

    /// Parses [`BranchRef::to_master_key_ref`]; anything else is `None`.
    pub(crate) fn parse(master_key_ref: &str) -> Option<Self> {
        let rest = master_key_ref.strip_prefix(REF_PREFIX)?;
        let (id, version) = rest.split_once("/v")?;
        if id.len() != 36 || version.starts_with('0') {
            return None;
        }
        Some(BranchRef {
            id: Uuid::parse_str(id).ok()?,
            version: version.parse().ok()?,
        })
    }

    fn bytes(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..16].copy_from_slice(self.id.as_bytes());
        out[16..].copy_from_slice(&self.version.to_be_bytes());
        out
    }
}

/// HKDF-SHA-256 of the branch key with `info`.
fn derive(branch_key: &DataKey, info: &[&[u8]]) -> Result<Zeroizing<[u8; 32]>> {
    let hk = Hkdf::<Sha256>::new(
        Some(b"llm-accounting/branch/v1"),
        branch_key.expose_secret(),
    );
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(info, out.as_mut_slice())
        .map_err(|_| Error::integrity())?;
    Ok(out)
}

/// The associated data of a data key wrapped under `branch`.
fn wrap_aad(branch: BranchRef) -> Vec<u8> {
    let mut aad = b"llm-accounting/branch-wrap/v1".to_vec();
    aad.extend_from_slice(&branch.bytes());
    aad
}

/// Wraps `dek` for the record of `context` under version `branch` of a branch key: AES-256-GCM
/// under HKDF(branch key, branch and canonical context), branch id and version as associated
/// data. Returns nonce, wrapped key and tag.
pub(crate) fn wrap(
    branch_key: &DataKey,
    branch: BranchRef,
    dek: &DataKey,
    context: &EncryptionContext,
) -> Result<Vec<u8>> {
    let kek = derive(
        branch_key,
        &[b"dek", &branch.bytes(), &context.canonical_bytes()],
    )?;
    let (nonce, ct) = aead_seal(&kek, &wrap_aad(branch), dek.expose_secret())?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Unwraps what [`wrap`] made with the same branch key, branch and context; anything else is
/// [`Error::Integrity`].
pub(crate) fn unwrap(
    branch_key: &DataKey,
    branch: BranchRef,
    wrapped: &[u8],
    context: &EncryptionContext,
) -> Result<DataKey> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(Error::integrity());
    }
    let kek = derive(
        branch_key,
        &[b"dek", &branch.bytes(), &context.canonical_bytes()],
    )?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&wrapped[..12]);
    let plain = aead_open(&kek, &nonce, &wrap_aad(branch), &wrapped[12..])?;
    DataKey::from_zeroizing(plain)
}

/// The commitment of a branch row: HMAC-SHA-256 of its id, version and scope under a key
/// derived from its branch key.
pub(crate) fn commitment(
    branch_key: &DataKey,
    branch: BranchRef,
    scope: &BranchScope,
) -> Result<Vec<u8>> {
    Ok(commitment_mac(branch_key, branch, scope)?
        .finalize()
        .into_bytes()
        .to_vec())
}

/// Checks a row's commitment; a mismatch is [`Error::Integrity`].
pub(crate) fn check_commitment(
    branch_key: &DataKey,
    branch: BranchRef,
    scope: &BranchScope,
    commitment: &[u8],
) -> Result<()> {
    commitment_mac(branch_key, branch, scope)?
        .verify_slice(commitment)
        .map_err(|_| Error::integrity())
}

fn commitment_mac(
    branch_key: &DataKey,
    branch: BranchRef,
    scope: &BranchScope,
) -> Result<Hmac<Sha256>> {
    let key = derive(branch_key, &[b"commitment"])?;
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).map_err(|_| Error::integrity())?;
    mac.update(b"llm-accounting/branch-row/v1");
    mac.update(&branch.bytes());
    scope.encode_into(&mut |b| mac.update(b));
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyIdentity;
    use crate::branch::ScopeKind;

    fn ctx(service: &str) -> EncryptionContext {
        EncryptionContext::new(
            Uuid::from_u128(7),
            KeyIdentity::new(service).expect("valid"),
            1,
        )
    }

    #[test]
    fn references_round_trip_and_reject_the_rest() {
        let b = BranchRef {
            id: Uuid::new_v4(),
            version: 12,
        };
        assert_eq!(BranchRef::parse(&b.to_master_key_ref()), Some(b));
        for bad in [
            "",
            "branch/",
            "v1:0011",
            "branch/not-a-uuid/v1",
            &format!("branch/{}/v01", b.id),
            &format!("branch/{}/vx", b.id),
            &format!("branch/{}/v1/extra", b.id),
        ] {
            assert_eq!(BranchRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_branch_and_context() {
        let key = DataKey::generate().expect("rng");
        let other_key = DataKey::generate().expect("rng");
        let b = BranchRef {
            id: Uuid::new_v4(),
            version: 1,
        };
        let dek = DataKey::generate().expect("rng");
        let w = wrap(&key, b, &dek, &ctx("a")).expect("wrap");
        assert_eq!(w.len(), WRAPPED_LEN);
        let back = unwrap(&key, b, &w, &ctx("a")).expect("unwrap");
        assert_eq!(back.expose_secret(), dek.expose_secret());
        let fails = |r: Result<DataKey>| matches!(r, Err(Error::Integrity { .. }));
        assert!(fails(unwrap(&key, b, &w, &ctx("b"))));
        assert!(fails(unwrap(&other_key, b, &w, &ctx("a"))));
        let next = BranchRef { version: 2, ..b };
        assert!(fails(unwrap(&key, next, &w, &ctx("a"))));
        let mut flipped = w.clone();
        flipped[20] ^= 1;
        assert!(fails(unwrap(&key, b, &flipped, &ctx("a"))));
        assert!(fails(unwrap(&key, b, &w[..40], &ctx("a"))));
    }

    #[test]
    fn the_commitment_binds_id_version_and_scope() {
        let key = DataKey::generate().expect("rng");
        let b = BranchRef {
            id: Uuid::new_v4(),
            version: 1,
        };
        let s = BranchScope::new(ScopeKind::Service, Some("a".into())).expect("scope");
        let c = commitment(&key, b, &s).expect("mac");
        check_commitment(&key, b, &s, &c).expect("verifies");
        let t = BranchScope::new(ScopeKind::Service, Some("b".into())).expect("scope");
        assert!(check_commitment(&key, b, &t, &c).is_err());
        assert!(check_commitment(&key, BranchRef { version: 2, ..b }, &s, &c).is_err());
        let other = DataKey::generate().expect("rng");
        assert!(check_commitment(&other, b, &s, &c).is_err());
    }
}
