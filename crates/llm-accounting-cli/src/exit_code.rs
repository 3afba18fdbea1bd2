//! Stable exit codes (documented in `--help`).

use llm_accounting::{Error, ErrorKind};

/// Success.
pub(crate) const OK: u8 = 0;
/// Anything not covered below (disabled key, KMS access denied, conflict, database error).
pub(crate) const OTHER: u8 = 1;
/// Usage error or invalid input (clap uses 2 for its own errors too).
pub(crate) const USAGE: u8 = 2;
/// No key stored under the identity.
pub(crate) const NOT_FOUND: u8 = 3;
/// Integrity check failed.
pub(crate) const INTEGRITY: u8 = 4;
/// KMS or database unavailable.
pub(crate) const UNAVAILABLE: u8 = 5;
/// The key's value expired.
pub(crate) const EXPIRED: u8 = 6;
/// A usage limit leaves no room for the call.
pub(crate) const QUOTA_EXCEEDED: u8 = 7;

/// The exit code for a failure.
pub(crate) fn for_error(error: &Error) -> u8 {
    match error.kind() {
        ErrorKind::InvalidInput => USAGE,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Integrity => INTEGRITY,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::Expired => EXPIRED,
        ErrorKind::QuotaExceeded => QUOTA_EXCEEDED,
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_kind() {
        assert_eq!(for_error(&Error::invalid("API key", "it is empty")), USAGE);
        assert_eq!(for_error(&Error::config("bad")), USAGE);
        assert_eq!(
            for_error(&Error::NotFound {
                identity: "x".into()
            }),
            NOT_FOUND
        );
        assert_eq!(for_error(&Error::integrity()), INTEGRITY);
        assert_eq!(
            for_error(&Error::DatabaseUnavailable {
                operation: "x",
                source: None
            }),
            UNAVAILABLE
        );
        assert_eq!(
            for_error(&Error::Disabled {
                identity: "x".into()
            }),
            OTHER
        );
        assert_eq!(
            for_error(&Error::Conflict {
                identity: "x".into()
            }),
            OTHER
        );
        // A failing random number generator is no usage error.
        assert_eq!(
            for_error(&Error::Random {
                source: std::sync::Arc::new(std::io::Error::other("no entropy"))
            }),
            OTHER
        );
        assert_eq!(
            for_error(&Error::QuotaExceeded {
                message: "quota exceeded".into(),
                resets_at: None,
            }),
            QUOTA_EXCEEDED
        );
        assert_eq!(QUOTA_EXCEEDED, 7);
        assert_eq!(OK, 0);
    }
}
