//! Azure SDK errors → [`llm_accounting_core::Error`].
//!
//! The rule: the caller learns what to do (retry later, fix permissions or the key state,
//! suspect tampering), never "no key". Only the HTTP status, Key Vault's error code and the
//! SDK's own message reach the error chain, never a request body.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use azure_core::error::ErrorKind;
use llm_accounting_core::Error;

use crate::PROVIDER_NAME;

/// Why one Key Vault call failed, in words safe to print.
#[derive(Debug)]
pub(crate) struct KeyVaultCallError {
    detail: String,
}

impl fmt::Display for KeyVaultCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Azure Key Vault: {}", self.detail)
    }
}

impl StdError for KeyVaultCallError {}

/// What a failed call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The wrapped key cannot be unwrapped: opaque integrity failure.
    Integrity,
    /// Key Vault refused: permissions, credentials, key disabled or missing.
    Refused(&'static str),
    /// Key Vault could not be reached or failed transiently: worth retrying.
    Transient,
    /// Failed in a way that retrying will not fix, but that is not a refusal.
    Broken,
    /// The request could not be made: credentials setup, configuration.
    Config,
}

/// The class of an HTTP answer. `unwrapping`: a 400 to `unwrapKey` means the ciphertext does
/// not belong to this key version (or was changed).
pub(crate) fn classify_status(status: u16, code: Option<&str>, unwrapping: bool) -> Class {
    match status {
        400 if unwrapping => Class::Integrity,
        400 => Class::Refused(
            "Key Vault rejected the request (does the key type match the wrap algorithm: \
             RSA-OAEP-256 for RSA keys, A256KW for Managed HSM AES keys?)",
        ),
        401 => Class::Refused("not authenticated to Key Vault (check the Azure credential)"),
        403 if code.is_some_and(|c| c.eq_ignore_ascii_case("KeyDisabled"))
            || code.is_some_and(|c| c.contains("Disabled")) =>
        {
            Class::Refused(
                "the key (version) is disabled; enable it in Key Vault to read and write keys \
                 again (stored keys are intact)",
            )
        }
        403 => Class::Refused(
            "access denied (grant the caller the wrapKey and unwrapKey key permissions, or the \
             Key Vault Crypto User role, on this key; a disabled key version is refused too)",
        ),
        404 => Class::Refused(
            "the key or key version was not found (wrong vault or key name, or deleted)",
        ),
        408 | 429 => Class::Transient,
        s if s >= 500 => Class::Transient,
        _ => Class::Refused("Key Vault rejected the request"),
    }
}

/// Maps a failed SDK call to an [`Error`].
pub(crate) fn map_azure_error(operation: &'static str, error: &azure_core::Error) -> Error {
    let class = match error.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => classify_status(
            u16::from(*status),
            error_code.as_deref(),
            operation == "unwrap",
        ),
        ErrorKind::Connection | ErrorKind::Io => Class::Transient,
        ErrorKind::Credential => Class::Config,
        ErrorKind::DataConversion => Class::Broken,
        _ => Class::Broken,
    };
    let detail = chain(error);
    tracing::debug!(operation, ?class, %detail, "Azure Key Vault call failed");
    into_error(operation, class, detail)
}

/// A call that answered, but not with what Key Vault promises.
pub(crate) fn broken(operation: &'static str, detail: &str) -> Error {
    into_error(operation, Class::Broken, detail.to_owned())
}

/// The Display of `error` and each of its sources, joined by ": ".
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !text.ends_with(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = e.source();
    }
    text
}

/// Builds our error for a class.
pub(crate) fn into_error(operation: &'static str, class: Class, detail: String) -> Error {
    let source: llm_accounting_core::BoxError = Arc::new(KeyVaultCallError { detail });
    match class {
        Class::Integrity => Error::integrity(),
        Class::Refused(reason) => Error::AccessDenied {
            provider: PROVIDER_NAME.to_owned(),
            operation,
            reason: reason.to_owned(),
            source: Some(source),
        },
        Class::Transient | Class::Broken => Error::ProviderUnavailable {
            provider: PROVIDER_NAME.to_owned(),
            operation,
            retryable: class == Class::Transient,
            source: Some(source),
        },
        Class::Config => Error::Config {
            message: format!(
                "Azure Key Vault provider cannot authenticate for the {operation} request"
            ),
            source: Some(source),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify_status(400, Some("BadParameter"), true),
            Class::Integrity
        );
        assert!(matches!(
            classify_status(400, None, false),
            Class::Refused(_)
        ));
        for s in [401, 403, 404, 409] {
            assert!(
                matches!(classify_status(s, None, true), Class::Refused(_)),
                "{s}"
            );
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(s, None, true), Class::Transient, "{s}");
        }
        let Class::Refused(r) = classify_status(403, Some("KeyDisabled"), true) else {
            panic!("refused")
        };
        assert!(r.contains("disabled"), "{r}");
    }

    #[test]
    fn classes_become_the_right_errors() {
        let e = |class| into_error("unwrap", class, "x".into());
        assert!(matches!(
            e(Class::Integrity),
            Error::Integrity { identity: None }
        ));
        assert!(matches!(e(Class::Refused("r")), Error::AccessDenied { .. }));
        assert!(e(Class::Transient).is_retryable());
        assert!(!e(Class::Broken).is_retryable());
        assert!(matches!(e(Class::Config), Error::Config { .. }));
    }
}
