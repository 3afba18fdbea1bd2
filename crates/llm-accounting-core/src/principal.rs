//! Access boundaries: a manager bound to a principal reads only its own keys and the keys
//! shared with it, and writes only its own.
//!
//! The rule, for a principal (user U or none, project P or none) and a key (service, user u,
//! project p):
//!
//! - **read** (`get`, `get_previous`, `versions`, `list`): `u` is absent or U, and `p` is absent
//!   or P. So a principal reads its own keys, its project's shared keys (no user), its own
//!   personal keys (no project) and the service's global keys (no user, no project): the keys
//!   stored at a wider scope are the ones explicitly shared. It never reads another user's or
//!   another project's key.
//! - **write** (`store`, `rotate`, `disable`, `enable`, `delete`): exactly its own scope, `u ==
//!   U` and `p == P`; shared keys are managed by an unbound manager (an administrator).
//!
//! A refusal is [`crate::Error::Forbidden`], before any store or KMS access. This is a
//! boundary inside one process; across processes and hosts, combine it with KMS-side controls:
//! with AWS KMS, IAM conditions on `kms:EncryptionContext:user` / `:project` make KMS itself
//! refuse to unwrap another user's data key, whatever the calling code does.

use std::fmt;

use crate::{Error, KeyIdentity, Result};

/// Who a bound manager acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Principal {
    user: Option<String>,
    project: Option<String>,
}

impl Principal {
    /// A principal with a user and/or a project (each validated like identity names).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad name.
    pub fn new(user: Option<&str>, project: Option<&str>) -> Result<Self> {
        if let Some(u) = user {
            crate::validate_name("user", u)?;
        }
        if let Some(p) = project {
            crate::validate_name("project", p)?;
        }
        Ok(Principal {
            user: user.map(str::to_owned),
            project: project.map(str::to_owned),
        })
    }

    /// The user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The project, if any.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// Whether this principal may read the key of `identity`.
    pub fn may_read(&self, identity: &KeyIdentity) -> bool {
        identity.user().is_none_or(|u| Some(u) == self.user())
            && identity.project().is_none_or(|p| Some(p) == self.project())
    }

    /// Whether this principal may change the key of `identity`.
    pub fn may_write(&self, identity: &KeyIdentity) -> bool {
        identity.user() == self.user() && identity.project() == self.project()
    }

    pub(crate) fn check(&self, identity: &KeyIdentity, write: bool) -> Result<()> {
        let allowed = if write {
            self.may_write(identity)
        } else {
            self.may_read(identity)
        };
        if allowed {
            Ok(())
        } else {
            tracing::warn!(%identity, principal = %self, write, "access denied by the principal's boundary");
            Err(Error::Forbidden {
                identity: identity.to_string(),
                principal: self.to_string(),
            })
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user={} project={}",
            self.user().unwrap_or("-"),
            self.project().unwrap_or("-")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(u: Option<&str>, p: Option<&str>) -> KeyIdentity {
        KeyIdentity::from_parts("openai", u, p).expect("id")
    }

    #[test]
    fn read_and_write_rules() {
        let alice = Principal::new(Some("alice"), Some("search")).expect("principal");
        for (identity, read, write) in [
            (id(Some("alice"), Some("search")), true, true),
            (id(None, Some("search")), true, false),
            (id(Some("alice"), None), true, false),
            (id(None, None), true, false),
            (id(Some("bob"), Some("search")), false, false),
            (id(Some("bob"), None), false, false),
            (id(Some("alice"), Some("ads")), false, false),
            (id(None, Some("ads")), false, false),
        ] {
            assert_eq!(alice.may_read(&identity), read, "{identity}");
            assert_eq!(alice.may_write(&identity), write, "{identity}");
        }
        let nobody = Principal::default();
        assert!(nobody.may_read(&id(None, None)));
        assert!(!nobody.may_read(&id(Some("alice"), None)));
        assert!(Principal::new(Some(""), None).is_err());
    }
}
