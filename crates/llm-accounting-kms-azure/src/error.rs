//! Azure SDK errors → [`llm_accounting_core::Error`], through the core's [`FailureClass`].
//!
//! This module only decides what a Key Vault error *means*; the core turns that into the
//! library's error the same way for every provider. Only the HTTP status, Key Vault's error
//! code and the SDK's own message reach the error chain, never a request body.

use azure_core::error::ErrorKind;
use llm_accounting_core::{Error, FailureClass, ProviderErrors, error_chain};

use crate::PROVIDER_NAME;

/// This provider's errors: its recorded name, and its service's name in messages.
pub(crate) const ERRORS: ProviderErrors = ProviderErrors::new(PROVIDER_NAME, "Azure Key Vault");

/// The class of an HTTP answer. `unwrapping`: a 400 to `unwrapKey` means the ciphertext does
/// not belong to this key version (or was changed).
pub(crate) fn classify_status(status: u16, code: Option<&str>, unwrapping: bool) -> FailureClass {
    match status {
        400 if unwrapping => FailureClass::Integrity,
        400 => FailureClass::AccessDenied(
            "Key Vault rejected the request (does the key type match the wrap algorithm: \
             RSA-OAEP-256 for RSA keys, A256KW for Managed HSM AES keys?)",
        ),
        401 => FailureClass::AccessDenied(
            "not authenticated to Key Vault (check the Azure credential)",
        ),
        403 if code.is_some_and(|c| c.eq_ignore_ascii_case("KeyDisabled"))
            || code.is_some_and(|c| c.contains("Disabled")) =>
        {
            FailureClass::AccessDenied(
                "the key (version) is disabled; enable it in Key Vault to read and write keys \
                 again (stored keys are intact)",
            )
        }
        403 => FailureClass::AccessDenied(
            "access denied (grant the caller the wrapKey and unwrapKey key permissions, or the \
             Key Vault Crypto User role, on this key; a disabled key version is refused too)",
        ),
        404 => FailureClass::NotFound(
            "the key or key version was not found (wrong vault or key name, or deleted)",
        ),
        429 => FailureClass::Throttled,
        408 => FailureClass::Unavailable,
        s if s >= 500 => FailureClass::Unavailable,
        _ => FailureClass::AccessDenied("Key Vault rejected the request"),
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
        ErrorKind::Connection | ErrorKind::Io => FailureClass::Unavailable,
        ErrorKind::Credential => FailureClass::Config,
        ErrorKind::DataConversion => FailureClass::Broken,
        _ => FailureClass::Broken,
    };
    ERRORS.failed_service(class, operation, error_chain(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_for(status: u16, code: Option<&str>, unwrapping: bool) -> Error {
        ERRORS.failed_service(
            classify_status(status, code, unwrapping),
            "unwrap",
            format!("HTTP {status}"),
        )
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify_status(400, Some("BadParameter"), true),
            FailureClass::Integrity
        );
        assert!(matches!(
            error_for(400, None, false),
            Error::AccessDenied { .. }
        ));
        for s in [401, 403, 404, 409] {
            assert!(
                matches!(error_for(s, None, true), Error::AccessDenied { .. }),
                "{s}"
            );
        }
        assert!(matches!(
            classify_status(404, None, true),
            FailureClass::NotFound(_)
        ));
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(classify_status(s, None, true).is_retryable(), "{s}");
        }
        assert_eq!(classify_status(429, None, true), FailureClass::Throttled);
        let FailureClass::AccessDenied(r) = classify_status(403, Some("KeyDisabled"), true) else {
            panic!("refused")
        };
        assert!(r.contains("disabled"), "{r}");
    }

    #[test]
    fn statuses_become_the_right_errors() {
        assert!(matches!(
            error_for(400, None, true),
            Error::Integrity { identity: None }
        ));
        assert!(error_for(503, None, true).is_retryable());
        let b = ERRORS.failed_service(
            FailureClass::Broken,
            "wrap",
            "the wrapKey answer has no kid",
        );
        assert!(!b.is_retryable() && matches!(b, Error::ProviderUnavailable { .. }));
        assert!(
            error_chain(&b).ends_with("Azure Key Vault: the wrapKey answer has no kid"),
            "{b:?}"
        );
    }
}
