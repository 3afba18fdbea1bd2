//! The encryption context that binds a ciphertext to its record.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::KeyIdentity;

/// The envelope format version written by this release.
pub const FORMAT_VERSION: u8 = 1;

/// What a ciphertext is bound to: the record's stable id, its identity, the key version and the
/// envelope format. It is the AEAD associated data of the sealed API key and is passed to the
/// KMS when the data key is wrapped (AWS `EncryptionContext`, GCP additional authenticated data,
/// local AES-GCM AAD), so a ciphertext moved to another row, identity or version fails to open.
///
/// A store's own state key (see [`EncryptionContext::store_key`]) has a context of its own
/// that no record's context can equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionContext {
    record_id: Uuid,
    identity: KeyIdentity,
    version: u32,
    format: u8,
    purpose: Purpose,
}

/// What a wrapped key protects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    /// The data key of one version of an API key.
    Record,
    /// The store's state key, which authenticates record state and the audit trail.
    StoreKey,
    /// A key a layer keeps for itself (the branch keys of [`crate::branch`]): the purpose's
    /// name, the name of the field that carries the key's id, and the layer's own fields.
    LayerKey {
        name: &'static str,
        id_field: &'static str,
        fields: BTreeMap<&'static str, String>,
    },
}

/// The service name a store key's context carries (never a record's: records are not given
/// the store's id).
const STORE_KEY_SERVICE: &str = "llm-accounting";

impl EncryptionContext {
    /// The context of version `version` of record `record_id`, in the current format.
    pub fn new(record_id: Uuid, identity: KeyIdentity, version: u32) -> Self {
        EncryptionContext {
            record_id,
            identity,
            version,
            format: FORMAT_VERSION,
            purpose: Purpose::Record,
        }
    }

    /// The context of the state key of store `store_id` (version 1): its map names
    /// `purpose = store-key`, which no record's context has, so a store key and a record's
    /// data key can never be swapped for each other. IAM policies can tell it apart too.
    pub fn store_key(store_id: Uuid) -> Self {
        EncryptionContext {
            record_id: store_id,
            // A valid name: the identity type admits it; only the purpose marks the context.
            identity: KeyIdentity::from_parts(STORE_KEY_SERVICE, None, None)
                .unwrap_or_else(|_| unreachable!("a constant, valid name")),
            version: 1,
            format: FORMAT_VERSION,
            purpose: Purpose::StoreKey,
        }
    }

    /// The context of version `version` of key `id` that a layer keeps for itself (the
    /// branch keys of [`crate::branch`]). Its map names `purpose`, which no record's context
    /// has (and which must not be `store-key`, a store key's), `id_field` = the id, the layer's
    /// `fields` (under a record's field names where they mean the same, `service`, `user`,
    /// `project`, so that IAM policies can condition on them as on records'), `version` and
    /// `format`. A field named like one of those is overridden by it.
    pub fn layer_key(
        purpose: &'static str,
        id_field: &'static str,
        id: Uuid,
        version: u32,
        fields: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Self {
        debug_assert_ne!(purpose, "store-key", "a store key's purpose");
        EncryptionContext {
            record_id: id,
            identity: KeyIdentity::from_parts(STORE_KEY_SERVICE, None, None)
                .unwrap_or_else(|_| unreachable!("a constant, valid name")),
            version,
            format: FORMAT_VERSION,
            purpose: Purpose::LayerKey {
                name: purpose,
                id_field,
                fields: fields.into_iter().collect(),
            },
        }
    }

    /// Whether this is a store key's context rather than a record's.
    pub fn is_store_key(&self) -> bool {
        self.purpose == Purpose::StoreKey
    }

    /// Whether this is a record's context (not a store key's or a layer's key's).
    pub fn is_record(&self) -> bool {
        self.purpose == Purpose::Record
    }

    /// The record id.
    pub fn record_id(&self) -> Uuid {
        self.record_id
    }

    /// The identity.
    pub fn identity(&self) -> &KeyIdentity {
        &self.identity
    }

    /// The key version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The envelope format version.
    pub fn format(&self) -> u8 {
        self.format
    }

    /// The context as string pairs, as handed to KMSs that take a map (AWS) and as shown in their
    /// audit logs. Absent user or project are left out, so they differ from any named value.
    pub fn to_map(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        m.insert("format", self.format.to_string());
        match &self.purpose {
            Purpose::Record => {}
            Purpose::StoreKey => {
                m.insert("purpose", "store-key".to_owned());
                m.insert("store", self.record_id.hyphenated().to_string());
                m.insert("version", self.version.to_string());
                return m;
            }
            Purpose::LayerKey {
                name,
                id_field,
                fields,
            } => {
                m.extend(fields.iter().map(|(k, v)| (*k, v.clone())));
                m.insert("format", self.format.to_string());
                m.insert("purpose", (*name).to_owned());
                m.insert(id_field, self.record_id.hyphenated().to_string());
                m.insert("version", self.version.to_string());
                return m;
            }
        }
        m.insert("record", self.record_id.hyphenated().to_string());
        m.insert("service", self.identity.service().to_owned());
        if let Some(u) = self.identity.user() {
            m.insert("user", u.to_owned());
        }
        if let Some(p) = self.identity.project() {
            m.insert("project", p.to_owned());
        }
        m.insert("version", self.version.to_string());
        m
    }

    /// The canonical byte encoding: a domain tag, the number of pairs, then each pair of
    /// [`EncryptionContext::to_map`] in sorted order with 32-bit big-endian length prefixes.
    /// No two different contexts encode to the same bytes (`a_b`+`c` differs from `a`+`b_c`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let map = self.to_map();
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"llm-accounting/context/v1");
        out.extend_from_slice(&(map.len() as u32).to_be_bytes());
        for (k, v) in &map {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx(s: &str, u: Option<&str>, p: Option<&str>, v: u32) -> EncryptionContext {
        EncryptionContext::new(
            Uuid::nil(),
            KeyIdentity::from_parts(s, u, p).expect("valid"),
            v,
        )
    }

    #[test]
    fn separators_are_unambiguous() {
        assert_ne!(
            ctx("a_b", Some("c"), None, 1).canonical_bytes(),
            ctx("a", Some("b_c"), None, 1).canonical_bytes()
        );
        assert_ne!(
            ctx("a", None, None, 1).canonical_bytes(),
            ctx("a", Some("global"), None, 1).canonical_bytes()
        );
        assert_ne!(
            ctx("a", Some("x"), None, 1).canonical_bytes(),
            ctx("a", None, Some("x"), 1).canonical_bytes()
        );
        assert_ne!(
            ctx("a", None, None, 1).canonical_bytes(),
            ctx("a", None, None, 11).canonical_bytes()
        );
    }

    #[test]
    fn a_store_key_context_differs_from_every_record_context() {
        let store = Uuid::new_v4();
        let k = EncryptionContext::store_key(store);
        assert!(k.is_store_key());
        let m = k.to_map();
        assert_eq!(m.get("purpose").map(String::as_str), Some("store-key"));
        assert!(!m.contains_key("service"));
        // The record with the same id, the same placeholder service and version.
        let r = EncryptionContext::new(
            store,
            KeyIdentity::from_parts(STORE_KEY_SERVICE, None, None).expect("valid"),
            1,
        );
        assert!(!r.is_store_key());
        assert_ne!(k.canonical_bytes(), r.canonical_bytes());
        assert_ne!(k, r);
    }

    proptest! {
        #[test]
        fn canonical_encoding_is_injective(
            a in "[a-z_]{1,6}", b in proptest::option::of("[a-z_]{1,6}"), c in proptest::option::of("[a-z_]{1,6}"),
            d in "[a-z_]{1,6}", e in proptest::option::of("[a-z_]{1,6}"), f in proptest::option::of("[a-z_]{1,6}"),
            v in 1u32..4, w in 1u32..4,
        ) {
            let x = ctx(&a, b.as_deref(), c.as_deref(), v);
            let y = ctx(&d, e.as_deref(), f.as_deref(), w);
            prop_assert_eq!(x == y, x.canonical_bytes() == y.canonical_bytes());
        }
    }
}
