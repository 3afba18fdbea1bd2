//! Conversions between table rows and the core's records. A row that cannot be converted is
//! a corrupted (or tampered) row: the integrity error, never "not found".

use llm_accounting_core::{
    BrokenKeyRow, Error, KeyIdentity, KeyRecord, KeyState, RecordSeal, Result, StoreKeyRecord,
    VersionRecord, VersionState, WrappedKey,
};
use sea_orm::ActiveValue::Set;
use uuid::Uuid;

use crate::entity::{api_key, api_key_version, store_key};

/// The text form of an id in the tables.
pub(crate) fn uuid_text(id: Uuid) -> String {
    id.as_hyphenated().to_string()
}

/// A version number as the tables store it.
pub(crate) fn version_i32(version: u32) -> Result<i32> {
    i32::try_from(version).map_err(|_| Error::invalid("version", "it is too large"))
}

/// Converts a key row; anything unparseable is a corrupted row.
pub(crate) fn key_record(row: api_key::Model) -> Result<KeyRecord> {
    let identity =
        KeyIdentity::from_parts(&row.service, row.user_id.as_deref(), row.project.as_deref())
            .map_err(|_| Error::integrity())?;
    if identity.scope_key() != row.scope_key {
        return Err(Error::integrity());
    }
    Ok(KeyRecord {
        id: Uuid::parse_str(&row.id).map_err(|_| Error::integrity())?,
        identity,
        state: KeyState::parse(&row.state)?,
        current_version: u32::try_from(row.current_version).map_err(|_| Error::integrity())?,
        hint: row.hint,
        created_at: row.created_at,
        updated_at: row.updated_at,
        last_used_at: row.last_used_at,
        expires_at: row.expires_at,
        revision: u64::try_from(row.revision).map_err(|_| Error::integrity())?,
        seal: record_seal(row.current_digest, row.previous_digest, row.state_mac),
    })
}

/// The seal of a key row: `None` when none of its columns is set (a record written before the
/// store was sealed); otherwise whatever is there, so that a partly cleared seal fails
/// verification instead of passing for an unsealed record.
pub(crate) fn record_seal(
    current: Option<Vec<u8>>,
    previous: Option<Vec<u8>>,
    mac: Option<Vec<u8>>,
) -> Option<RecordSeal> {
    if current.is_none() && previous.is_none() && mac.is_none() {
        return None;
    }
    Some(RecordSeal {
        current: current.unwrap_or_default(),
        previous,
        mac: mac.unwrap_or_default(),
    })
}

/// A revision as the tables store it.
pub(crate) fn revision_i64(revision: u64) -> Result<i64> {
    i64::try_from(revision).map_err(|_| Error::invalid("revision", "it is too large"))
}

/// A store key row as a record; anything unparseable is a corrupted row.
pub(crate) fn store_key_record(row: store_key::Model) -> Result<StoreKeyRecord> {
    Ok(StoreKeyRecord {
        name: row.name,
        store_id: Uuid::parse_str(&row.store_id).map_err(|_| Error::integrity())?,
        wrapped: WrappedKey::new(&row.provider, row.master_key_ref, row.wrapped),
        created_at: row.created_at,
    })
}

/// What a key row that cannot be read names, as stored.
pub(crate) fn broken_row(row: &api_key::Model) -> BrokenKeyRow {
    BrokenKeyRow {
        id: row.id.clone(),
        service: row.service.clone(),
        user: row.user_id.clone(),
        project: row.project.clone(),
    }
}

/// Converts a version row; anything unparseable is a corrupted row.
pub(crate) fn version_record(row: api_key_version::Model) -> Result<VersionRecord> {
    Ok(VersionRecord {
        key_id: Uuid::parse_str(&row.key_id).map_err(|_| Error::integrity())?,
        version: u32::try_from(row.version).map_err(|_| Error::integrity())?,
        state: VersionState::parse(&row.state)?,
        envelope: row.envelope,
        provider: row.provider,
        master_key_ref: row.master_key_ref,
        hint: row.hint,
        created_at: row.created_at,
        expires_at: row.expires_at,
        retire_at: row.retire_at,
    })
}

/// A key row found by scope key must hold exactly the identity asked for (a hash collision or
/// an edited row would otherwise hand out another identity's key).
pub(crate) fn check_identity(record: &KeyRecord, identity: &KeyIdentity) -> Result<()> {
    if &record.identity == identity {
        Ok(())
    } else {
        Err(Error::integrity())
    }
}

/// A version record as a row to insert.
pub(crate) fn version_active_model(
    version: &VersionRecord,
) -> Result<api_key_version::ActiveModel> {
    Ok(api_key_version::ActiveModel {
        key_id: Set(uuid_text(version.key_id)),
        version: Set(version_i32(version.version)?),
        state: Set(version.state.as_str().to_owned()),
        envelope: Set(version.envelope.clone()),
        provider: Set(version.provider.clone()),
        master_key_ref: Set(version.master_key_ref.clone()),
        hint: Set(version.hint.clone()),
        created_at: Set(version.created_at),
        expires_at: Set(version.expires_at),
        retire_at: Set(version.retire_at),
    })
}

/// A key record as a row to insert.
pub(crate) fn key_active_model(key: &KeyRecord) -> Result<api_key::ActiveModel> {
    Ok(api_key::ActiveModel {
        id: Set(uuid_text(key.id)),
        scope_key: Set(key.identity.scope_key()),
        service: Set(key.identity.service().to_owned()),
        user_id: Set(key.identity.user().map(str::to_owned)),
        project: Set(key.identity.project().map(str::to_owned)),
        state: Set(key.state.as_str().to_owned()),
        current_version: Set(version_i32(key.current_version)?),
        hint: Set(key.hint.clone()),
        created_at: Set(key.created_at),
        updated_at: Set(key.updated_at),
        last_used_at: Set(key.last_used_at),
        expires_at: Set(key.expires_at),
        revision: Set(revision_i64(key.revision)?),
        current_digest: Set(key.seal.as_ref().map(|s| s.current.clone())),
        previous_digest: Set(key.seal.as_ref().and_then(|s| s.previous.clone())),
        state_mac: Set(key.seal.as_ref().map(|s| s.mac.clone())),
    })
}
