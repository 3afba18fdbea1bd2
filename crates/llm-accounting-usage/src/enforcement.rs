//! [`Enforcement`]: how quota limits are enforced across processes
//! (`accounting.enforcement`).

use std::fmt;
use std::str::FromStr;

use llm_accounting_core::{Error, Result};
use serde::{Deserialize, Deserializer};

/// How quota limits are enforced across processes (`accounting.enforcement`).
///
/// Parsed by name, trimmed and case-insensitive; an empty value is the default (`strict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Enforcement {
    /// `strict`: every reservation is checked and held atomically in the database; no
    /// overshoot, whatever the number of processes.
    #[default]
    Strict,
    /// `local`: per-process counters synchronised every `accounting.sync_ms`; checks never
    /// wait for the database, and processes together may pass a limit by up to
    /// (processes - 1) x rate x interval.
    Local,
}

impl Enforcement {
    /// Every mode.
    pub const ALL: &'static [Enforcement] = &[Enforcement::Strict, Enforcement::Local];

    /// The name in settings: `strict` or `local`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Enforcement::Strict => "strict",
            Enforcement::Local => "local",
        }
    }

    /// The mode named `text` (trimmed, case-insensitive; empty: the default), or the message
    /// naming the accepted values.
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let name = text.trim();
        if name.is_empty() {
            return Ok(Enforcement::default());
        }
        Enforcement::ALL
            .iter()
            .copied()
            .find(|e| e.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<&str> = Enforcement::ALL.iter().map(|e| e.as_str()).collect();
                format!(
                    "unknown enforcement `{text}`; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Enforcement {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Enforcement::parse(s).map_err(Error::config)
    }
}

impl<'de> Deserialize<'de> for Enforcement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Enforcement::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_trimmed_and_case_insensitive() {
        for e in Enforcement::ALL {
            assert_eq!(e.to_string().parse::<Enforcement>().expect("own name"), *e);
        }
        assert_eq!(
            " LOCAL ".parse::<Enforcement>().expect("ok"),
            Enforcement::Local
        );
        assert_eq!(
            "".parse::<Enforcement>().expect("empty"),
            Enforcement::Strict
        );
        assert_eq!(
            " ".parse::<Enforcement>().expect("blank"),
            Enforcement::Strict
        );
        let e = "lenient".parse::<Enforcement>().expect_err("unknown");
        assert!(matches!(e, Error::Config { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("unknown enforcement `lenient`; expected one of: strict, local"),
            "{e}"
        );
    }

    #[test]
    fn deserializes_by_name() {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error as DeError, StrDeserializer};
        let de: StrDeserializer<'_, DeError> = "Local".into_deserializer();
        assert_eq!(
            Enforcement::deserialize(de).expect("ok"),
            Enforcement::Local
        );
        let de: StrDeserializer<'_, DeError> = "lenient".into_deserializer();
        let e = Enforcement::deserialize(de).expect_err("unknown");
        assert!(e.to_string().contains("lenient"), "{e}");
    }
}
