//! [`clap::ValueEnum`] for the library's choices that command lines take (feature `clap`):
//! [`WindowUnit`] (`--per`), [`GroupBy`] (`--by`) and [`Period`] (`--period`), with the names and help the
//! `llm-accounting` CLI shows.

use clap::ValueEnum;
use clap::builder::PossibleValue;

use crate::{GroupBy, Period, WindowUnit};

/// `second`, `minute`, `hour`, `day`, `week`, `month`.
impl ValueEnum for WindowUnit {
    fn value_variants<'a>() -> &'a [Self] {
        &WindowUnit::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            WindowUnit::Second => "A second",
            WindowUnit::Minute => "A minute",
            WindowUnit::Hour => "An hour",
            WindowUnit::Day => "A calendar day (UTC)",
            WindowUnit::Week => "A calendar week, from Monday (UTC)",
            WindowUnit::Month => "A calendar month (UTC)",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

/// `hour`, `day`, `week`, `month`, `year`.
impl ValueEnum for Period {
    fn value_variants<'a>() -> &'a [Self] {
        &Period::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Period::Hour => "Per hour",
            Period::Day => "Per calendar day (UTC)",
            Period::Week => "Per calendar week, from Monday (UTC)",
            Period::Month => "Per calendar month (UTC)",
            Period::Year => "Per calendar year (UTC)",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

/// `model`, `service`, `user`, `project`, `caller`, `key`; [`GroupBy::Nothing`] is no value
/// (it is what no `--by` means).
impl ValueEnum for GroupBy {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            GroupBy::Model,
            GroupBy::Service,
            GroupBy::User,
            GroupBy::Project,
            GroupBy::Caller,
            GroupBy::Key,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            GroupBy::Nothing => return None,
            GroupBy::Model => "Per model",
            GroupBy::Service => "Per service",
            GroupBy::User => "Per user",
            GroupBy::Project => "Per project",
            GroupBy::Caller => "Per caller",
            GroupBy::Key => "Per stored key and version",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_nothing_is_no_value() {
        for u in WindowUnit::value_variants() {
            let name = u.to_possible_value().expect("named").get_name().to_owned();
            assert_eq!(
                <WindowUnit as ValueEnum>::from_str(&name, false).expect(&name),
                *u
            );
        }
        for g in GroupBy::value_variants() {
            let name = g.to_possible_value().expect("named").get_name().to_owned();
            assert_eq!(
                <GroupBy as ValueEnum>::from_str(&name, false).expect(&name),
                *g
            );
        }
        assert!(GroupBy::Nothing.to_possible_value().is_none());
        assert!(<GroupBy as ValueEnum>::from_str("nothing", true).is_err());
    }
}
