//! Provider failures → [`Error`], in one place for every KMS provider.
//!
//! Each provider crate only decides what a failure of its SDK *means*: it maps the SDK's error
//! onto a [`FailureClass`] and a [`ProviderCallError`] (what was called, and why it failed, in
//! words safe to print). [`FailureClass::into_error`] turns that into the library's [`Error`]
//! the same way for every provider, so the rule holds everywhere: the caller learns what to do
//! (retry later, fix permissions or the key state, suspect tampering), never "no key".

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::{BoxError, Error};

/// What a failed provider call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureClass {
    /// The KMS could not be reached or failed transiently (connection refused or reset, DNS,
    /// 5xx, timeouts): [`Error::ProviderUnavailable`], retryable.
    Unavailable,
    /// The KMS throttled the call (rate or quota exceeded): [`Error::ProviderUnavailable`],
    /// retryable.
    Throttled,
    /// The KMS answered, but not with what it promises (an unparseable answer, a proxy's
    /// error page): [`Error::ProviderUnavailable`], not retryable.
    Broken,
    /// The KMS refused: permissions, credentials, a disabled master key. The reason says what
    /// to fix: [`Error::AccessDenied`].
    AccessDenied(&'static str),
    /// The master key (or key version) does not exist, or is not visible to the caller:
    /// [`Error::AccessDenied`] with the reason, never "no API key".
    NotFound(&'static str),
    /// The ciphertext, its context or its key do not match: the opaque
    /// [`Error::Integrity`].
    Integrity,
    /// The request could not even be made (region, endpoint, credentials setup):
    /// [`Error::Config`].
    Config,
}

impl FailureClass {
    /// Whether a call that failed this way may succeed if made again.
    pub fn is_retryable(self) -> bool {
        matches!(self, FailureClass::Unavailable | FailureClass::Throttled)
    }

    /// The library's error for a call of `provider` (its recorded name, `aws`...) during
    /// `operation` (`wrap`, `unwrap`, `generate data key`) that failed this way. The
    /// `source` is kept as the cause, except for [`FailureClass::Integrity`], which stays
    /// opaque.
    pub fn into_error(
        self,
        provider: &str,
        operation: &'static str,
        source: ProviderCallError,
    ) -> Error {
        tracing::debug!(provider, operation, class = ?self, error = %source, "KMS call failed");
        let service = source.service;
        let source: BoxError = Arc::new(source);
        match self {
            FailureClass::Integrity => Error::integrity(),
            FailureClass::AccessDenied(reason) | FailureClass::NotFound(reason) => {
                Error::AccessDenied {
                    provider: provider.to_owned(),
                    operation,
                    reason: reason.to_owned(),
                    source: Some(source),
                }
            }
            FailureClass::Unavailable | FailureClass::Throttled | FailureClass::Broken => {
                Error::ProviderUnavailable {
                    provider: provider.to_owned(),
                    operation,
                    retryable: self.is_retryable(),
                    source: Some(source),
                }
            }
            FailureClass::Config => Error::Config {
                message: format!("{service} provider cannot make the {operation} request"),
                source: Some(source),
            },
        }
    }
}

/// Why one call to a KMS failed, in words safe to print: the service, the call, and the error
/// code and message the KMS sent, or the transport failure. Never a request or response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCallError {
    service: &'static str,
    call: Option<&'static str>,
    detail: String,
}

impl ProviderCallError {
    /// A failure of `call` (the KMS's own operation name, e.g. `Decrypt`) of `service` (a
    /// human name, e.g. `AWS KMS`), described by `detail`.
    pub fn new(service: &'static str, call: &'static str, detail: impl Into<String>) -> Self {
        ProviderCallError {
            service,
            call: Some(call),
            detail: detail.into(),
        }
    }

    /// A failure of `service` not tied to one named call.
    pub fn of_service(service: &'static str, detail: impl Into<String>) -> Self {
        ProviderCallError {
            service,
            call: None,
            detail: detail.into(),
        }
    }

    /// What went wrong.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ProviderCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.call {
            Some(call) => write!(f, "{} {call}: {}", self.service, self.detail),
            None => write!(f, "{}: {}", self.service, self.detail),
        }
    }
}

impl StdError for ProviderCallError {}

/// The errors of one provider: its recorded name (`aws`) and its service's name in messages
/// (`AWS KMS`), so that a provider crate says once who it is and then only what failed.
///
/// ```
/// use llm_accounting_core::{FailureClass, ProviderErrors};
/// const ERRORS: ProviderErrors = ProviderErrors::new("aws", "AWS KMS");
/// let e = ERRORS.failed(FailureClass::Throttled, "unwrap", "Decrypt", "ThrottlingException");
/// assert!(e.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderErrors {
    provider: &'static str,
    service: &'static str,
}

impl ProviderErrors {
    /// The errors of provider `provider` (its recorded name), whose service is called
    /// `service` in messages.
    pub const fn new(provider: &'static str, service: &'static str) -> Self {
        ProviderErrors { provider, service }
    }

    /// The error of `call` (the KMS's own operation name), made during our `operation`, that
    /// failed as `class`, for the reason `detail`.
    pub fn failed(
        self,
        class: FailureClass,
        operation: &'static str,
        call: &'static str,
        detail: impl Into<String>,
    ) -> Error {
        class.into_error(
            self.provider,
            operation,
            ProviderCallError::new(self.service, call, detail),
        )
    }

    /// Like [`ProviderErrors::failed`], for a failure not tied to one named call.
    pub fn failed_service(
        self,
        class: FailureClass,
        operation: &'static str,
        detail: impl Into<String>,
    ) -> Error {
        class.into_error(
            self.provider,
            operation,
            ProviderCallError::of_service(self.service, detail),
        )
    }

    /// A call that answered, but not with what the KMS promises ([`FailureClass::Broken`]).
    pub fn broken(
        self,
        operation: &'static str,
        call: &'static str,
        detail: impl Into<String>,
    ) -> Error {
        self.failed(FailureClass::Broken, operation, call, detail)
    }
}

/// A setting a provider builder cannot do without: the trimmed value, or [`Error::Config`]
/// saying `missing` (what is missing and how to set it).
pub fn required_setting(value: Option<&str>, missing: &str) -> crate::Result<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::config(missing))
}

/// The Display of `error` and of each of its sources, joined by `": "`. A source whose text is
/// empty, or already part of the line (many errors repeat their source's message), is left
/// out.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(class: FailureClass) -> Error {
        class.into_error(
            "aws",
            "unwrap",
            ProviderCallError::new("AWS KMS", "Decrypt", "x"),
        )
    }

    #[test]
    fn classes_become_the_right_errors() {
        assert!(matches!(
            error(FailureClass::Integrity),
            Error::Integrity { identity: None }
        ));
        for class in [
            FailureClass::AccessDenied("r"),
            FailureClass::NotFound("the master key was not found"),
        ] {
            let e = error(class);
            assert!(matches!(e, Error::AccessDenied { .. }), "{class:?}");
            assert!(!e.is_retryable());
        }
        for class in [FailureClass::Unavailable, FailureClass::Throttled] {
            let t = error(class);
            assert!(
                t.is_retryable() && matches!(t, Error::ProviderUnavailable { .. }),
                "{class:?}"
            );
        }
        let b = error(FailureClass::Broken);
        assert!(!b.is_retryable() && matches!(b, Error::ProviderUnavailable { .. }));
        let c = error(FailureClass::Config);
        assert!(matches!(c, Error::Config { .. }));
        assert_eq!(
            error_chain(&c),
            "configuration error: AWS KMS provider cannot make the unwrap request: \
             AWS KMS Decrypt: x"
        );
        // Never "no key".
        for class in [
            FailureClass::Integrity,
            FailureClass::AccessDenied("r"),
            FailureClass::NotFound("r"),
            FailureClass::Unavailable,
            FailureClass::Throttled,
            FailureClass::Broken,
            FailureClass::Config,
        ] {
            assert!(!matches!(error(class), Error::NotFound { .. }));
        }
    }

    #[test]
    fn the_cause_is_kept_except_for_integrity() {
        let e = FailureClass::AccessDenied("the master key is disabled").into_error(
            "gcp",
            "wrap",
            ProviderCallError::new("Cloud KMS", "Encrypt", "FAILED_PRECONDITION (disabled)"),
        );
        assert_eq!(
            error_chain(&e),
            "KMS provider `gcp` refused wrap: the master key is disabled: \
             Cloud KMS Encrypt: FAILED_PRECONDITION (disabled)"
        );
        let e = FailureClass::Integrity.into_error(
            "azure",
            "unwrap",
            ProviderCallError::of_service("Azure Key Vault", "HTTP 400 BadParameter"),
        );
        assert!(std::error::Error::source(&e).is_none(), "{e:?}");
    }

    #[test]
    fn required_settings_are_trimmed_and_explained() {
        assert_eq!(
            required_setting(Some(" alias/x "), "set it").expect("present"),
            "alias/x"
        );
        for missing in [None, Some(""), Some("  ")] {
            let e = required_setting(missing, "the provider needs a master key").expect_err("x");
            assert!(matches!(e, Error::Config { .. }), "{e:?}");
            assert!(e.to_string().contains("needs a master key"), "{e}");
        }
    }

    #[test]
    fn provider_errors_name_the_provider_and_service() {
        const ERRORS: ProviderErrors = ProviderErrors::new("gcp", "Google Cloud KMS");
        let b = ERRORS.broken("wrap", "Encrypt", "the answer has no ciphertext");
        assert!(!b.is_retryable());
        assert_eq!(
            error_chain(&b),
            "KMS provider `gcp` unavailable during wrap: Google Cloud KMS Encrypt: \
             the answer has no ciphertext"
        );
        let s = ERRORS.failed_service(FailureClass::Unavailable, "unwrap", "connection reset");
        assert!(s.is_retryable());
        assert!(error_chain(&s).ends_with("Google Cloud KMS: connection reset"));
    }

    #[test]
    fn error_chain_skips_repeated_and_empty_sources() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl StdError for E {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.1.as_deref().map(|e| e as &(dyn StdError + 'static))
            }
        }
        let e = E(
            "dispatch failure: connection refused",
            Some(Box::new(E(
                "connection refused",
                Some(Box::new(E("", Some(Box::new(E("os error 111", None)))))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "dispatch failure: connection refused: os error 111"
        );
    }
}
