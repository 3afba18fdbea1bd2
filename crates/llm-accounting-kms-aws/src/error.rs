//! AWS SDK errors → [`llm_accounting_core::Error`].
//!
//! The rule: the caller learns what to do (retry later, fix permissions or the key state,
//! suspect tampering), never "no key". Nothing here copies a request or response body: only
//! error codes, KMS's own messages and transport errors reach the error chain.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use llm_accounting_core::Error;

use crate::PROVIDER_NAME;

/// Why one KMS call failed, in words safe to print: the KMS operation, the error code and
/// message KMS sent, or the transport failure.
#[derive(Debug)]
pub(crate) struct KmsCallError {
    call: &'static str,
    detail: String,
}

impl fmt::Display for KmsCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AWS KMS {}: {}", self.call, self.detail)
    }
}

impl StdError for KmsCallError {}

impl KmsCallError {
    pub(crate) fn new(call: &'static str, detail: impl Into<String>) -> Self {
        KmsCallError {
            call,
            detail: detail.into(),
        }
    }
}

/// What a failed call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The ciphertext, its context or its key do not match: opaque integrity failure.
    Integrity,
    /// KMS refused: permissions, credentials, key disabled / pending deletion / missing.
    Refused(&'static str),
    /// KMS could not be reached or failed transiently: worth retrying.
    Transient,
    /// Failed in a way that retrying will not fix, but that is not a refusal.
    Broken,
    /// The request could not even be made: configuration (region, endpoint, credentials setup).
    Config,
}

/// The class of a KMS service error code (and HTTP status, when the code is unknown).
pub(crate) fn classify_code(code: &str, status: Option<u16>) -> Class {
    match code {
        // KMS checks the EncryptionContext and the key of a ciphertext itself: a mismatch is
        // reported as InvalidCiphertextException (or IncorrectKeyException for another key).
        "InvalidCiphertextException" | "IncorrectKeyException" => Class::Integrity,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken"
        | "NotAuthorized" => Class::Refused(
            "access denied (check the key policy, the IAM policy and its kms:EncryptionContext \
             conditions, and the AWS credentials)",
        ),
        "DisabledException" => Class::Refused(
            "the master key is disabled; enable it in AWS KMS to read and write keys again \
             (stored keys are intact)",
        ),
        "KMSInvalidStateException" => Class::Refused(
            "the master key is not usable in its current state (pending deletion, pending \
             import or unavailable); cancel the deletion or fix the key in AWS KMS",
        ),
        "NotFoundException" => Class::Refused(
            "the master key was not found (wrong key id, alias, account or region, or the key \
             was deleted)",
        ),
        "InvalidKeyUsageException" => Class::Refused(
            "the master key cannot be used for this: it must be a symmetric ENCRYPT_DECRYPT key",
        ),
        "ThrottlingException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "InternalServerError"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "PriorRequestNotComplete" => Class::Transient,
        _ => match status {
            Some(s) if s >= 500 || s == 429 => Class::Transient,
            _ => Class::Refused("KMS rejected the request"),
        },
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

/// Whether a credentials error is somewhere in the chain, and which class it has.
fn credentials_class(error: &(dyn StdError + 'static)) -> Option<(Class, &'static str)> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(match c {
                CredentialsError::ProviderTimedOut(_) => {
                    (Class::Transient, "loading AWS credentials timed out")
                }
                CredentialsError::ProviderError(_) => {
                    (Class::Transient, "loading AWS credentials failed")
                }
                CredentialsError::CredentialsNotLoaded(_) => (
                    Class::Config,
                    "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
                     AWS_PROFILE, or run where an instance or task role is available)",
                ),
                CredentialsError::InvalidConfiguration(_) => (
                    Class::Config,
                    "the AWS credentials configuration is invalid",
                ),
                _ => (Class::Broken, "loading AWS credentials failed"),
            });
        }
        cur = e.source();
    }
    None
}

/// Maps a failed SDK call (`call` is the KMS operation name, `operation` ours) to an [`Error`].
pub(crate) fn map_sdk_error<E>(
    operation: &'static str,
    call: &'static str,
    error: SdkError<E>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let (class, detail) = match &error {
        SdkError::ServiceError(_) => {
            let code = error.code().unwrap_or("unknown error");
            let detail = match (error.message(), status) {
                (Some(m), _) if !m.is_empty() => format!("{code}: {m}"),
                (_, Some(s)) => format!("{code} (HTTP {s})"),
                _ => code.to_owned(),
            };
            (classify_code(code, status), detail)
        }
        SdkError::TimeoutError(_) => (Class::Transient, chain(&error)),
        SdkError::DispatchFailure(d) => {
            if let Some((class, what)) = credentials_class(&error) {
                (class, format!("{what}: {}", chain(&error)))
            } else if d.is_user() {
                (Class::Config, chain(&error))
            } else {
                // Connection refused or reset, DNS, TLS, connect or read timeouts.
                (Class::Transient, chain(&error))
            }
        }
        SdkError::ResponseError(_) => {
            // An unparseable answer: a proxy's error page, a cut connection.
            let class = match status {
                Some(s) if s < 500 && s != 429 => Class::Broken,
                _ => Class::Transient,
            };
            (class, chain(&error))
        }
        SdkError::ConstructionFailure(_) => match credentials_class(&error) {
            Some((class, what)) => (class, format!("{what}: {}", chain(&error))),
            None => (Class::Config, chain(&error)),
        },
        _ => (Class::Transient, chain(&error)),
    };
    tracing::debug!(operation, call, ?class, %detail, "AWS KMS call failed");
    into_error(operation, class, KmsCallError::new(call, detail))
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
            message: format!("AWS KMS provider cannot make the {operation} request"),
            source: Some(source),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        for code in ["InvalidCiphertextException", "IncorrectKeyException"] {
            assert_eq!(classify_code(code, Some(400)), Class::Integrity, "{code}");
        }
        for code in [
            "AccessDeniedException",
            "DisabledException",
            "KMSInvalidStateException",
            "NotFoundException",
            "InvalidKeyUsageException",
            "UnrecognizedClientException",
            "ValidationException",
        ] {
            assert!(
                matches!(classify_code(code, Some(400)), Class::Refused(_)),
                "{code}"
            );
        }
        for code in [
            "ThrottlingException",
            "KMSInternalException",
            "DependencyTimeoutException",
            "KeyUnavailableException",
        ] {
            assert_eq!(classify_code(code, Some(400)), Class::Transient, "{code}");
        }
        assert_eq!(classify_code("Whatever", Some(503)), Class::Transient);
        assert_eq!(classify_code("Whatever", Some(429)), Class::Transient);
        let Class::Refused(reason) = classify_code("DisabledException", Some(400)) else {
            panic!("refused")
        };
        assert!(reason.contains("disabled"), "{reason}");
    }

    #[test]
    fn classes_become_the_right_errors() {
        let e = |class| into_error("unwrap", class, KmsCallError::new("Decrypt", "x"));
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
        // Never "no key".
        for class in [
            Class::Integrity,
            Class::Refused("r"),
            Class::Transient,
            Class::Broken,
            Class::Config,
        ] {
            assert!(!matches!(e(class), Error::NotFound { .. }));
        }
    }
}
