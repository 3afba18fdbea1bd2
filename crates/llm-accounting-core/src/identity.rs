//! Who a stored key belongs to: (service, user, project), with user and project optional.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Longest accepted service, user or project name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// The identity of a stored key: a service (`openai`, `anthropic`, ...) and optionally the user
/// and project it belongs to. An absent user is not the same as any named user (a user literally
/// called `global` is its own identity).
///
/// Names are compared exactly (byte for byte, case-sensitive). A name must be 1 to
/// [`MAX_NAME_CHARS`] characters, contain no control characters, and have no leading or trailing
/// whitespace (databases disagree about trailing spaces; refusing them keeps every backend equal).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyIdentity {
    service: String,
    user: Option<String>,
    project: Option<String>,
}

impl KeyIdentity {
    /// An identity for `service` with no user and no project.
    pub fn new(service: impl Into<String>) -> Result<Self> {
        let service = service.into();
        validate_name("service", &service)?;
        Ok(KeyIdentity {
            service,
            user: None,
            project: None,
        })
    }

    /// Sets (or clears, with `None`) the user.
    pub fn with_user(mut self, user: Option<impl Into<String>>) -> Result<Self> {
        self.user = user.map(Into::into);
        if let Some(u) = &self.user {
            validate_name("user", u)?;
        }
        Ok(self)
    }

    /// Sets (or clears, with `None`) the project.
    pub fn with_project(mut self, project: Option<impl Into<String>>) -> Result<Self> {
        self.project = project.map(Into::into);
        if let Some(p) = &self.project {
            validate_name("project", p)?;
        }
        Ok(self)
    }

    /// Builds an identity from its three parts in one call.
    pub fn from_parts(service: &str, user: Option<&str>, project: Option<&str>) -> Result<Self> {
        KeyIdentity::new(service)?
            .with_user(user)?
            .with_project(project)
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The project, if any.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// A stable, collation-proof key for unique indexes: the lowercase hex SHA-256 of an
    /// unambiguous length-prefixed encoding of the three parts (absent and present parts are
    /// encoded differently). Every database compares it the same way, and it has no NULL.
    pub fn scope_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"llm-accounting/identity/v1");
        for part in [Some(self.service.as_str()), self.user(), self.project()] {
            match part {
                None => h.update([0u8]),
                Some(p) => {
                    h.update([1u8]);
                    h.update((p.len() as u64).to_be_bytes());
                    h.update(p.as_bytes());
                }
            }
        }
        let digest = h.finalize();
        let mut out = String::with_capacity(64);
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Checks one service, user or project name against the naming rules.
pub fn validate_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "it is empty"));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("it is {chars} characters long; the limit is {MAX_NAME_CHARS}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "it contains a control character"));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(Error::invalid(field, "it starts or ends with whitespace"));
    }
    Ok(())
}

impl fmt::Display for KeyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {:?}", self.service)?;
        if let Some(u) = &self.user {
            write!(f, ", user {u:?}")?;
        }
        if let Some(p) = &self.project {
            write!(f, ", project {p:?}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyIdentity({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(KeyIdentity::new("").is_err());
        assert!(KeyIdentity::new("open\nai").is_err());
        assert!(KeyIdentity::new("open\u{7}ai").is_err());
        assert!(KeyIdentity::new(" openai").is_err());
        assert!(KeyIdentity::new("x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(KeyIdentity::new("x".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(
            KeyIdentity::new("openai")
                .and_then(|i| i.with_user(Some("")))
                .is_err()
        );
        assert!(KeyIdentity::new("o'; DROP TABLE api_keys; --").is_ok());
        assert!(KeyIdentity::new("Ωμέγα 鍵").is_ok());
    }

    #[test]
    fn scope_key_distinguishes_absent_from_named() {
        let none = KeyIdentity::from_parts("openai", None, None).expect("valid");
        let global = KeyIdentity::from_parts("openai", Some("global"), None).expect("valid");
        let proj = KeyIdentity::from_parts("openai", None, Some("global")).expect("valid");
        assert_ne!(none.scope_key(), global.scope_key());
        assert_ne!(global.scope_key(), proj.scope_key());
        let a = KeyIdentity::from_parts("a_b", Some("c"), None).expect("valid");
        let b = KeyIdentity::from_parts("a", Some("b_c"), None).expect("valid");
        assert_ne!(a.scope_key(), b.scope_key());
        assert_eq!(none.scope_key(), none.clone().scope_key());
        assert_eq!(none.scope_key().len(), 64);
    }
}
