//! Types that hold secrets: they zeroize on drop and never print their contents.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

/// The largest API key accepted, in bytes (16 KiB: room for a service-account JSON document).
pub const MAX_API_KEY_BYTES: usize = 16 * 1024;

/// A decrypted LLM provider API key.
///
/// The text lives in one zeroizing allocation; clones share it (the cache hands out clones
/// without copying the secret), and it is wiped when the last clone is dropped. `Debug` prints
/// `ApiKey([REDACTED])`; read it through [`ApiKey::expose_secret`].
#[derive(Clone)]
pub struct ApiKey(Arc<SecretString>);

impl ApiKey {
    /// Wraps a key, taking ownership of the string. A string with spare capacity is copied
    /// into an exact-size allocation and the original is wiped, so that no shrinking
    /// reallocation leaves an unwiped copy behind.
    pub fn new(mut key: String) -> Self {
        let exact = if key.capacity() == key.len() {
            key
        } else {
            let mut exact = String::with_capacity(key.len());
            exact.push_str(&key);
            key.zeroize();
            exact
        };
        ApiKey(Arc::new(SecretString::from(exact)))
    }

    /// The key's text. The one accessor: grep for it to audit where secrets are used.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.expose_secret().len()
    }

    /// Whether the key is empty.
    pub fn is_empty(&self) -> bool {
        self.expose_secret().is_empty()
    }

    /// Checks the rules every stored key must meet: not empty or blank, at most
    /// [`MAX_API_KEY_BYTES`], no NUL byte.
    pub fn validate(&self) -> Result<()> {
        let k = self.expose_secret();
        if k.trim().is_empty() {
            return Err(Error::invalid("API key", "it is empty"));
        }
        if k.len() > MAX_API_KEY_BYTES {
            return Err(Error::invalid(
                "API key",
                format!(
                    "it is {} bytes long; the limit is {MAX_API_KEY_BYTES} bytes",
                    k.len()
                ),
            ));
        }
        if k.contains('\0') {
            return Err(Error::invalid("API key", "it contains a NUL character"));
        }
        Ok(())
    }

    /// A short non-secret hint for listings: `…` and the last four characters, only when the key
    /// is at least 16 characters long (so the hint reveals at most a quarter of it).
    pub fn hint(&self) -> Option<String> {
        let k = self.expose_secret();
        let n = k.chars().count();
        if n < 16 {
            return None;
        }
        let tail: String = k.chars().skip(n - 4).collect();
        if tail.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return None;
        }
        Some(format!("…{tail}"))
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey::new(key)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// Length of a data key in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A 256-bit data-encryption key (DEK). Zeroized on drop; `Debug` is redacted; not `Clone`.
pub struct DataKey(SecretBox<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut bytes = Box::new([0u8; DATA_KEY_LEN]);
        random_bytes(bytes.as_mut_slice())?;
        Ok(DataKey(SecretBox::new(bytes)))
    }

    /// Builds a key from exactly 32 bytes (providers use this after unwrapping). Any other
    /// length is an integrity failure: a wrapped key that unwraps to the wrong size was not
    /// made by us.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != DATA_KEY_LEN {
            return Err(Error::integrity());
        }
        let mut b = Box::new([0u8; DATA_KEY_LEN]);
        b.copy_from_slice(bytes);
        Ok(DataKey(SecretBox::new(b)))
    }

    /// Like [`DataKey::from_slice`], consuming (and wiping) a zeroizing buffer.
    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Result<Self> {
        Self::from_slice(&bytes)
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Random {
        source: Arc::new(std::io::Error::other(e.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = ApiKey::new("sk-test-FAKE-0000000000000000".into());
        assert_eq!(format!("{k:?}"), "ApiKey([REDACTED])");
        assert!(!format!("{k:#?}").contains("FAKE"));
        let d = DataKey::generate().expect("rng");
        assert_eq!(format!("{d:?}"), "DataKey([REDACTED])");
    }

    #[test]
    fn validation() {
        assert!(ApiKey::new(String::new()).validate().is_err());
        assert!(ApiKey::new("  \n".into()).validate().is_err());
        assert!(
            ApiKey::new("x".repeat(MAX_API_KEY_BYTES))
                .validate()
                .is_ok()
        );
        assert!(
            ApiKey::new("x".repeat(MAX_API_KEY_BYTES + 1))
                .validate()
                .is_err()
        );
        assert!(ApiKey::new("a\0b".into()).validate().is_err());
    }

    #[test]
    fn hint_shows_at_most_last_four() {
        assert_eq!(ApiKey::new("short-key".into()).hint(), None);
        assert_eq!(
            ApiKey::new("sk-FAKE-000000000000wxyz".into())
                .hint()
                .as_deref(),
            Some("…wxyz")
        );
    }

    #[test]
    fn data_key_length_is_checked() {
        assert!(DataKey::from_slice(&[0u8; 31]).is_err());
        assert!(DataKey::from_slice(&[0u8; 32]).is_ok());
        let a = DataKey::generate().expect("rng");
        let b = DataKey::generate().expect("rng");
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
