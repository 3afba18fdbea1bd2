//! Arguments shared by the accounting commands: the scope flags, and value parsers for times,
//! durations and amounts.

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use llm_accounting::usage::{LimitKind, Money, QuotaRequest, Scope};

/// The scope flags of `quota check`, `usage track` and `limits set`: who makes a call, through
/// what, for what. The help here describes a call; a command words it its own way with
/// `#[command(mut_arg(...))]`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ScopeArgs {
    /// The service (provider).
    #[arg(long, value_name = "S")]
    pub(crate) service: Option<String>,
    /// Who makes the call.
    #[arg(long, value_name = "U")]
    pub(crate) user: Option<String>,
    /// For which project.
    #[arg(long, value_name = "P")]
    pub(crate) project: Option<String>,
    /// Which application or component.
    #[arg(long, value_name = "C")]
    pub(crate) caller: Option<String>,
}

/// The name that stands for any name in a limit's scope.
const ANY: &str = "*";

impl ScopeArgs {
    /// A quota request for a call to `model` in this scope.
    pub(crate) fn request(self, model: String) -> QuotaRequest {
        QuotaRequest::new(model)
            .service(self.service)
            .user(self.user)
            .project(self.project)
            .caller(self.caller)
    }

    /// The scope of a limit: these flags and `model`.
    ///
    /// `*` for any of them means "any", as it does in the Python package's `usage_limits`
    /// table; no other pattern is one (`gpt-4*` is a model name, matched exactly).
    pub(crate) fn scope(self, model: Option<String>) -> Scope {
        let any = |v: Option<String>| v.filter(|s| s != ANY);
        Scope {
            service: any(self.service),
            model: any(model),
            user: any(self.user),
            project: any(self.project),
            caller: any(self.caller),
            ..Scope::global()
        }
    }
}

/// RFC 3339 (`2026-12-01T00:00:00Z`), a date (`2026-12-01`, midnight UTC), or a duration back
/// from now (`24h`, `7d`).
pub(crate) fn time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(|| "not a valid date".to_owned());
    }
    humantime::parse_duration(s)
        .map_err(|_| {
            "neither an RFC 3339 time, a date (2026-12-01) nor a duration back from now (7d)"
                .to_owned()
        })
        .and_then(|d| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| Utc::now().checked_sub_signed(d))
                .ok_or_else(|| "too far back".to_owned())
        })
}

/// A decimal amount of US dollars (`0.0125`), exact. A negative amount is taken as a value
/// (`allow_negative_numbers` on the flag, not an unknown `-1` flag) and refused here.
pub(crate) fn money(s: &str) -> Result<Money, String> {
    if s.starts_with('-') {
        return Err("negative amounts are refused (a cost is 0 or more)".to_owned());
    }
    s.parse::<Money>().map_err(|e| match e {
        llm_accounting::Error::InvalidInput { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// Decimal seconds (`1.5`), exact to the microsecond.
pub(crate) fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let micros = s
        .parse::<Money>()
        .map_err(|_| format!("`{s}` is not a non-negative number of seconds (example: 1.5)"))?;
    Ok(std::time::Duration::from_micros(micros.micros()))
}

/// A limit type (`requests`, `input-tokens`, `output-tokens`, `total-tokens`, `cost`).
pub(crate) fn limit_kind(s: &str) -> Result<LimitKind, String> {
    s.parse::<LimitKind>().map_err(|e| match e {
        llm_accounting::Error::InvalidInput { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// A duration of at least one second (`24h`, `30m`).
pub(crate) fn window_length(s: &str) -> Result<u64, String> {
    let d = crate::cli::duration(s)?;
    if d.as_secs() == 0 {
        return Err("a rolling window must be at least 1s long".to_owned());
    }
    Ok(d.as_secs())
}

/// A range's `--since` must be before its `--until` (exit 2, naming both, otherwise).
pub(crate) fn since_before_until(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> llm_accounting::Result<()> {
    if since < until {
        return Ok(());
    }
    Err(llm_accounting::Error::invalid(
        "--since",
        format!(
            "{} is not before --until {}",
            crate::output::timestamp(&since),
            crate::output::timestamp(&until)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_amounts_and_kinds() {
        assert_eq!(
            time("2026-12-01").expect("date"),
            time("2026-12-01T00:00:00Z").expect("rfc3339")
        );
        assert!(time("7d").expect("ago") < Utc::now());
        assert!(time("yesterday").is_err());
        assert_eq!(money("0.0125").expect("ok").micros(), 12_500);
        assert!(money("-1").is_err());
        assert!(money("abc").is_err());
        assert_eq!(seconds("1.5").expect("ok").as_micros(), 1_500_000);
        assert!(seconds("-1").is_err());
        assert!(limit_kind("tokens").is_err());
        assert!(window_length("0s").is_err());
        assert_eq!(window_length("24h").expect("ok"), 86_400);
    }
}
