//! Records the repository suites write ([`super::repository`] and its batch checks).

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use crate::{
    KeyIdentity, KeyRecord, KeyState, KeyWrite, Listed, RecordSeal, VersionRecord, VersionState,
};

/// A new active key record of `identity` at version 1, revision 1.
pub(super) fn key(identity: KeyIdentity) -> KeyRecord {
    let now = Utc::now().trunc_subsecs(3);
    KeyRecord {
        id: Uuid::new_v4(),
        identity,
        state: KeyState::Active,
        current_version: 1,
        hint: Some("…abcd".into()),
        created_at: now,
        updated_at: now,
        last_used_at: None,
        expires_at: None,
        revision: 1,
        seal: None,
    }
}

/// A seal with recognisable bytes (repositories store seals; they never check them).
pub(super) fn seal(tag: u8, previous: bool) -> RecordSeal {
    RecordSeal {
        current: vec![tag; 32],
        previous: previous.then(|| vec![tag ^ 0xff; 32]),
        mac: vec![tag.wrapping_add(1); 32],
    }
}

/// A write that expects revision `expected` and leaves `seal`.
pub(super) fn write(expected: u64, seal: Option<RecordSeal>) -> KeyWrite {
    KeyWrite {
        expected_revision: expected,
        seal,
    }
}

/// The records of a listing (panics on a broken row: the suite writes none).
pub(super) fn listed_keys(rows: Vec<Listed>) -> Vec<KeyRecord> {
    rows.into_iter()
        .map(|r| match r {
            Listed::Key(k) => k,
            Listed::Broken(b) => panic!("no row of the suite is broken: {b:?}"),
        })
        .collect()
}

/// Version `version` of key `key_id`, current, with bytes recognisable by `tag`.
pub(super) fn version(key_id: Uuid, version: u32, tag: u8) -> VersionRecord {
    VersionRecord {
        key_id,
        version,
        state: VersionState::Current,
        envelope: vec![tag; 40 + version as usize],
        provider: "conformance".into(),
        master_key_ref: format!("mk-{tag}"),
        hint: Some(format!("…{tag:04}")),
        created_at: Utc::now().trunc_subsecs(3),
        expires_at: None,
        retire_at: None,
    }
}
