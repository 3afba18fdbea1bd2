//! Database URLs: which database a URL names, and what of it may be printed.
//!
//! A URL may carry a password (`postgres://app:PASSWORD@db/keys`, or `?password=...`). It is
//! never echoed: errors name the scheme at most, and [`redact_url`] is the only form of a URL
//! that goes into a message, a log line or a `Debug` output.

use std::sync::Arc;

use llm_accounting_core::{Error, Result};

/// Shown in place of a password.
const REDACTED: &str = "[REDACTED]";

/// The database kinds a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Sqlite,
    Postgres,
    MySql,
}

const EXPECTED: &str = "expected sqlite:, postgres:, postgresql:, mysql: or mariadb:";

/// The database `url` names, and the URL to give its driver: the scheme in lowercase, and
/// `mariadb:` (which the driver does not know) as `mysql:`, the protocol MariaDB speaks.
///
/// # Errors
///
/// [`Error::Config`] for a URL without a scheme or with an unsupported one; the message names
/// the scheme only (never the rest of the URL, which may hold a password).
pub(crate) fn parse(url: &str) -> Result<(Scheme, String)> {
    let Some((raw, rest)) = url.split_once(':').filter(|(s, _)| is_scheme(s)) else {
        return Err(Error::config(format!(
            "the database URL does not start with a scheme ({EXPECTED})"
        )));
    };
    let (scheme, canonical) = match raw.to_ascii_lowercase().as_str() {
        "sqlite" => (Scheme::Sqlite, "sqlite"),
        "postgres" => (Scheme::Postgres, "postgres"),
        "postgresql" => (Scheme::Postgres, "postgresql"),
        "mysql" | "mariadb" => (Scheme::MySql, "mysql"),
        other => {
            return Err(Error::config(format!(
                "unsupported database URL scheme `{other}:` ({EXPECTED})"
            )));
        }
    };
    Ok((scheme, format!("{canonical}:{rest}")))
}

/// Whether `s` is a URL scheme as RFC 3986 spells one (a letter, then letters, digits, `+`,
/// `-`, `.`), and short: anything else is not echoed, as it may be a mistyped secret.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.len() <= 16
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether a query parameter of this name carries a secret.
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token"].iter().any(|p| name.contains(p))
}

/// `url` with its password, and the value of every query parameter that names a password,
/// secret or token, replaced by `[REDACTED]`:
/// `postgres://app:[REDACTED]@db.internal/keys?sslmode=require`.
///
/// Safe to print, log or show in `Debug` output. A URL whose shape is not understood (an `@`
/// but no `://`) is redacted whole.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.find(['?', '#']) {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            // The userinfo runs to the last `@`, so that a password holding a `/` is covered.
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None if base.contains('@') => return REDACTED.to_owned(),
        None => base.to_owned(),
    };
    let mut out = base;
    if let Some(params) = query.strip_prefix('?') {
        let (params, fragment) = params.split_once('#').unwrap_or((params, ""));
        out.push('?');
        let redacted: Vec<String> = params
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_parameter(name) => format!("{name}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&redacted.join("&"));
        if !fragment.is_empty() {
            out.push('#');
            out.push_str(fragment);
        }
    } else {
        out.push_str(query);
    }
    out
}

/// The secrets `url` holds: its password and secret query values, as written and
/// percent-decoded. Empty strings are left out.
pub(crate) fn secrets_of(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let base = url.split(['?', '#']).next().unwrap_or(url);
    if let Some((_, rest)) = base.split_once("://")
        && let Some((userinfo, _)) = rest.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(password.to_owned());
    }
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split('#').next().unwrap_or(query);
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_secret_parameter(name)
            {
                found.push(value.to_owned());
            }
        }
    }
    let decoded: Vec<String> = found.iter().map(|s| percent_decode(s)).collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    found.sort();
    found.dedup();
    found
}

/// `%XX` sequences decoded (lossily: invalid UTF-8 becomes U+FFFD).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `err`, raised while opening `url`, unless its text holds one of the URL's secrets (a driver
/// that echoes its input): then the same error without its source, saying why.
pub(crate) fn withhold_secrets(url: &str, err: Error) -> Error {
    let text = llm_accounting_core::error_chain(&err);
    if !secrets_of(url).iter().any(|s| text.contains(s.as_str())) {
        return err;
    }
    let withheld = Some(Arc::new(std::io::Error::other(
        "the driver's message was withheld: it held the database password",
    )) as llm_accounting_core::BoxError);
    match err {
        Error::DatabaseUnavailable { operation, .. } => Error::DatabaseUnavailable {
            operation,
            source: withheld,
        },
        Error::Database { operation, .. } => Error::Database {
            operation,
            source: withheld,
        },
        Error::Config { message, .. } if !secrets_of(url).iter().any(|s| message.contains(s)) => {
            Error::Config {
                message,
                source: withheld,
            }
        }
        _ => Error::Config {
            message: "the database could not be opened".to_owned(),
            source: withheld,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let scheme = |url: &str| parse(url).map(|(s, _)| s).ok();
        assert_eq!(scheme("sqlite::memory:"), Some(Scheme::Sqlite));
        assert_eq!(scheme("SQLite:///x.db"), Some(Scheme::Sqlite));
        assert_eq!(scheme("postgres://u:p@h/db"), Some(Scheme::Postgres));
        assert_eq!(scheme("postgresql://h/db"), Some(Scheme::Postgres));
        assert_eq!(scheme("mysql://h/db"), Some(Scheme::MySql));
        assert_eq!(scheme("mariadb://h/db"), Some(Scheme::MySql));
        assert_eq!(scheme("MariaDB://h/db"), Some(Scheme::MySql));
    }

    #[test]
    fn mariadb_is_given_to_the_driver_as_mysql() {
        let (_, url) = parse("mariadb://app:FAKE-pw@db:3306/keys").expect("accepted");
        assert_eq!(url, "mysql://app:FAKE-pw@db:3306/keys");
        let (_, url) = parse("SQLITE:///tmp/k.db").expect("accepted");
        assert_eq!(url, "sqlite:///tmp/k.db");
    }

    #[test]
    fn refusals_never_echo_the_url() {
        for url in [
            "oracle://user:FAKE-secret-1@h/db",
            "user:FAKE-secret-1@h/db",
            "FAKE-secret-1",
            "//user:FAKE-secret-1@h/db",
            "a/b:FAKE-secret-1@h",
        ] {
            let err = parse(url).expect_err(url);
            assert!(matches!(err, Error::Config { .. }), "{url}: {err:?}");
            let text = llm_accounting_core::error_chain(&err);
            assert!(!text.contains("FAKE-secret-1"), "{url}: {text}");
        }
        let err = parse("oracle://user:FAKE-secret-1@h/db").expect_err("unsupported");
        assert!(err.to_string().contains("`oracle:`"), "{err}");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("postgres://app:FAKE-pw@db.internal:5432/keys?sslmode=require"),
            "postgres://app:[REDACTED]@db.internal:5432/keys?sslmode=require"
        );
        assert_eq!(
            redact_url("mysql://app:FA/KE@pw@db/keys"),
            "mysql://app:[REDACTED]@db/keys"
        );
        assert_eq!(
            redact_url("postgres://db/keys?user=app&password=FAKE-pw&sslmode=disable"),
            "postgres://db/keys?user=app&password=[REDACTED]&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://app@db/keys"),
            "postgres://app@db/keys"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/k.db"),
            "sqlite:///var/lib/k.db"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("app:FAKE-pw@db/keys"), "[REDACTED]");
    }

    #[test]
    fn secrets_are_found_as_written_and_decoded() {
        let s = secrets_of("postgres://app:FAKE%40pw@db/keys?sslpassword=FAKE-ssl");
        assert!(s.contains(&"FAKE%40pw".to_owned()), "{s:?}");
        assert!(s.contains(&"FAKE@pw".to_owned()), "{s:?}");
        assert!(s.contains(&"FAKE-ssl".to_owned()), "{s:?}");
        assert!(secrets_of("postgres://app@db/keys").is_empty());
    }

    #[test]
    fn errors_holding_a_secret_lose_their_source() {
        let url = "postgres://app:FAKE-pw-42@db/keys";
        let leaky = Error::DatabaseUnavailable {
            operation: "connect",
            source: Some(Arc::new(std::io::Error::other(
                "cannot parse postgres://app:FAKE-pw-42@db/keys",
            ))),
        };
        let safe = withhold_secrets(url, leaky);
        let text = llm_accounting_core::error_chain(&safe);
        assert!(!text.contains("FAKE-pw-42"), "{text}");
        assert!(matches!(safe, Error::DatabaseUnavailable { .. }));
        assert!(text.contains("withheld"), "{text}");
        let clean = Error::DatabaseUnavailable {
            operation: "connect",
            source: Some(Arc::new(std::io::Error::other("connection refused"))),
        };
        let kept = withhold_secrets(url, clean);
        assert!(llm_accounting_core::error_chain(&kept).contains("connection refused"));
    }
}
