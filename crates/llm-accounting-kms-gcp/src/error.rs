//! Cloud KMS client errors → [`llm_accounting_core::Error`], through the core's
//! [`FailureClass`].
//!
//! This module only decides what a Cloud KMS error *means*; the core turns that into the
//! library's error the same way for every provider. Nothing here copies a request or response
//! body: only the status code, Cloud KMS's own message and transport errors reach the error
//! chain.

use std::error::Error as StdError;

use google_cloud_gax::error::CredentialsError;
use google_cloud_gax::error::rpc::Code;
use llm_accounting_core::{Error, FailureClass, ProviderErrors, error_chain as chain};

use crate::PROVIDER_NAME;

/// This provider's errors: its recorded name, and its service's name in messages.
pub(crate) const ERRORS: ProviderErrors = ProviderErrors::new(PROVIDER_NAME, "Google Cloud KMS");

/// The class of a status code. `decrypting`: an `INVALID_ARGUMENT` answer to `Decrypt` means
/// the ciphertext or its additional authenticated data do not match.
pub(crate) fn classify_code(code: Code, decrypting: bool) -> FailureClass {
    match code {
        Code::InvalidArgument if decrypting => FailureClass::Integrity,
        Code::InvalidArgument => FailureClass::AccessDenied(
            "Cloud KMS rejected the request (is the key a symmetric ENCRYPT_DECRYPT key?)",
        ),
        Code::PermissionDenied | Code::Unauthenticated => FailureClass::AccessDenied(
            "access denied (grant roles/cloudkms.cryptoKeyEncrypterDecrypter on the key to the \
             caller, and check the credentials)",
        ),
        Code::NotFound => FailureClass::NotFound(
            "the master key was not found (wrong project, location, key ring or key name, or \
             no permission to see it)",
        ),
        Code::FailedPrecondition => FailureClass::AccessDenied(
            "the key version is not usable in its current state (disabled, scheduled for \
             destruction or destroyed); re-enable it in Cloud KMS (stored keys are intact)",
        ),
        Code::ResourceExhausted => FailureClass::Throttled,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Aborted
        | Code::Unknown => FailureClass::Unavailable,
        _ => FailureClass::AccessDenied("Cloud KMS rejected the request"),
    }
}

/// What a caller without any credentials is told: a setup problem, not an outage.
const NO_CREDENTIALS: &str = "no Google Cloud credentials found: GOOGLE_APPLICATION_CREDENTIALS \
                              is not set, there is no application default credentials file, and \
                              no metadata server answers (not on Google Cloud); set \
                              GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth \
                              application-default login`";

/// Whether a failure to get a token came from Application Default Credentials falling back to
/// the metadata server on a machine that has none: its name does not resolve, or nothing
/// listens. On Google Cloud the metadata server always resolves and answers, so this is a
/// missing setup (exit 2, not retried), not a transient failure. Only the auth library's
/// transport text says so; it is matched here, and a test pins it.
fn metadata_server_absent(chain: &str) -> bool {
    chain.contains("computeMetadata")
        && (chain.contains("dns error")
            || chain.contains("Connection refused")
            || chain.contains("failed to lookup address"))
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
        let class = if code == 429 {
            FailureClass::Throttled
        } else if code >= 500 {
            FailureClass::Unavailable
        } else if code == 401 || code == 403 {
            FailureClass::AccessDenied("access denied")
        } else {
            FailureClass::Broken
        };
        (class, format!("HTTP {code}"))
    } else if error.is_authentication() {
        let transient = error
            .source()
            .and_then(|e| e.downcast_ref::<CredentialsError>())
            .is_some_and(CredentialsError::is_transient);
        let text = chain(error);
        if transient && metadata_server_absent(&text) {
            (FailureClass::Config, NO_CREDENTIALS.to_owned())
        } else if transient {
            (FailureClass::Unavailable, text)
        } else {
            (FailureClass::Config, text)
        }
    } else if error.is_timeout() || error.is_io() || error.is_connect() || error.is_exhausted() {
        (FailureClass::Unavailable, chain(error))
    } else if error.is_binding() || error.is_serialization() {
        (FailureClass::Config, chain(error))
    } else if error.is_deserialization() {
        (FailureClass::Broken, chain(error))
    } else {
        (FailureClass::Unavailable, chain(error))
    };
    ERRORS.failed(class, operation, call, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_for(code: Code, decrypting: bool) -> Error {
        ERRORS.failed(
            classify_code(code, decrypting),
            "unwrap",
            "Decrypt",
            code.name(),
        )
    }

    #[test]
    fn codes_are_classified() {
        assert_eq!(
            classify_code(Code::InvalidArgument, true),
            FailureClass::Integrity
        );
        assert!(matches!(
            error_for(Code::InvalidArgument, false),
            Error::AccessDenied { .. }
        ));
        for code in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::FailedPrecondition,
        ] {
            assert!(
                matches!(error_for(code, true), Error::AccessDenied { .. }),
                "{code:?}"
            );
        }
        assert!(matches!(
            classify_code(Code::NotFound, true),
            FailureClass::NotFound(_)
        ));
        for code in [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
        ] {
            assert!(classify_code(code, true).is_retryable(), "{code:?}");
        }
        assert_eq!(
            classify_code(Code::ResourceExhausted, true),
            FailureClass::Throttled
        );
    }

    #[test]
    fn a_missing_metadata_server_is_a_setup_problem() {
        let dns = "Could not fetch an auth token: the transport reports an error: error sending \
                   request for url (http://metadata.google.internal/computeMetadata/v1/instance/\
                   service-accounts/default/token): client error (Connect): dns error: failed";
        assert!(metadata_server_absent(dns));
        assert!(!metadata_server_absent("computeMetadata: HTTP 503"));
        assert!(!metadata_server_absent(
            "dns error resolving cloudkms.googleapis.com"
        ));
    }

    #[test]
    fn codes_become_the_right_errors() {
        assert!(matches!(
            error_for(Code::InvalidArgument, true),
            Error::Integrity { identity: None }
        ));
        let t = error_for(Code::Unavailable, true);
        assert!(t.is_retryable() && matches!(t, Error::ProviderUnavailable { .. }));
        let b = ERRORS.broken("unwrap", "Decrypt", "the answer has no plaintext");
        assert!(!b.is_retryable() && matches!(b, Error::ProviderUnavailable { .. }));
        assert!(
            llm_accounting_core::error_chain(&b)
                .ends_with("Google Cloud KMS Decrypt: the answer has no plaintext"),
            "{b:?}"
        );
    }
}
