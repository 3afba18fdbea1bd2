//! Cloud KMS client errors → [`llm_accounting_core::Error`].
//!
//! The rule: the caller learns what to do (retry later, fix permissions or the key state,
//! suspect tampering), never "no key". Nothing here copies a request or response body: only the
//! status code, Cloud KMS's own message and transport errors reach the error chain.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use google_cloud_gax::error::CredentialsError;
use google_cloud_gax::error::rpc::Code;
use llm_accounting_core::Error;

use crate::PROVIDER_NAME;

/// Why one Cloud KMS call failed, in words safe to print.
#[derive(Debug)]
pub(crate) struct KmsCallError {
    call: &'static str,
    detail: String,
}

impl fmt::Display for KmsCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cloud KMS {}: {}", self.call, self.detail)
    }
}

impl StdError for KmsCallError {}

/// What a failed call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The ciphertext or its context do not match: opaque integrity failure.
    Integrity,
    /// Cloud KMS refused: permissions, credentials, key missing, version disabled.
    Refused(&'static str),
    /// Cloud KMS could not be reached or failed transiently: worth retrying.
    Transient,
    /// Failed in a way that retrying will not fix, but that is not a refusal.
    Broken,
    /// The request could not even be made (credentials setup, endpoint).
    Config,
}

/// The class of a status code. `decrypting`: an `INVALID_ARGUMENT` answer to `Decrypt` means
/// the ciphertext or its additional authenticated data do not match.
pub(crate) fn classify_code(code: Code, decrypting: bool) -> Class {
    match code {
        Code::InvalidArgument if decrypting => Class::Integrity,
        Code::InvalidArgument => Class::Refused(
            "Cloud KMS rejected the request (is the key a symmetric ENCRYPT_DECRYPT key?)",
        ),
        Code::PermissionDenied | Code::Unauthenticated => Class::Refused(
            "access denied (grant roles/cloudkms.cryptoKeyEncrypterDecrypter on the key to the \
             caller, and check the credentials)",
        ),
        Code::NotFound => Class::Refused(
            "the master key was not found (wrong project, location, key ring or key name, or \
             no permission to see it)",
        ),
        Code::FailedPrecondition => Class::Refused(
            "the key version is not usable in its current state (disabled, scheduled for \
             destruction or destroyed); re-enable it in Cloud KMS (stored keys are intact)",
        ),
        Code::ResourceExhausted
        | Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Aborted
        | Code::Unknown => Class::Transient,
        _ => Class::Refused("Cloud KMS rejected the request"),
    }
}

/// The Display of `error` and each of its sources, joined by ": ".
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
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

/// Maps a failed client call (`call` is the Cloud KMS method, `operation` ours) to an [`Error`].
pub(crate) fn map_gax_error(
    operation: &'static str,
    call: &'static str,
    error: &google_cloud_kms_v1::Error,
) -> Error {
    let (class, detail) = if let Some(status) = error.status() {
        let detail = format!("{} ({})", status.code.name(), status.message);
        (classify_code(status.code, call == "Decrypt"), detail)
    } else if let Some(code) = error.http_status_code() {
        // An HTTP error without a Cloud KMS status: a proxy or load balancer answered.
        let class = if code >= 500 || code == 429 {
            Class::Transient
        } else if code == 401 || code == 403 {
            Class::Refused("access denied")
        } else {
            Class::Broken
        };
        (class, format!("HTTP {code}"))
    } else if error.is_authentication() {
        let transient = error
            .source()
            .and_then(|e| e.downcast_ref::<CredentialsError>())
            .is_some_and(CredentialsError::is_transient);
        let class = if transient {
            Class::Transient
        } else {
            Class::Config
        };
        (class, chain(error))
    } else if error.is_timeout() || error.is_io() || error.is_connect() || error.is_exhausted() {
        (Class::Transient, chain(error))
    } else if error.is_binding() || error.is_serialization() {
        (Class::Config, chain(error))
    } else if error.is_deserialization() {
        (Class::Broken, chain(error))
    } else {
        (Class::Transient, chain(error))
    };
    tracing::debug!(operation, call, ?class, %detail, "Cloud KMS call failed");
    into_error(operation, class, KmsCallError { call, detail })
}

/// A call that answered, but not with what Cloud KMS promises.
pub(crate) fn broken(operation: &'static str, call: &'static str, detail: &str) -> Error {
    into_error(
        operation,
        Class::Broken,
        KmsCallError {
            call,
            detail: detail.to_owned(),
        },
    )
}

/// Builds our error for a class.
pub(crate) fn into_error(operation: &'static str, class: Class, source: KmsCallError) -> Error {
    let source: llm_accounting_core::BoxError = Arc::new(source);
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
            message: format!("Google Cloud KMS provider cannot make the {operation} request"),
            source: Some(source),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(classify_code(Code::InvalidArgument, true), Class::Integrity);
        assert!(matches!(
            classify_code(Code::InvalidArgument, false),
            Class::Refused(_)
        ));
        for code in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::FailedPrecondition,
        ] {
            assert!(
                matches!(classify_code(code, true), Class::Refused(_)),
                "{code:?}"
            );
        }
        for code in [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
        ] {
            assert_eq!(classify_code(code, true), Class::Transient, "{code:?}");
        }
    }

    #[test]
    fn classes_become_the_right_errors() {
        let e = |class| {
            into_error(
                "unwrap",
                class,
                KmsCallError {
                    call: "Decrypt",
                    detail: "x".into(),
                },
            )
        };
        assert!(matches!(
            e(Class::Integrity),
            Error::Integrity { identity: None }
        ));
        assert!(matches!(e(Class::Refused("r")), Error::AccessDenied { .. }));
        let t = e(Class::Transient);
        assert!(t.is_retryable() && matches!(t, Error::ProviderUnavailable { .. }));
        let b = e(Class::Broken);
        assert!(!b.is_retryable() && matches!(b, Error::ProviderUnavailable { .. }));
        assert!(matches!(e(Class::Config), Error::Config { .. }));
    }
}
