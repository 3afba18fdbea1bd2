//! Building blocks of typed settings, shared by the facade's settings and the provider crates'
//! configs: values that are one of a few names ([`Choice`], [`choice_impls!`](crate::choice_impls)),
//! and strings where empty means "not set" ([`empty_is_none`]).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

#[doc(hidden)]
pub use serde as __serde;

/// A setting whose value is one of a few names. [`choice_impls!`](crate::choice_impls) gives it
/// `Display` (the name), `FromStr` and `Deserialize` (by name, trimmed, case-insensitive).
pub trait Choice: Sized + Copy + Default + 'static {
    /// What the value is, for messages (`provider`, `Azure credential kind`).
    const WHAT: &'static str;
    /// Every value.
    const ALL: &'static [Self];
    /// Whether an empty (or blank) value means the default.
    const EMPTY_IS_DEFAULT: bool;
    /// The value's name.
    fn name(self) -> &'static str;
}

/// The value named `text` (trimmed, case-insensitive); an unknown name is a message listing
/// the known ones.
pub fn parse_choice<T: Choice>(text: &str) -> std::result::Result<T, String> {
    let name = text.trim();
    if T::EMPTY_IS_DEFAULT && name.is_empty() {
        return Ok(T::default());
    }
    T::ALL
        .iter()
        .copied()
        .find(|c| c.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|c| c.name()).collect();
            format!(
                "unknown {} `{text}`; expected one of: {}",
                T::WHAT,
                names.join(", ")
            )
        })
}

/// `Display` (the name), `FromStr` (an unknown name is [`Error::Config`](crate::Error)) and
/// `Deserialize` (by name, trimmed and case-insensitive) for [`Choice`] types.
#[macro_export]
macro_rules! choice_impls {
    ($($t:ty),* $(,)?) => {$(
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::settings::Choice::name(*self))
            }
        }

        impl ::std::str::FromStr for $t {
            type Err = $crate::Error;

            fn from_str(s: &str) -> $crate::Result<Self> {
                $crate::settings::parse_choice(s).map_err($crate::Error::config)
            }
        }

        impl<'de> $crate::settings::__serde::Deserialize<'de> for $t {
            fn deserialize<D: $crate::settings::__serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let text =
                    <::std::string::String as $crate::settings::__serde::Deserialize>::deserialize(d)?;
                $crate::settings::parse_choice(&text)
                    .map_err(<D::Error as $crate::settings::__serde::de::Error>::custom)
            }
        }
    )*};
}

/// Deserializes a string setting where empty (or blank) means "not set".
pub fn empty_is_none<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

/// Like [`empty_is_none`], for a path.
pub fn empty_is_none_path<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<PathBuf>, D::Error> {
    Ok(empty_is_none(d)?.map(PathBuf::from))
}
