//! Who a stored key belongs to: (service, user, project), with user and project optional.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Longest accepted service, user or project name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// The identity of a stored key: a service (`openai`, `anthropic`, ...) and optionally the user
/// and project it belongs to. An absent user is not the same as any named user (a user literally
/// called `global` is its own identity).
///
/// Names are compared exactly (byte for byte, case-sensitive). A name must be 1 to
/// [`MAX_NAME_CHARS`] characters, contain no character that prints as nothing or moves what
/// follows (see [`is_hidden_char`]: controls, bidirectional and zero-width format characters,
/// line and paragraph separators, spaces other than U+0020, other invisible characters), and
/// have no leading or trailing whitespace (databases disagree about trailing spaces; refusing
/// them keeps every backend equal). So two identities never print the same because of a
/// character one cannot see.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyIdentity {
    service: String,
    user: Option<String>,
    project: Option<String>,
}

impl KeyIdentity {
    /// An identity for `service` with no user and no project.
    pub fn new(service: impl Into<String>) -> Result<Self> {
        let service = service.into();
        validate_name("service", &service)?;
        Ok(KeyIdentity {
            service,
            user: None,
            project: None,
        })
    }

    /// Sets (or clears, with `None`) the user.
    pub fn with_user(mut self, user: Option<impl Into<String>>) -> Result<Self> {
        self.user = user.map(Into::into);
        if let Some(u) = &self.user {
            validate_name("user", u)?;
        }
        Ok(self)
    }

    /// Sets (or clears, with `None`) the project.
    pub fn with_project(mut self, project: Option<impl Into<String>>) -> Result<Self> {
        self.project = project.map(Into::into);
        if let Some(p) = &self.project {
            validate_name("project", p)?;
        }
        Ok(self)
    }

    /// Builds an identity from its three parts in one call.
    pub fn from_parts(service: &str, user: Option<&str>, project: Option<&str>) -> Result<Self> {
        KeyIdentity::new(service)?
            .with_user(user)?
            .with_project(project)
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The project, if any.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// A stable, collation-proof key for unique indexes: the lowercase hex SHA-256 of an
    /// unambiguous length-prefixed encoding of the three parts (absent and present parts are
    /// encoded differently). Every database compares it the same way, and it has no NULL.
    pub fn scope_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"llm-accounting/identity/v1");
        for part in [Some(self.service.as_str()), self.user(), self.project()] {
            match part {
                None => h.update([0u8]),
                Some(p) => {
                    h.update([1u8]);
                    h.update((p.len() as u64).to_be_bytes());
                    h.update(p.as_bytes());
                }
            }
        }
        let digest = h.finalize();
        let mut out = String::with_capacity(64);
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Checks one service, user or project name against the naming rules.
pub fn validate_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "it is empty"));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("it is {chars} characters long; the limit is {MAX_NAME_CHARS}"),
        ));
    }
    if let Some(c) = name.chars().find(|c| is_hidden_char(*c)) {
        // The code point, never the character: it would act on the terminal that shows it.
        let what = if c.is_control() {
            "a control character"
        } else {
            "an invisible or formatting character"
        };
        return Err(Error::invalid(
            field,
            format!("it contains {what} (U+{:04X})", u32::from(c)),
        ));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(Error::invalid(field, "it starts or ends with whitespace"));
    }
    if looks_like_a_key(name) {
        // Never the name itself: it is most likely a secret given where a name was expected
        // (a `.env` value taken for a service name).
        return Err(Error::invalid(
            field,
            format!(
                "it looks like an API key ({chars} characters), not a name; was a key given \
                 where a name is expected?"
            ),
        ));
    }
    Ok(())
}

/// Prefixes of API keys and tokens of common providers.
const KEY_PREFIXES: &[&str] = &[
    "sk-",
    "sk_",
    "pk-",
    "rk-",
    "hf_",
    "gsk_",
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "AKIA",
    "ASIA",
    "AIza",
    "pplx-",
    "nvapi-",
    "r8_",
    "tvly-",
    "llmacc-",
];

/// Whether `name` has the shape of a secret rather than of a name: a known key prefix and at
/// least 20 characters, or at least 24 characters of letters, digits, `-` and `_` with a run
/// of 20 or more letters and digits that mixes upper case, lower case and digits.
pub fn looks_like_a_key(name: &str) -> bool {
    let n = name.chars().count();
    if n >= 20 && KEY_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    if n < 24
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return false;
    }
    name.split(['-', '_']).any(|run| {
        run.len() >= 20
            && run.bytes().filter(u8::is_ascii_uppercase).count() >= 2
            && run.bytes().filter(u8::is_ascii_lowercase).count() >= 2
            && run.bytes().filter(u8::is_ascii_digit).count() >= 2
    })
}

/// Whether `c` prints as nothing, or changes how what follows prints, so that two strings that
/// differ by it can look the same (or a string can rewrite the line it is shown on). Names
/// refuse these characters; the CLI escapes them in what it prints.
///
/// They are: control characters (category Cc: C0, DEL, C1, ESC among them); format characters
/// (Cf: bidirectional controls such as U+202E, zero-width space and joiners, the BOM, tag
/// characters); line and paragraph separators (Zl, Zp); spaces other than U+0020 (Zs, e.g. the
/// no-break space, which prints like a space); and the other default-ignorable code points
/// (variation selectors, the combining grapheme joiner, Hangul fillers, ...), which render as
/// nothing; and U+2800 (Braille pattern blank), a symbol that prints as a space.
pub fn is_hidden_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    match c.general_category() {
        GeneralCategory::Control
        | GeneralCategory::Format
        | GeneralCategory::LineSeparator
        | GeneralCategory::ParagraphSeparator => true,
        GeneralCategory::SpaceSeparator => c != ' ',
        _ => is_other_default_ignorable(c),
    }
}

/// Default-ignorable code points (Unicode's `Default_Ignorable_Code_Point`) that are not in
/// the categories [`is_hidden_char`] refuses as a whole: marks and letters that render as
/// nothing, and the unassigned code points reserved as default-ignorable.
fn is_other_default_ignorable(c: char) -> bool {
    matches!(
        c,
        // Combining grapheme joiner; Hangul choseong and jungseong fillers; Khmer inherent
        // vowels; Mongolian free variation selectors.
        '\u{034F}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}' | '\u{180B}'..='\u{180F}'
            // Reserved; Hangul filler; variation selectors; halfwidth Hangul filler; reserved.
            | '\u{2065}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
            // Braille pattern blank: a symbol that prints as a space.
            | '\u{2800}'
            // Tags (also Cf), the variation selectors supplement, reserved.
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

impl fmt::Display for KeyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {:?}", self.service)?;
        if let Some(u) = &self.user {
            write!(f, ", user {u:?}")?;
        }
        if let Some(p) = &self.project {
            write!(f, ", project {p:?}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyIdentity({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(KeyIdentity::new("").is_err());
        assert!(KeyIdentity::new("open\nai").is_err());
        assert!(KeyIdentity::new("open\u{7}ai").is_err());
        assert!(KeyIdentity::new(" openai").is_err());
        assert!(KeyIdentity::new("x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(KeyIdentity::new("x".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(
            KeyIdentity::new("openai")
                .and_then(|i| i.with_user(Some("")))
                .is_err()
        );
        assert!(KeyIdentity::new("o'; DROP TABLE api_keys; --").is_ok());
        assert!(KeyIdentity::new("Ωμέγα 鍵").is_ok());
    }

    /// Issue 23: `exec --env-file .env` took each value of an ordinary `.env` for a service
    /// name: the key was printed in the error and written into the audit trail. A name with
    /// the shape of a key is refused, and the refusal does not repeat it.
    #[test]
    fn names_that_look_like_keys_are_refused_without_being_repeated() {
        for key in [
            "sk-proj-FAKEabcdefghij0123456789",
            "sk-ant-api03-FAKE0123456789abcdef",
            "AKIAFAKE0123456789AB",
            "hf_FAKEabcdefghijklmnopqrstu",
            "FAKEaB3dE5gH7jK9mN1pQ3sT5vX",
            "llmacc-12-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let e = KeyIdentity::new(key).expect_err(key).to_string();
            assert!(e.contains("looks like an API key"), "{e}");
            assert!(!e.contains(key) && !e.contains(&key[4..12]), "{e}");
        }
        for name in [
            "openai",
            "azure-openai",
            "mistral-large-2407",
            "alice@example.com",
            "sk-short",
            "team_search_production_eu_west_1",
            "projectnumber1234567890abc",
        ] {
            assert!(KeyIdentity::new(name).is_ok(), "{name}");
        }
        // Blank-looking symbols are refused as invisible characters are.
        assert!(KeyIdentity::new("open\u{2800}ai").is_err());
    }

    /// Characters that print as nothing, or rearrange what follows, are refused anywhere in a
    /// name: each of these would make a name that looks like `openai` (or like another).
    #[test]
    fn invisible_and_formatting_characters_are_refused() {
        let hidden = [
            '\u{0}',
            '\u{7}',
            '\u{1b}',
            '\u{7f}', // C0, ESC, DEL
            '\u{80}',
            '\u{85}',
            '\u{9b}', // C1 (NEL, CSI)
            '\u{ad}', // soft hyphen (Cf)
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}', // zero-width
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',  // bidi
            '\u{e0041}', // tag character
            '\u{2028}',
            '\u{2029}', // line and paragraph separators
            '\u{a0}',
            '\u{2007}',
            '\u{3000}', // spaces other than U+0020
            '\u{34f}',
            '\u{3164}',
            '\u{fe0f}',
            '\u{e0100}', // other default-ignorables
        ];
        for c in hidden {
            assert!(is_hidden_char(c), "U+{:04X}", u32::from(c));
            for name in [
                format!("open{c}ai"),
                format!("openai{c}"),
                format!("{c}openai"),
            ] {
                let err = KeyIdentity::new(name.clone()).expect_err("refused");
                let text = err.to_string();
                assert!(text.contains(&format!("U+{:04X}", u32::from(c))), "{text}");
                assert!(!text.contains(c), "the message shows the code point only");
                for field in ["user", "project"] {
                    let id = KeyIdentity::new("openai").expect("valid");
                    let err = match field {
                        "user" => id.with_user(Some(name.as_str())),
                        _ => id.with_project(Some(name.as_str())),
                    }
                    .expect_err("refused");
                    assert!(err.to_string().contains(field), "{err}");
                }
            }
        }
        // Visible characters, spaces inside, marks and other scripts stay valid.
        for name in [
            "open ai",
            "café",
            "cafe\u{301}",
            "Ωμέγα 鍵",
            "مفتاح",
            "a\\b",
            "é-ß_ø.1",
        ] {
            KeyIdentity::new(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        assert!(!is_hidden_char(' ') && !is_hidden_char('a') && !is_hidden_char('\u{301}'));
    }

    #[test]
    fn scope_key_distinguishes_absent_from_named() {
        let none = KeyIdentity::from_parts("openai", None, None).expect("valid");
        let global = KeyIdentity::from_parts("openai", Some("global"), None).expect("valid");
        let proj = KeyIdentity::from_parts("openai", None, Some("global")).expect("valid");
        assert_ne!(none.scope_key(), global.scope_key());
        assert_ne!(global.scope_key(), proj.scope_key());
        let a = KeyIdentity::from_parts("a_b", Some("c"), None).expect("valid");
        let b = KeyIdentity::from_parts("a", Some("b_c"), None).expect("valid");
        assert_ne!(a.scope_key(), b.scope_key());
        assert_eq!(none.scope_key(), none.clone().scope_key());
        assert_eq!(none.scope_key().len(), 64);
    }
}
