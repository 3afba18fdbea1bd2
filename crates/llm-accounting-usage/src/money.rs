//! Exact amounts of money: integer micro-dollars, never a float.

use std::fmt;
use std::str::FromStr;

use llm_accounting_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Micro-dollars in one dollar.
pub const MICROS_PER_DOLLAR: u64 = 1_000_000;

/// An amount of US dollars, held exactly as a whole number of micro-dollars ($0.000001).
///
/// Parsed from decimal text (`"0.0125"` is exactly 12,500 micro-dollars); digits beyond the
/// sixth decimal place are rounded half to even, as are the Python package's float costs
/// ([`Money::from_f64`]). Never negative.
///
/// ```
/// use llm_accounting_usage::Money;
/// let m: Money = "0.0125".parse().unwrap();
/// assert_eq!(m.micros(), 12_500);
/// assert_eq!(m.to_string(), "0.0125");
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// `micros` micro-dollars.
    pub const fn from_micros(micros: u64) -> Self {
        Money(micros)
    }

    /// The amount in micro-dollars.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Sum, saturating at the largest amount.
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// A float amount of dollars (the Python package's `cost` column), rounded half to even
    /// to micro-dollars through its shortest decimal form (so `0.0125` is 12,500 exactly).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a negative, infinite or NaN amount.
    pub fn from_f64(dollars: f64) -> Result<Money> {
        if !dollars.is_finite() {
            return Err(Error::invalid("cost", "not a finite number"));
        }
        // `{:?}` of an f64 is its shortest round-trip decimal, possibly with an exponent.
        let text = format!("{dollars:?}");
        parse_decimal(&expand_exponent(&text))
    }
}

impl fmt::Display for Money {
    /// Dollars with as many decimals as needed (`0.0125`, `3`, `1.5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_DOLLAR;
        let frac = self.0 % MICROS_PER_DOLLAR;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Money {
    type Err = Error;

    /// Decimal dollars: digits, optionally a point and more digits (`12`, `0.0125`, `.5`).
    /// No sign, exponent, or separators.
    fn from_str(s: &str) -> Result<Money> {
        parse_decimal(s)
    }
}

/// Turns `1.25e-5` into `0.0000125` (the decimal forms `{:?}` prints for small or large
/// floats).
fn expand_exponent(text: &str) -> String {
    let Some((mantissa, exp)) = text.split_once(['e', 'E']) else {
        return text.to_owned();
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return text.to_owned();
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let point = i64::try_from(int.len()).unwrap_or(0) + i64::from(exp);
    let body = if point <= 0 {
        let zeros = usize::try_from(-point).unwrap_or(0);
        format!("0.{}{digits}", "0".repeat(zeros))
    } else {
        let point = usize::try_from(point).unwrap_or(0);
        if point >= digits.len() {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    if negative { format!("-{body}") } else { body }
}

/// Parses decimal dollars into micro-dollars, rounding half to even past six decimals.
fn parse_decimal(s: &str) -> Result<Money> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(Error::invalid("cost", format!("`{s}` is negative")));
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let bad = || {
        Error::invalid(
            "cost",
            format!("`{s}` is not a decimal amount of dollars (example: 0.0125)"),
        )
    };
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let too_large = || Error::invalid("cost", format!("`{s}` is too large"));
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.trim_start_matches('0').parse::<u64>().or_else(|_| {
            if int.trim_start_matches('0').is_empty() {
                Ok(0)
            } else {
                Err(too_large())
            }
        })?
    };
    let (kept, rest) = frac.split_at(frac.len().min(6));
    let mut micros: u64 = format!("{kept:0<6}").parse().map_err(|_| bad())?;
    // Half to even on what lies past the sixth decimal.
    if let Some(first) = rest.bytes().next() {
        let tail_nonzero = rest.bytes().skip(1).any(|b| b != b'0');
        let round_up = match first {
            b'6'..=b'9' => true,
            b'5' => tail_nonzero || micros % 2 == 1,
            _ => false,
        };
        if round_up {
            micros += 1;
        }
    }
    whole
        .checked_mul(MICROS_PER_DOLLAR)
        .and_then(|w| w.checked_add(micros))
        .map(Money)
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> u64 {
        s.parse::<Money>().expect(s).micros()
    }

    #[test]
    fn decimal_text_is_exact() {
        assert_eq!(m("0.0125"), 12_500);
        assert_eq!(m("1"), 1_000_000);
        assert_eq!(m("1."), 1_000_000);
        assert_eq!(m(".5"), 500_000);
        assert_eq!(m("0.000001"), 1);
        assert_eq!(m("000.100000"), 100_000);
        assert_eq!(m("18446744073709.551615"), u64::MAX);
    }

    #[test]
    fn past_six_decimals_rounds_half_to_even() {
        assert_eq!(m("0.0000005"), 0);
        assert_eq!(m("0.0000015"), 2);
        assert_eq!(m("0.0000025"), 2);
        assert_eq!(m("0.00000251"), 3);
        assert_eq!(m("0.0000024999"), 2);
        assert_eq!(m("0.0000026"), 3);
    }

    #[test]
    fn bad_text_is_refused() {
        for bad in [
            "",
            "-1",
            "-0.5",
            "abc",
            "1e3",
            "1,5",
            "0x10",
            "NaN",
            "inf",
            ".",
            "1.2.3",
            "+1",
            "99999999999999999999",
        ] {
            let e = bad.parse::<Money>().expect_err(bad);
            assert_eq!(
                e.kind(),
                llm_accounting_core::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    #[test]
    fn floats_round_through_their_shortest_decimal() {
        assert_eq!(Money::from_f64(0.0125).expect("ok").micros(), 12_500);
        assert_eq!(Money::from_f64(0.1 + 0.2).expect("ok").micros(), 300_000);
        assert_eq!(Money::from_f64(1.25e-5).expect("ok").micros(), 12);
        assert_eq!(Money::from_f64(3.5e-6).expect("ok").micros(), 4);
        assert_eq!(Money::from_f64(2.5e-6).expect("ok").micros(), 2);
        assert_eq!(Money::from_f64(1e3).expect("ok").micros(), 1_000_000_000);
        assert!(Money::from_f64(-0.01).is_err());
        assert!(Money::from_f64(f64::NAN).is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["0.0125", "3", "1.5", "0.000001", "123.456789"] {
            assert_eq!(s.parse::<Money>().expect(s).to_string(), s);
        }
    }
}
