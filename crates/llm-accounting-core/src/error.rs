//! The one public error type of llm-accounting.

use std::sync::Arc;

/// A boxed, shareable error source. Errors are [`Clone`] so that one failed load can be handed to
/// every caller that waited on it (single-flight cache loading).
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, by kind. Sources never contain secret material.
///
/// Decryption and context-mismatch failures are deliberately opaque: [`Error::Integrity`] does not
/// say which byte or which part of the context was wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key is stored under this identity.
    #[error("no API key stored for {identity}")]
    NotFound {
        /// The identity that was looked up.
        identity: String,
    },
    /// The key exists but is disabled.
    #[error("the API key for {identity} is disabled")]
    Disabled {
        /// The identity of the disabled key.
        identity: String,
    },
    /// The key's current value passed its expiry time; store or rotate a new value.
    #[error("the API key for {identity} expired at {expired_at}")]
    Expired {
        /// The identity of the expired key.
        identity: String,
        /// When it expired (RFC 3339, UTC).
        expired_at: String,
    },
    /// No previous version of the key is readable: there is none, or its grace period ended.
    #[error("no previous version of the API key for {identity} is readable: {reason}")]
    NoPrevious {
        /// The identity.
        identity: String,
        /// Why (never rotated, or retired at a given time).
        reason: String,
    },
    /// A stored record failed authentication: it was changed, moved to another row, identity or
    /// version, or wrapped under a master key that is not the one presented.
    #[error(
        "integrity check failed{}: the stored key was modified, moved, or wrapped under another master key",
        for_identity(identity)
    )]
    Integrity {
        /// The identity being read, when known.
        identity: Option<String>,
    },
    /// The caller passed something unusable (empty key, bad name, unknown provider name...).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which input was wrong.
        field: &'static str,
        /// Why, in words a user can act on.
        reason: String,
    },
    /// The KMS could not be reached or failed transiently.
    #[error("KMS provider `{provider}` unavailable during {operation}")]
    ProviderUnavailable {
        /// The provider's name.
        provider: String,
        /// What was being done (`wrap`, `unwrap`, ...).
        operation: &'static str,
        /// Whether trying again may succeed.
        retryable: bool,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
    /// The KMS refused the request (permissions, disabled or deleted master key...).
    #[error("KMS provider `{provider}` refused {operation}: {reason}")]
    AccessDenied {
        /// The provider's name.
        provider: String,
        /// What was being done.
        operation: &'static str,
        /// The refusal in words (no secret material).
        reason: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
    /// A record names a provider this manager does not have.
    #[error(
        "the stored key was wrapped by KMS provider `{provider}`, which is not configured here"
    )]
    ProviderNotConfigured {
        /// The provider named by the record.
        provider: String,
    },
    /// The database could not be reached (down, pool timeout, locked beyond the busy timeout).
    #[error("database unavailable during {operation}")]
    DatabaseUnavailable {
        /// What was being done.
        operation: &'static str,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
    /// The database answered with an error that is not an outage.
    #[error("database error during {operation}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
    /// A manager bound to a principal was asked for a key outside its boundary (see
    /// [`crate::Principal`]). Nothing was read or changed.
    #[error("access to the API key for {identity} is denied to {principal}")]
    Forbidden {
        /// The identity asked for.
        identity: String,
        /// The principal the manager is bound to.
        principal: String,
    },
    /// The audit trail's hash chain does not verify: a record was deleted, inserted or edited.
    #[error("audit chain broken at record {seq}: {reason}")]
    AuditChainBroken {
        /// The first record that does not fit.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A bulk operation finished with some items failed (each was reported); what failed was
    /// left unchanged.
    #[error("{operation} incomplete: {count} item(s) left; {hint}")]
    Incomplete {
        /// The operation (`rewrap`, ...).
        operation: &'static str,
        /// How many items failed or remain.
        count: u64,
        /// What to do about it.
        hint: &'static str,
    },
    /// Another writer changed the same key at the same time; the operation was not applied.
    #[error("the API key for {identity} was changed concurrently; try again")]
    Conflict {
        /// The identity being written.
        identity: String,
    },
    /// A usage limit leaves no room for the call: the message names the limit, its usage and
    /// maximum, and when it resets. No key was decrypted.
    #[error("{message}")]
    QuotaExceeded {
        /// One line: the limit, usage/maximum, reset time.
        message: String,
        /// When the limit frees room (its window ends, or its oldest usage leaves it), when
        /// known: what an HTTP `retry-after` says.
        resets_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Configuration is missing or contradictory.
    #[error("configuration error: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
    /// The operating system's random number generator failed: no data key, nonce or master
    /// key could be made. Nothing was written.
    #[error("the operating system's random number generator failed")]
    Random {
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// A local I/O failure (master key file, data directory).
    #[error("{operation} failed for {path}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file concerned.
        path: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
}

fn for_identity(identity: &Option<String>) -> String {
    identity
        .as_ref()
        .map(|i| format!(" for {i}"))
        .unwrap_or_default()
}

impl Error {
    /// An opaque integrity failure, without identity (providers and envelope decoding use this;
    /// the manager adds the identity).
    pub fn integrity() -> Self {
        Error::Integrity { identity: None }
    }

    /// An [`Error::InvalidInput`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// An [`Error::Config`] without source.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
            source: None,
        }
    }

    /// Whether the same call may succeed if tried again (transient KMS or database failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ProviderUnavailable { retryable, .. } => *retryable,
            Error::DatabaseUnavailable { .. } | Error::Conflict { .. } => true,
            _ => false,
        }
    }

    /// The broad kind of this error, for exit codes and metrics.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Disabled { .. } => ErrorKind::Disabled,
            Error::Expired { .. } => ErrorKind::Expired,
            Error::Forbidden { .. } => ErrorKind::Forbidden,
            Error::NoPrevious { .. } => ErrorKind::NotFound,
            Error::Integrity { .. } | Error::AuditChainBroken { .. } => ErrorKind::Integrity,
            Error::InvalidInput { .. } | Error::Config { .. } => ErrorKind::InvalidInput,
            Error::ProviderUnavailable { .. } | Error::DatabaseUnavailable { .. } => {
                ErrorKind::Unavailable
            }
            Error::AccessDenied { .. } => ErrorKind::AccessDenied,
            Error::ProviderNotConfigured { .. } => ErrorKind::InvalidInput,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
            Error::Database { .. }
            | Error::Io { .. }
            | Error::Incomplete { .. }
            | Error::Random { .. } => ErrorKind::Other,
        }
    }

    /// Attaches the identity being processed to identity-less errors.
    pub(crate) fn with_identity(self, identity: &crate::KeyIdentity) -> Self {
        match self {
            Error::Integrity { identity: None } => Error::Integrity {
                identity: Some(identity.to_string()),
            },
            other => other,
        }
    }
}

/// Broad classes of [`Error`], stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing stored under the identity.
    NotFound,
    /// The key is disabled.
    Disabled,
    /// The key's value expired.
    Expired,
    /// Outside the boundary of the manager's principal.
    Forbidden,
    /// Authentication of stored data failed.
    Integrity,
    /// Bad input or configuration.
    InvalidInput,
    /// KMS or database temporarily unavailable.
    Unavailable,
    /// KMS refused.
    AccessDenied,
    /// Concurrent modification.
    Conflict,
    /// A usage limit leaves no room.
    QuotaExceeded,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// A short lowercase name (`not_found`, `integrity`, ...), for logs and audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Disabled => "disabled",
            ErrorKind::Expired => "expired",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Integrity => "integrity",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::Conflict => "conflict",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Other => "other",
        }
    }
}
