//! Time windows of limits: fixed UTC calendar windows and rolling windows.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use llm_accounting_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// The unit of a fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowUnit {
    /// A second.
    Second,
    /// A minute.
    Minute,
    /// An hour.
    Hour,
    /// A calendar day (UTC).
    Day,
    /// A calendar week, Monday to Sunday (UTC).
    Week,
    /// A calendar month (UTC).
    Month,
}

impl WindowUnit {
    /// Every unit, shortest first.
    pub const ALL: [WindowUnit; 6] = [
        WindowUnit::Second,
        WindowUnit::Minute,
        WindowUnit::Hour,
        WindowUnit::Day,
        WindowUnit::Week,
        WindowUnit::Month,
    ];

    /// The lowercase name (`second` ... `month`).
    pub fn as_str(self) -> &'static str {
        match self {
            WindowUnit::Second => "second",
            WindowUnit::Minute => "minute",
            WindowUnit::Hour => "hour",
            WindowUnit::Day => "day",
            WindowUnit::Week => "week",
            WindowUnit::Month => "month",
        }
    }

    /// Its length in seconds (months: `None`, they differ).
    fn seconds(self) -> Option<i64> {
        match self {
            WindowUnit::Second => Some(1),
            WindowUnit::Minute => Some(60),
            WindowUnit::Hour => Some(3_600),
            WindowUnit::Day => Some(DAY),
            WindowUnit::Week => Some(7 * DAY),
            WindowUnit::Month => None,
        }
    }
}

impl FromStr for WindowUnit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        WindowUnit::ALL
            .into_iter()
            .find(|u| u.as_str() == s.trim_end_matches('s'))
            .ok_or_else(|| {
                Error::invalid(
                    "window",
                    format!("unknown unit `{s}` (second, minute, hour, day, week, month)"),
                )
            })
    }
}

/// Over which time a limit counts usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Window {
    /// Fixed calendar windows in UTC: `every` units long. Windows of seconds start at each
    /// minute and every `every` seconds after it, windows of minutes at each hour, windows
    /// of hours at midnight UTC; the last of a minute, hour or day is cut there (seven-hour
    /// windows: 00–07, 07–14, 14–21, 21–24). Days and weeks are counted from 1970-01-01
    /// (weeks from Monday 1970-01-05); months from January of year 0, so `every = 3` gives
    /// quarters. These are the Python llm-accounting package's windows.
    Fixed {
        /// The unit.
        unit: WindowUnit,
        /// How many units one window spans (at least 1).
        every: u32,
    },
    /// The last `seconds` seconds before now.
    Rolling {
        /// Length in seconds (at least 1).
        seconds: u64,
    },
    /// From 00:00 UTC on the first day of the month `months` months before the current one,
    /// until now: the Python llm-accounting package's `monthly_rolling` (so `1` counts last
    /// month and this month so far).
    RollingMonths {
        /// How many whole months before the current one the window starts (at least 1).
        months: u32,
    },
}

impl Window {
    /// A fixed window of `every` units.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `every` is 0.
    pub fn fixed(unit: WindowUnit, every: u32) -> Result<Window> {
        if every == 0 {
            return Err(Error::invalid(
                "window",
                "a fixed window spans at least one unit (every = 0)",
            ));
        }
        Ok(Window::Fixed { unit, every })
    }

    /// A rolling window of `seconds`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `seconds` is 0 or beyond about 100 years.
    pub fn rolling(seconds: u64) -> Result<Window> {
        if seconds == 0 {
            return Err(Error::invalid(
                "window",
                "a rolling window must be longer than 0",
            ));
        }
        if seconds > 100 * 366 * 86_400 {
            return Err(Error::invalid(
                "window",
                "a rolling window is at most 100 years",
            ));
        }
        Ok(Window::Rolling { seconds })
    }

    /// A window from the first of the month `months` months back (see
    /// [`Window::RollingMonths`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `months` is 0 or beyond 1,200 (a century).
    pub fn rolling_months(months: u32) -> Result<Window> {
        if months == 0 || months > 1_200 {
            return Err(Error::invalid(
                "window",
                "a rolling window of months spans 1 to 1200 months",
            ));
        }
        Ok(Window::RollingMonths { months })
    }

    /// Checks the invariants (for values read from storage).
    ///
    /// # Errors
    ///
    /// As [`Window::fixed`] and [`Window::rolling`].
    pub fn validate(self) -> Result<Window> {
        match self {
            Window::Fixed { unit, every } => Window::fixed(unit, every),
            Window::Rolling { seconds } => Window::rolling(seconds),
            Window::RollingMonths { months } => Window::rolling_months(months),
        }
    }

    /// The window that contains `now`: its start (inclusive) and end (exclusive). A rolling
    /// window ends just after `now`.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        match self {
            Window::Rolling { seconds } => {
                let len = Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2));
                (now - len, now + Duration::microseconds(1))
            }
            Window::RollingMonths { months } => (
                month_start(month_index(now) - i64::from(months)),
                now + Duration::microseconds(1),
            ),
            Window::Fixed {
                unit: WindowUnit::Month,
                every,
            } => month_bounds(now, every),
            Window::Fixed { unit, every } => {
                let step = unit.seconds().unwrap_or(DAY) * i64::from(every.max(1));
                let t = now.timestamp();
                let enclosing = match unit {
                    WindowUnit::Second => Some(60),
                    WindowUnit::Minute => Some(3_600),
                    WindowUnit::Hour => Some(DAY),
                    _ => None,
                };
                let (start, end) = if let Some(period) = enclosing {
                    // Within the minute, hour or day; the last window is cut at its end.
                    let base = t.div_euclid(period) * period;
                    let start = base + (t - base) / step * step;
                    (start, (start + step).min(base + period))
                } else {
                    // Days and weeks: from the epoch (weeks from its first Monday).
                    let origin = if unit == WindowUnit::Week { 4 * DAY } else { 0 };
                    let start = origin + (t - origin).div_euclid(step) * step;
                    (start, start + step)
                };
                (at(start), at(end))
            }
        }
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn month_bounds(now: DateTime<Utc>, every: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let every = i64::from(every.max(1));
    let index = month_index(now);
    let start = index.div_euclid(every) * every;
    (month_start(start), month_start(start + every))
}

/// 00:00 UTC on the first of the month `n` months after the one holding `t`.
pub(crate) fn months_after(t: DateTime<Utc>, n: u32) -> DateTime<Utc> {
    month_start(month_index(t) + i64::from(n))
}

fn month_index(t: DateTime<Utc>) -> i64 {
    i64::from(t.year()) * 12 + i64::from(t.month0())
}

fn month_start(index: i64) -> DateTime<Utc> {
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(i32::MAX);
    let month = u32::try_from(index.rem_euclid(12)).unwrap_or(0) + 1;
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |d| d.and_utc())
}

/// A length in seconds as `--rolling` takes it: `24h`, `90m`, `1h30m`, `7d` (whole days from
/// two days on), `45s`.
fn compact_duration(seconds: u64) -> String {
    if seconds >= 2 * 86_400 && seconds.is_multiple_of(86_400) {
        return format!("{}d", seconds / 86_400);
    }
    let (h, m, s) = (seconds / 3_600, seconds % 3_600 / 60, seconds % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

impl fmt::Display for Window {
    /// `day`, `6 hours`, `rolling 24h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Fixed { unit, every: 1 } => f.write_str(unit.as_str()),
            Window::Fixed { unit, every } => write!(f, "{every} {}s", unit.as_str()),
            Window::Rolling { seconds } => {
                write!(f, "rolling {}", compact_duration(*seconds))
            }
            Window::RollingMonths { months: 1 } => f.write_str("rolling month (from the 1st)"),
            Window::RollingMonths { months } => {
                write!(f, "rolling {months} months (from the 1st)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect(s)
            .with_timezone(&Utc)
    }

    fn fixed(unit: WindowUnit, every: u32, now: &str) -> (DateTime<Utc>, DateTime<Utc>) {
        Window::fixed(unit, every).expect("valid").bounds(t(now))
    }

    #[test]
    fn calendar_windows_in_utc() {
        let now = "2026-03-15T13:47:29.5Z";
        assert_eq!(
            fixed(WindowUnit::Second, 1, now),
            (t("2026-03-15T13:47:29Z"), t("2026-03-15T13:47:30Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Minute, 1, now),
            (t("2026-03-15T13:47:00Z"), t("2026-03-15T13:48:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Hour, 1, now),
            (t("2026-03-15T13:00:00Z"), t("2026-03-15T14:00:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Day, 1, now),
            (t("2026-03-15T00:00:00Z"), t("2026-03-16T00:00:00Z"))
        );
        // 2026-03-15 is a Sunday: the week began on Monday the 9th.
        assert_eq!(
            fixed(WindowUnit::Week, 1, now),
            (t("2026-03-09T00:00:00Z"), t("2026-03-16T00:00:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Month, 1, now),
            (t("2026-03-01T00:00:00Z"), t("2026-04-01T00:00:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Month, 1, "2026-12-31T23:59:59Z"),
            (t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn every_n_aligns_to_midnight_or_month_start() {
        let now = "2026-03-15T13:47:29Z";
        assert_eq!(
            fixed(WindowUnit::Hour, 6, now),
            (t("2026-03-15T12:00:00Z"), t("2026-03-15T18:00:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Minute, 15, now),
            (t("2026-03-15T13:45:00Z"), t("2026-03-15T14:00:00Z"))
        );
        // Seven-minute windows start at each hour, as the Python package's do; the last of
        // the hour is cut at its end.
        assert_eq!(
            fixed(WindowUnit::Minute, 7, now),
            (t("2026-03-15T13:42:00Z"), t("2026-03-15T13:49:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Minute, 7, "2026-03-15T13:59:00Z"),
            (t("2026-03-15T13:56:00Z"), t("2026-03-15T14:00:00Z"))
        );
        // Seven-second windows start at each minute.
        assert_eq!(
            fixed(WindowUnit::Second, 7, now),
            (t("2026-03-15T13:47:28Z"), t("2026-03-15T13:47:35Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Second, 90, now),
            (t("2026-03-15T13:47:00Z"), t("2026-03-15T13:48:00Z"))
        );
        // Thirty-hour windows: the day.
        assert_eq!(
            fixed(WindowUnit::Hour, 30, now),
            (t("2026-03-15T00:00:00Z"), t("2026-03-16T00:00:00Z"))
        );
        // Seven-hour windows: the last of the day is cut at midnight.
        assert_eq!(
            fixed(WindowUnit::Hour, 7, "2026-03-15T22:00:00Z"),
            (t("2026-03-15T21:00:00Z"), t("2026-03-16T00:00:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Month, 3, now),
            (t("2026-01-01T00:00:00Z"), t("2026-04-01T00:00:00Z"))
        );
        assert_eq!(
            fixed(WindowUnit::Month, 3, "2026-11-30T00:00:00Z"),
            (t("2026-10-01T00:00:00Z"), t("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn windows_contain_now_at_every_boundary() {
        for now in [
            "2026-01-01T00:00:00Z",
            "2026-02-28T23:59:59.999999Z",
            "2024-02-29T12:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            for unit in WindowUnit::ALL {
                for every in [1, 2, 5, 7] {
                    let (s, e) = fixed(unit, every, now);
                    assert!(
                        s <= t(now) && t(now) < e,
                        "{unit:?}/{every} at {now}: {s}..{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn rolling_is_the_last_duration() {
        let (s, e) = Window::rolling(86_400)
            .expect("ok")
            .bounds(t("2026-03-15T13:00:00Z"));
        assert_eq!(s, t("2026-03-14T13:00:00Z"));
        assert!(e > t("2026-03-15T13:00:00Z"));
    }

    #[test]
    fn rolling_months_start_on_the_first_of_an_earlier_month() {
        let w = Window::rolling_months(1).expect("ok");
        let (s, e) = w.bounds(t("2026-11-30T10:00:00Z"));
        assert_eq!(s, t("2026-10-01T00:00:00Z"));
        assert!(e > t("2026-11-30T10:00:00Z"));
        let (s, _) = Window::rolling_months(3)
            .expect("ok")
            .bounds(t("2026-02-10T00:00:00Z"));
        assert_eq!(s, t("2025-11-01T00:00:00Z"));
        assert_eq!(w.to_string(), "rolling month (from the 1st)");
        for (seconds, shown) in [
            (86_400, "rolling 24h"),
            (3_600, "rolling 1h"),
            (5_400, "rolling 1h30m"),
            (45, "rolling 45s"),
            (604_800, "rolling 7d"),
        ] {
            assert_eq!(Window::Rolling { seconds }.to_string(), shown);
        }
        assert!(Window::rolling_months(0).is_err());
    }

    #[test]
    fn zero_windows_are_refused() {
        assert!(Window::fixed(WindowUnit::Day, 0).is_err());
        assert!(Window::rolling(0).is_err());
        assert!("fortnight".parse::<WindowUnit>().is_err());
        assert_eq!("hours".parse::<WindowUnit>().expect("ok"), WindowUnit::Hour);
    }
}
