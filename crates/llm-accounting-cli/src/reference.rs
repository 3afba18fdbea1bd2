//! Secret references: `llm-accounting://SERVICE[?user=U][&project=P]` names a stored key where
//! a value would go (a line of a real `.env` file, a template for `inject`, `keys get`), as
//! 1Password's `op://` references do. Names are percent-encoded where they need to be
//! (`%2F` for `/`, `%20` for a space, `%26` for `&`); `+` is a plus.
//!
//! A reference is not a secret, but what fails to parse as one may be (a key pasted in its
//! place): errors never quote the text, only what is wrong with it.

use llm_accounting::{Error, KeyIdentity, Result};
use percent_encoding::percent_decode_str;

/// What every reference starts with.
pub(crate) const SCHEME: &str = "llm-accounting://";

/// Whether `text` is meant as a reference (it starts with the scheme).
pub(crate) fn is_reference(text: &str) -> bool {
    text.starts_with(SCHEME)
}

fn bad(why: &str) -> Error {
    Error::invalid(
        "reference",
        format!("{why}; expected llm-accounting://SERVICE[?user=U][&project=P]"),
    )
}

fn decode(part: &str, what: &str) -> Result<String> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad(&format!("the {what} is not UTF-8 once percent-decoded")))
}

/// The identity `text` names.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming what is wrong (never quoting `text`): not a reference, no
/// service, a path after the service, an unknown, repeated or empty parameter, a name the
/// name rule refuses.
pub(crate) fn parse(text: &str) -> Result<KeyIdentity> {
    let rest = text
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad("it does not start with llm-accounting://"))?;
    let (service, query) = match rest.split_once('?') {
        Some((s, q)) => (s, Some(q)),
        None => (rest, None),
    };
    if service.is_empty() {
        return Err(bad("it names no service"));
    }
    if service.contains('/') || service.contains('#') {
        return Err(bad(
            "only a service may follow llm-accounting:// (a user and a project are parameters: \
             ?user=U&project=P)",
        ));
    }
    let service = decode(service, "service")?;
    let (mut user, mut project) = (None, None);
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("a parameter has no `=`"))?;
        let slot = match name {
            "user" => &mut user,
            "project" => &mut project,
            _ => {
                return Err(bad(
                    "it has a parameter other than user and project (names are case-sensitive)",
                ));
            }
        };
        if slot.is_some() {
            return Err(bad(&format!("{name} is given twice")));
        }
        let value = decode(value, name)?;
        if value.is_empty() {
            return Err(bad(&format!("{name} is empty (leave it out instead)")));
        }
        *slot = Some(value);
    }
    KeyIdentity::from_parts(&service, user.as_deref(), project.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(service: &str, user: Option<&str>, project: Option<&str>) -> KeyIdentity {
        KeyIdentity::from_parts(service, user, project).expect("valid")
    }

    #[test]
    fn references_name_identities() {
        for (text, want) in [
            ("llm-accounting://openai", id("openai", None, None)),
            (
                "llm-accounting://openai?user=alice",
                id("openai", Some("alice"), None),
            ),
            (
                "llm-accounting://anthropic?project=search&user=alice",
                id("anthropic", Some("alice"), Some("search")),
            ),
            (
                "llm-accounting://openai?project=team%20a%2Fb",
                id("openai", None, Some("team a/b")),
            ),
            (
                "llm-accounting://openai?user=a+b",
                id("openai", Some("a+b"), None),
            ),
        ] {
            assert_eq!(parse(text).expect(text), want, "{text}");
        }
    }

    #[test]
    fn bad_references_say_why_without_quoting_them() {
        for (text, why) in [
            ("openai", "does not start"),
            ("llm-accounting://", "no service"),
            ("llm-accounting://?user=a", "no service"),
            ("llm-accounting://openai/alice", "only a service"),
            ("llm-accounting://openai?usr=alice", "other than user"),
            ("llm-accounting://openai?user", "no `=`"),
            ("llm-accounting://openai?user=a&user=b", "twice"),
            ("llm-accounting://openai?user=", "empty"),
            ("llm-accounting://openai?user=%FF", "not UTF-8"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        // A key pasted as the service is refused by the name rule, never repeated.
        let key = "sk-proj-FAKEabcdefghijklmnopqrstuvwxyz0123456789";
        let e = parse(&format!("llm-accounting://{key}"))
            .expect_err("a key is not a service")
            .to_string();
        assert!(!e.contains(key), "{e}");
    }
}
