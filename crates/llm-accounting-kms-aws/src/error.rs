//! AWS SDK errors → [`llm_accounting_core::Error`], through the core's [`FailureClass`].
//!
//! This module only decides what an AWS error *means*; the core turns that into the library's
//! error the same way for every provider. Nothing here copies a request or response body:
//! only error codes, KMS's own messages and transport errors reach the error chain.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use llm_accounting_core::{Error, FailureClass, ProviderErrors, error_chain as chain};

use crate::PROVIDER_NAME;

/// This provider's errors: its recorded name, and its service's name in messages.
pub(crate) const ERRORS: ProviderErrors = ProviderErrors::new(PROVIDER_NAME, "AWS KMS");

/// The class of a KMS service error code (and HTTP status, when the code is unknown).
pub(crate) fn classify_code(code: &str, status: Option<u16>) -> FailureClass {
    match code {
        // KMS checks the EncryptionContext and the key of a ciphertext itself: a mismatch is
        // reported as InvalidCiphertextException (or IncorrectKeyException for another key).
        "InvalidCiphertextException" | "IncorrectKeyException" => FailureClass::Integrity,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken"
        | "NotAuthorized" => FailureClass::AccessDenied(
            "access denied (check the key policy, the IAM policy and its kms:EncryptionContext \
             conditions, and the AWS credentials)",
        ),
        "DisabledException" => FailureClass::AccessDenied(
            "the master key is disabled; enable it in AWS KMS to read and write keys again \
             (stored keys are intact)",
        ),
        "KMSInvalidStateException" => FailureClass::AccessDenied(
            "the master key is not usable in its current state (pending deletion, pending \
             import or unavailable); cancel the deletion or fix the key in AWS KMS",
        ),
        "NotFoundException" => FailureClass::NotFound(
            "the master key was not found (wrong key id, alias, account or region, or the key \
             was deleted)",
        ),
        "InvalidKeyUsageException" => FailureClass::AccessDenied(
            "the master key cannot be used for this: it must be a symmetric ENCRYPT_DECRYPT key",
        ),
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            FailureClass::Throttled
        }
        "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "InternalServerError"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "PriorRequestNotComplete" => FailureClass::Unavailable,
        _ => match status {
            Some(429) => FailureClass::Throttled,
            Some(s) if s >= 500 => FailureClass::Unavailable,
            _ => FailureClass::AccessDenied("KMS rejected the request"),
        },
    }
}

/// What a caller without credentials is told.
const NO_CREDENTIALS: &str = "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
                              AWS_PROFILE, or run where an instance or task role is available)";

/// Whether the instance metadata service refused to hand out a session token because it is
/// disabled or not reachable as IMDS (HTTP 403 on the token): no instance role here.
fn imds_refused(chain: &str) -> bool {
    chain.contains("failed to load IMDS session token") && chain.contains("IMDS is disabled")
}

/// Whether a credentials error is somewhere in the chain, and which class it has.
fn credentials_class(error: &(dyn StdError + 'static)) -> Option<(FailureClass, &'static str)> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(match c {
                CredentialsError::ProviderTimedOut(_) => (
                    FailureClass::Unavailable,
                    "loading AWS credentials timed out",
                ),
                // The last link of the default chain is the instance metadata service; where
                // it is switched off (or absent behind a proxy that refuses it), nothing else
                // in the chain found credentials either: a setup problem, not an outage.
                CredentialsError::ProviderError(_) if imds_refused(&chain(c)) => {
                    (FailureClass::Config, NO_CREDENTIALS)
                }
                CredentialsError::ProviderError(_) => {
                    (FailureClass::Unavailable, "loading AWS credentials failed")
                }
                CredentialsError::CredentialsNotLoaded(_) => (FailureClass::Config, NO_CREDENTIALS),
                CredentialsError::InvalidConfiguration(_) => (
                    FailureClass::Config,
                    "the AWS credentials configuration is invalid",
                ),
                _ => (FailureClass::Broken, "loading AWS credentials failed"),
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
        SdkError::TimeoutError(_) => (FailureClass::Unavailable, chain(&error)),
        SdkError::DispatchFailure(d) => {
            if let Some((class, what)) = credentials_class(&error) {
                (class, format!("{what}: {}", chain(&error)))
            } else if d.is_user() {
                (FailureClass::Config, chain(&error))
            } else {
                // Connection refused or reset, DNS, TLS, connect or read timeouts.
                (FailureClass::Unavailable, chain(&error))
            }
        }
        SdkError::ResponseError(_) => {
            // An unparseable answer: a proxy's error page, a cut connection.
            let class = match status {
                Some(s) if s < 500 && s != 429 => FailureClass::Broken,
                _ => FailureClass::Unavailable,
            };
            (class, chain(&error))
        }
        SdkError::ConstructionFailure(_) => match credentials_class(&error) {
            Some((class, what)) => (class, format!("{what}: {}", chain(&error))),
            None => (FailureClass::Config, chain(&error)),
        },
        _ => (FailureClass::Unavailable, chain(&error)),
    };
    ERRORS.failed(class, operation, call, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a code becomes.
    fn error_for(code: &str, status: Option<u16>) -> Error {
        ERRORS.failed(classify_code(code, status), "unwrap", "Decrypt", code)
    }

    #[test]
    fn a_refused_instance_metadata_service_is_no_outage() {
        assert!(imds_refused(
            "an error occurred while loading credentials: failed to load IMDS session token: \
             service error: request forbidden: IMDS is disabled or the caller has insufficient \
             permissions."
        ));
        assert!(!imds_refused(
            "failed to load IMDS session token: timeout: connect timed out"
        ));
    }

    #[test]
    fn codes_are_classified() {
        for code in ["InvalidCiphertextException", "IncorrectKeyException"] {
            assert_eq!(
                classify_code(code, Some(400)),
                FailureClass::Integrity,
                "{code}"
            );
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
                matches!(error_for(code, Some(400)), Error::AccessDenied { .. }),
                "{code}"
            );
        }
        assert!(matches!(
            classify_code("NotFoundException", Some(400)),
            FailureClass::NotFound(_)
        ));
        for code in [
            "ThrottlingException",
            "KMSInternalException",
            "DependencyTimeoutException",
            "KeyUnavailableException",
        ] {
            assert!(classify_code(code, Some(400)).is_retryable(), "{code}");
        }
        assert_eq!(
            classify_code("ThrottlingException", Some(400)),
            FailureClass::Throttled
        );
        assert!(classify_code("Whatever", Some(503)).is_retryable());
        assert!(classify_code("Whatever", Some(429)).is_retryable());
        let FailureClass::AccessDenied(reason) = classify_code("DisabledException", Some(400))
        else {
            panic!("refused")
        };
        assert!(reason.contains("disabled"), "{reason}");
    }

    #[test]
    fn codes_become_the_right_errors() {
        assert!(matches!(
            error_for("InvalidCiphertextException", Some(400)),
            Error::Integrity { identity: None }
        ));
        let t = error_for("ThrottlingException", Some(400));
        assert!(t.is_retryable() && matches!(t, Error::ProviderUnavailable { .. }));
        let b = ERRORS.broken("unwrap", "Decrypt", "the answer has no KeyId");
        assert!(!b.is_retryable() && matches!(b, Error::ProviderUnavailable { .. }));
        assert_eq!(
            llm_accounting_core::error_chain(&b),
            "KMS provider `aws` unavailable during unwrap: AWS KMS Decrypt: the answer has no KeyId"
        );
        // Never "no key".
        for code in ["NotFoundException", "AccessDeniedException", "Whatever"] {
            assert!(!matches!(
                error_for(code, Some(400)),
                Error::NotFound { .. }
            ));
        }
    }
}
