//! Which branch a record uses: the hierarchy setting and the scope it picks from an identity.

use std::fmt;

use sha2::{Digest, Sha256};

use uuid::Uuid;

use crate::{EncryptionContext, Error, KeyIdentity, Result};

/// The purpose a branch key's [`EncryptionContext`] names.
const BRANCH_KEY_PURPOSE: &str = "branch-key";

/// How records are grouped under branch keys (`kms.hierarchy`).
///
/// Every scope but [`Hierarchy::Store`] names exactly one part of the record's identity; the
/// records whose identity lacks that part (no user, no project) share one branch of their
/// own, whose context leaves the part out, so it differs from any named value:
///
/// | hierarchy | one branch per | e.g. |
/// |---|---|---|
/// | `off` | none: every data key wrapped by the KMS (one call per key) | |
/// | `store` | the whole store | |
/// | `service` | service name | `openai` |
/// | `project` | project, across services and users (and one for records without a project) | `proj-a` |
/// | `user` | user, across services and projects (and one for records without a user) | `alice` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Hierarchy {
    /// No branch keys: the KMS wraps every data key.
    #[default]
    Off,
    /// One branch for the whole store.
    Store,
    /// One branch per service.
    Service,
    /// One branch per project.
    Project,
    /// One branch per user.
    User,
}

impl Hierarchy {
    /// Every value.
    pub const ALL: &'static [Hierarchy] = &[
        Hierarchy::Off,
        Hierarchy::Store,
        Hierarchy::Service,
        Hierarchy::Project,
        Hierarchy::User,
    ];

    /// The name in settings: `off`, `store`, `service`, `project` or `user`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Hierarchy::Off => "off",
            Hierarchy::Store => "store",
            Hierarchy::Service => "service",
            Hierarchy::Project => "project",
            Hierarchy::User => "user",
        }
    }

    /// The kind of scope branches get under this hierarchy; `None` for [`Hierarchy::Off`].
    pub const fn scope_kind(self) -> Option<ScopeKind> {
        match self {
            Hierarchy::Off => None,
            Hierarchy::Store => Some(ScopeKind::Store),
            Hierarchy::Service => Some(ScopeKind::Service),
            Hierarchy::Project => Some(ScopeKind::Project),
            Hierarchy::User => Some(ScopeKind::User),
        }
    }

    /// The scope of the branch a record of `identity` uses; `None` for [`Hierarchy::Off`].
    pub fn scope_of(self, identity: &KeyIdentity) -> Option<BranchScope> {
        let kind = self.scope_kind()?;
        let value = match kind {
            ScopeKind::Store => None,
            ScopeKind::Service => Some(identity.service()),
            ScopeKind::Project => identity.project(),
            ScopeKind::User => identity.user(),
        };
        Some(BranchScope {
            kind,
            value: value.map(str::to_owned),
        })
    }
}

impl fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a branch's scope: which part of an identity it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScopeKind {
    /// The whole store (no value).
    Store,
    /// A service.
    Service,
    /// A project.
    Project,
    /// A user.
    User,
}

impl ScopeKind {
    /// The stored name, also the key of the scope's value in the branch's KMS context
    /// (`service`, `project`, `user`, like a record's context) and `store`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Store => "store",
            ScopeKind::Service => "service",
            ScopeKind::Project => "project",
            ScopeKind::User => "user",
        }
    }

    /// Parses a stored name; anything unknown is a corrupted row.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "store" => Ok(ScopeKind::Store),
            "service" => Ok(ScopeKind::Service),
            "project" => Ok(ScopeKind::Project),
            "user" => Ok(ScopeKind::User),
            _ => Err(Error::integrity()),
        }
    }
}

/// What one branch serves: a scope kind and, except for the store, the name it is for (`None`
/// for the records without that part).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BranchScope {
    kind: ScopeKind,
    value: Option<String>,
}

impl BranchScope {
    /// A scope as stored. A store scope has no value; a value must be a valid name.
    pub fn new(kind: ScopeKind, value: Option<String>) -> Result<Self> {
        if kind == ScopeKind::Store && value.is_some() {
            return Err(Error::integrity());
        }
        if let Some(v) = &value {
            crate::validate_name(kind.as_str(), v).map_err(|_| Error::integrity())?;
        }
        Ok(BranchScope { kind, value })
    }

    /// The kind.
    pub fn kind(&self) -> ScopeKind {
        self.kind
    }

    /// The name it is for, if any.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The context version `version` of branch `branch_id`, which serves this scope, is
    /// wrapped under by the KMS (see [`crate::branch`]): its map names `purpose = branch-key`,
    /// the branch (`branch`), the scope's kind (`scope`), the scope's name under the key a
    /// record's context uses (`service`, `user`, `project`) and the version, so that IAM
    /// policies can condition on them as on records'. No record's or store key's context can
    /// equal it.
    pub fn key_context(&self, branch_id: Uuid, version: u32) -> EncryptionContext {
        let kind = self.kind.as_str();
        let fields = std::iter::once(("scope", kind.to_owned()))
            .chain(self.value.as_ref().map(|v| (kind, v.clone())));
        EncryptionContext::layer_key(BRANCH_KEY_PURPOSE, "branch", branch_id, version, fields)
    }

    /// The key under which the store finds a scope's branches: SHA-256 (hex) of the kind and
    /// value, length-prefixed, so that it fits an index on every database and no two scopes
    /// share it.
    pub fn lookup_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"llm-accounting/branch-scope/v1");
        self.encode_into(&mut |b| h.update(b));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Feeds the unambiguous encoding of the scope to `out`.
    pub(crate) fn encode_into(&self, out: &mut dyn FnMut(&[u8])) {
        let kind = self.kind.as_str().as_bytes();
        out(&(kind.len() as u32).to_be_bytes());
        out(kind);
        match &self.value {
            None => out(&[0]),
            Some(v) => {
                out(&[1]);
                out(&(v.len() as u32).to_be_bytes());
                out(v.as_bytes());
            }
        }
    }
}

impl fmt::Display for BranchScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            None if self.kind == ScopeKind::Store => f.write_str("store"),
            None => write!(f, "{} (none)", self.kind.as_str()),
            Some(v) => write!(f, "{} {v:?}", self.kind.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str, u: Option<&str>, p: Option<&str>) -> KeyIdentity {
        KeyIdentity::from_parts(s, u, p).expect("valid")
    }

    #[test]
    fn scopes_name_one_part_of_the_identity() {
        let i = id("openai", Some("alice"), Some("proj"));
        assert_eq!(Hierarchy::Off.scope_of(&i), None);
        let s = Hierarchy::Store.scope_of(&i).expect("scope");
        assert_eq!((s.kind(), s.value()), (ScopeKind::Store, None));
        let s = Hierarchy::Service.scope_of(&i).expect("scope");
        assert_eq!((s.kind(), s.value()), (ScopeKind::Service, Some("openai")));
        let s = Hierarchy::Project.scope_of(&i).expect("scope");
        assert_eq!((s.kind(), s.value()), (ScopeKind::Project, Some("proj")));
        let s = Hierarchy::User.scope_of(&i).expect("scope");
        assert_eq!((s.kind(), s.value()), (ScopeKind::User, Some("alice")));
        let none = Hierarchy::User
            .scope_of(&id("openai", None, None))
            .expect("scope");
        assert_eq!(none.value(), None);
    }

    /// The canonical encoding of a branch key's context, spelled out: branch keys already
    /// stored were wrapped under exactly these bytes.
    #[test]
    fn a_branch_key_context_encodes_as_it_always_has() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let expect = |pairs: &[(&str, &str)]| {
            let mut out = b"llm-accounting/context/v1".to_vec();
            out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs {
                for part in [k, v] {
                    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                    out.extend_from_slice(part.as_bytes());
                }
            }
            out
        };
        let branch = "01234567-89ab-cdef-0123-456789abcdef";
        let service = BranchScope::new(ScopeKind::Service, Some("openai".into())).expect("valid");
        assert_eq!(
            service.key_context(id, 3).canonical_bytes(),
            expect(&[
                ("branch", branch),
                ("format", "1"),
                ("purpose", "branch-key"),
                ("scope", "service"),
                ("service", "openai"),
                ("version", "3"),
            ])
        );
        let store = BranchScope::new(ScopeKind::Store, None).expect("valid");
        assert_eq!(
            store.key_context(id, 1).canonical_bytes(),
            expect(&[
                ("branch", branch),
                ("format", "1"),
                ("purpose", "branch-key"),
                ("scope", "store"),
                ("version", "1"),
            ])
        );
        let no_user = BranchScope::new(ScopeKind::User, None).expect("valid");
        let ctx = no_user.key_context(id, 2);
        assert!(!ctx.is_record() && !ctx.is_store_key());
        assert_ne!(ctx, store.key_context(id, 2));
        assert_eq!(
            ctx.canonical_bytes(),
            expect(&[
                ("branch", branch),
                ("format", "1"),
                ("purpose", "branch-key"),
                ("scope", "user"),
                ("version", "2"),
            ])
        );
    }

    #[test]
    fn lookup_keys_differ_between_scopes() {
        let keys = [
            BranchScope::new(ScopeKind::Store, None),
            BranchScope::new(ScopeKind::Service, Some("a".into())),
            BranchScope::new(ScopeKind::Service, None),
            BranchScope::new(ScopeKind::Project, Some("a".into())),
            BranchScope::new(ScopeKind::User, Some("a".into())),
            BranchScope::new(ScopeKind::User, None),
        ]
        .map(|s| s.expect("valid").lookup_key());
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(a.len(), 64);
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(BranchScope::new(ScopeKind::Store, Some("x".into())).is_err());
        assert!(BranchScope::new(ScopeKind::Service, Some(String::new())).is_err());
    }
}
