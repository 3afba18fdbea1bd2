//! Quota requests and decisions, and the one rule that decides them.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::{Amounts, Limit, LimitKind, Money, Scope, UsageEvent, Window};

/// A call about to be made: who, what, and an estimate of what it will use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaRequest {
    /// The call's attributes (the model is required; the key is set by gated hand-outs).
    pub scope: Scope,
    /// Estimated prompt tokens (0 when unknown).
    pub input_tokens: u64,
    /// Estimated completion tokens (0 when unknown).
    pub output_tokens: u64,
    /// Estimated cost (zero when unknown).
    pub cost: Money,
}

impl QuotaRequest {
    /// A request for one call to `model`.
    pub fn new(model: impl Into<String>) -> Self {
        QuotaRequest {
            scope: Scope {
                model: Some(model.into()),
                ..Scope::default()
            },
            ..QuotaRequest::default()
        }
    }

    /// Sets the service.
    pub fn service(mut self, v: Option<impl Into<String>>) -> Self {
        self.scope.service = v.map(Into::into);
        self
    }

    /// Sets the user.
    pub fn user(mut self, v: Option<impl Into<String>>) -> Self {
        self.scope.user = v.map(Into::into);
        self
    }

    /// Sets the project.
    pub fn project(mut self, v: Option<impl Into<String>>) -> Self {
        self.scope.project = v.map(Into::into);
        self
    }

    /// Sets the caller.
    pub fn caller(mut self, v: Option<impl Into<String>>) -> Self {
        self.scope.caller = v.map(Into::into);
        self
    }

    /// Sets the key identity (as printed) that will serve the call.
    pub fn key(mut self, v: Option<impl Into<String>>) -> Self {
        self.scope.key = v.map(Into::into);
        self
    }

    /// Sets the estimated tokens.
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.input_tokens = input;
        self.output_tokens = output;
        self
    }

    /// Sets the estimated cost.
    pub fn cost(mut self, cost: Money) -> Self {
        self.cost = cost;
        self
    }

    /// Checks the request's names (the model is required; at most
    /// [`crate::MAX_FIELD_CHARS`], no control characters) and estimates, as
    /// [`UsageEvent::validate`] checks an event's.
    ///
    /// # Errors
    ///
    /// [`llm_accounting_core::Error::InvalidInput`] naming the field.
    pub fn validate(&self) -> llm_accounting_core::Result<()> {
        // The event's rules, without building one (this runs before every in-process check).
        let model = self.scope.model.as_deref().unwrap_or_default();
        if model.is_empty() {
            return Err(llm_accounting_core::Error::invalid("model", "it is empty"));
        }
        let s = &self.scope;
        for (field, value) in [
            ("model", &s.model),
            ("service", &s.service),
            ("user", &s.user),
            ("project", &s.project),
            ("caller", &s.caller),
        ] {
            crate::event::check_name(field, value.as_ref())?;
        }
        crate::event::check_amounts(
            [
                ("prompt tokens", self.input_tokens),
                ("completion tokens", self.output_tokens),
            ],
            self.cost,
        )
    }

    /// The request scoped to the key of `identity`, as [`crate::Accounting::get_keys`]
    /// counts a hand-out of that key: `key` = the identity; `service`, `user` and `project` =
    /// the identity's where the request leaves them unset.
    pub fn for_key(&self, identity: &llm_accounting_core::KeyIdentity) -> Self {
        let mut r = self.clone();
        r.scope.key = Some(identity.to_string());
        let s = &mut r.scope;
        s.service
            .get_or_insert_with(|| identity.service().to_owned());
        if s.user.is_none() {
            s.user = identity.user().map(str::to_owned);
        }
        if s.project.is_none() {
            s.project = identity.project().map(str::to_owned);
        }
        r
    }

    /// What the request asks for: one call and its estimates.
    pub fn amounts(&self) -> Amounts {
        Amounts {
            requests: 1,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: self.cost,
        }
    }
}

/// Usage counted against a limit in its current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The amounts (events and live reservations).
    pub amounts: Amounts,
    /// The oldest event counted, for when a rolling window frees room.
    pub oldest: Option<DateTime<Utc>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// The limit that refused it.
    pub limit: Limit,
    /// Usage counted against it (in the limit's unit; micro-dollars for cost).
    pub usage: u64,
    /// The request's own amount.
    pub requested: u64,
    /// The limit's maximum.
    pub max: u64,
    /// When its window ends (fixed) or its oldest usage leaves it (rolling).
    pub resets_at: DateTime<Utc>,
}

impl Denial {
    /// One line: the limit, usage/maximum and reset time.
    pub fn message(&self) -> String {
        let k = self.limit.kind;
        format!(
            "quota exceeded: limit #{} ({} per {} for {}): usage {}/{} (this request {}), resets at {}",
            self.limit.id,
            k,
            self.limit.window,
            self.limit.scope,
            k.format(self.usage),
            k.format(self.max),
            k.format(self.requested),
            self.resets_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

impl From<Denial> for llm_accounting_core::Error {
    fn from(d: Denial) -> Self {
        llm_accounting_core::Error::QuotaExceeded {
            message: d.message(),
            resets_at: Some(d.resets_at),
        }
    }
}

/// The answer to a quota check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaDecision {
    /// Every limit that applies leaves room.
    Allowed,
    /// A limit would be exceeded.
    Denied(Box<Denial>),
}

impl QuotaDecision {
    /// Whether allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, QuotaDecision::Allowed)
    }
}

/// The rule: a request is refused by `limit` when its usage already reached the maximum, or
/// when usage plus the request's amount would pass it.
pub fn check_limit(
    limit: &Limit,
    usage: &Usage,
    request: &Amounts,
    now: DateTime<Utc>,
) -> Option<Denial> {
    let used = limit.kind.of(&usage.amounts);
    let asked = limit.kind.of(request);
    if limit.is_unlimited() || used < limit.max && used.saturating_add(asked) <= limit.max {
        return None;
    }
    Some(Denial {
        limit: limit.clone(),
        usage: used,
        requested: asked,
        max: limit.max,
        resets_at: resets_at(limit.window, usage.oldest, now),
    })
}

/// When a window stops counting today's usage: the end of a fixed window; for a rolling one,
/// when its oldest counted usage leaves it (or a full length from now).
pub fn resets_at(
    window: Window,
    oldest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match window {
        Window::Rolling { seconds } => {
            let len = Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2));
            oldest.map_or(now + len, |o| (o + len).max(now))
        }
        Window::RollingMonths { months } => {
            // The window starts on the first of a month: usage leaves it when the month
            // `months` after its own has passed.
            let next = window.bounds(now).1;
            oldest.map_or(next, |o| {
                crate::window::months_after(o, months + 1).max(next)
            })
        }
        fixed => fixed.bounds(now).1,
    }
}

/// The limits that decide a call with the attributes `call`, in the order they are checked:
/// those whose scope matches, the most specific first ([`Limit::precedence`]), up to the
/// first unlimited one, which exempts the call from the rest (and is left out itself).
pub fn governing<'a>(limits: impl IntoIterator<Item = &'a Limit>, call: &Scope) -> Vec<&'a Limit> {
    let mut matching: Vec<&Limit> = limits
        .into_iter()
        .filter(|l| l.scope.matches(call))
        .collect();
    matching.sort_by_key(|l| l.precedence());
    if let Some(cut) = matching.iter().position(|l| l.is_unlimited()) {
        matching.truncate(cut);
    }
    matching
}

/// Whether `event` counts against `limit`'s scope (its window aside).
pub fn counts_against(limit: &Limit, event: &UsageEvent) -> bool {
    limit.scope.matches(&Scope::of_event(event))
}

/// The kinds in which `limit` counts amounts: a helper for stores that sum only what a limit
/// needs.
pub fn needs_tokens(kind: LimitKind) -> bool {
    matches!(
        kind,
        LimitKind::InputTokens | LimitKind::OutputTokens | LimitKind::TotalTokens
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WindowUnit;

    fn limit(kind: LimitKind, max: u64) -> Limit {
        Limit {
            id: 1,
            scope: Scope::global(),
            kind,
            max,
            window: Window::fixed(WindowUnit::Day, 1).expect("ok"),
            created_at: Utc::now(),
        }
    }

    fn usage(requests: u64, input: u64) -> Usage {
        Usage {
            amounts: Amounts {
                requests,
                input_tokens: input,
                ..Amounts::default()
            },
            oldest: None,
        }
    }

    #[test]
    fn the_last_unit_is_allowed_and_the_next_is_not() {
        let l = limit(LimitKind::Requests, 3);
        let one = QuotaRequest::new("m").amounts();
        assert!(check_limit(&l, &usage(2, 0), &one, Utc::now()).is_none());
        let d = check_limit(&l, &usage(3, 0), &one, Utc::now()).expect("denied");
        assert_eq!((d.usage, d.max, d.requested), (3, 3, 1));
    }

    #[test]
    fn an_exhausted_budget_refuses_even_a_zero_estimate() {
        let l = limit(LimitKind::InputTokens, 100);
        let zero = QuotaRequest::new("m").amounts();
        assert!(check_limit(&l, &usage(0, 99), &zero, Utc::now()).is_none());
        assert!(check_limit(&l, &usage(0, 100), &zero, Utc::now()).is_some());
        let big = QuotaRequest::new("m").tokens(2, 0).amounts();
        assert!(check_limit(&l, &usage(0, 99), &big, Utc::now()).is_some());
    }

    #[test]
    fn total_tokens_and_cost() {
        let a = Amounts {
            requests: 1,
            input_tokens: 5,
            output_tokens: 7,
            cost: Money::from_micros(12_500),
        };
        assert_eq!(LimitKind::TotalTokens.of(&a), 12);
        assert_eq!(LimitKind::Cost.of(&a), 12_500);
        assert_eq!(LimitKind::Cost.format(12_500), "$0.0125");
    }

    #[test]
    fn amounts_parse_per_kind() {
        assert_eq!(LimitKind::Cost.parse_amount("0.0125").expect("ok"), 12_500);
        assert_eq!(LimitKind::Requests.parse_amount("10").expect("ok"), 10);
        for bad in ["-1", "1.5", "ten", "", "1e3"] {
            assert!(LimitKind::Requests.parse_amount(bad).is_err(), "{bad}");
        }
        assert!(LimitKind::Cost.parse_amount("-0.5").is_err());
        assert!("tokens".parse::<LimitKind>().is_err());
    }

    #[test]
    fn the_most_specific_limits_come_first_and_an_exemption_ends_them() {
        let mk = |id: i64, user: Option<&str>, model: Option<&str>, max: u64| Limit {
            id,
            scope: Scope {
                user: user.map(Into::into),
                model: model.map(Into::into),
                ..Scope::default()
            },
            max,
            ..limit(LimitKind::Requests, 0)
        };
        let limits = [
            mk(1, None, None, 5),
            mk(2, Some("alice"), None, Limit::UNLIMITED),
            mk(3, Some("alice"), Some("m"), 3),
            mk(4, None, Some("m"), 4),
            mk(5, Some("bob"), None, 1),
        ];
        let ids =
            |call: &Scope| -> Vec<i64> { governing(&limits, call).iter().map(|l| l.id).collect() };
        let call = QuotaRequest::new("m").user(Some("alice")).scope;
        // 3 (two parts set), then 2 (exempt: 4 and 1 are not checked).
        assert_eq!(ids(&call), vec![3]);
        let call = QuotaRequest::new("m").user(Some("bob")).scope;
        // 4 and 5 are as specific: by id.
        assert_eq!(ids(&call), vec![4, 5, 1]);
        let call = QuotaRequest::new("z").user(Some("alice")).scope;
        assert!(ids(&call).is_empty());
        // An unlimited limit never denies on its own.
        let free = mk(9, None, None, Limit::UNLIMITED);
        assert!(
            check_limit(
                &free,
                &usage(u64::MAX, 0),
                &QuotaRequest::new("m").amounts(),
                Utc::now()
            )
            .is_none()
        );
    }

    #[test]
    fn a_scope_without_project_matches_only_calls_without_one() {
        let s = Scope {
            no_project: true,
            ..Scope::default()
        };
        assert!(s.matches(&QuotaRequest::new("m").scope));
        assert!(!s.matches(&QuotaRequest::new("m").project(Some("p")).scope));
        assert!(!s.is_global());
        assert_eq!(s.to_string(), "without project");
        assert_eq!(s.unset_parts(), 6);
    }

    #[test]
    fn scopes_match_every_set_part() {
        let limit_scope = Scope {
            model: Some("gpt-4o".into()),
            user: Some("alice".into()),
            ..Scope::default()
        };
        let mut call = QuotaRequest::new("gpt-4o").user(Some("alice")).scope;
        assert!(limit_scope.matches(&call));
        assert!(Scope::global().matches(&call));
        call.user = Some("bob".into());
        assert!(!limit_scope.matches(&call));
        call.user = None;
        assert!(!limit_scope.matches(&call));
        assert_eq!(limit_scope.to_string(), "model=gpt-4o user=alice");
    }
}
