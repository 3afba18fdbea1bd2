//! Limits: a scope, a type, a maximum and a window.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::event::check_name;
use crate::{Money, UsageEvent, Window};

/// Which calls a limit counts: every part that is set must match; none set is global.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// Only calls to this service.
    pub service: Option<String>,
    /// Only calls to this model.
    pub model: Option<String>,
    /// Only calls by this user.
    pub user: Option<String>,
    /// Only calls for this project.
    pub project: Option<String>,
    /// Only calls by this caller.
    pub caller: Option<String>,
    /// Only calls served by this stored key (its identity as printed).
    pub key: Option<String>,
    /// Only calls without a project (and only their usage counts): the Python
    /// llm-accounting package's `PROJECT` limits that name no project. Never set with
    /// `project`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_project: bool,
}

impl Scope {
    /// An event at `at` of a call in this scope: its model (empty if unset), service, user,
    /// project and caller; nothing used yet.
    pub fn event_at(&self, at: DateTime<Utc>) -> UsageEvent {
        let mut e = UsageEvent::new(self.model.clone().unwrap_or_default(), at);
        e.service = self.service.clone();
        e.user = self.user.clone();
        e.project = self.project.clone();
        e.caller = self.caller.clone();
        e
    }

    /// The global scope (every call).
    pub fn global() -> Self {
        Scope::default()
    }

    /// Whether no part is set.
    pub fn is_global(&self) -> bool {
        !self.no_project && self.parts().iter().all(|(_, v)| v.is_none())
    }

    /// How many parts are unset (`no_project` counts as unset, as the Python package counts
    /// a limit without a project name): the fewer, the more specific the scope.
    pub fn unset_parts(&self) -> usize {
        self.parts().iter().filter(|(_, v)| v.is_none()).count()
    }

    /// The parts by name (`service`, `model`, `user`, `project`, `caller`, `key`).
    pub fn parts(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("service", self.service.as_deref()),
            ("model", self.model.as_deref()),
            ("user", self.user.as_deref()),
            ("project", self.project.as_deref()),
            ("caller", self.caller.as_deref()),
            ("key", self.key.as_deref()),
        ]
    }

    /// Whether a call with these attributes is inside the scope.
    pub fn matches(&self, call: &Scope) -> bool {
        fn part(limit: &Option<String>, call: &Option<String>) -> bool {
            limit.as_ref().is_none_or(|l| call.as_ref() == Some(l))
        }
        if self.no_project && call.project.is_some() {
            return false;
        }
        part(&self.model, &call.model)
            && part(&self.user, &call.user)
            && part(&self.service, &call.service)
            && part(&self.project, &call.project)
            && part(&self.caller, &call.caller)
            && part(&self.key, &call.key)
    }

    /// The attributes of an event, as a scope to match limits against.
    pub fn of_event(e: &UsageEvent) -> Scope {
        Scope {
            service: e.service.clone(),
            model: Some(e.model.clone()),
            user: e.user.clone(),
            project: e.project.clone(),
            caller: e.caller.clone(),
            key: e.key.as_ref().map(|k| k.identity.clone()),
            no_project: false,
        }
    }

    fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("service", &self.service),
            ("model", &self.model),
            ("user", &self.user),
            ("project", &self.project),
            ("caller", &self.caller),
        ] {
            check_name(field, value.as_ref())?;
            if value.as_deref() == Some("") {
                return Err(Error::invalid(field, "it is empty"));
            }
        }
        if self.no_project && self.project.is_some() {
            return Err(Error::invalid(
                "project",
                "a scope cannot name a project and be only for calls without one",
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Scope {
    /// `global`, or `model=gpt-4o user=alice`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, value) in self.parts() {
            if let Some(v) = value {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{name}={v}")?;
                first = false;
            }
        }
        if self.no_project {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str("without project")?;
            first = false;
        }
        if first {
            f.write_str("global")?;
        }
        Ok(())
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    /// Calls.
    Requests,
    /// Prompt tokens.
    InputTokens,
    /// Completion tokens.
    OutputTokens,
    /// Prompt plus completion tokens.
    TotalTokens,
    /// Cost in micro-dollars.
    Cost,
}

impl LimitKind {
    /// Every kind.
    pub const ALL: [LimitKind; 5] = [
        LimitKind::Requests,
        LimitKind::InputTokens,
        LimitKind::OutputTokens,
        LimitKind::TotalTokens,
        LimitKind::Cost,
    ];

    /// The name (`requests`, `input-tokens`, `output-tokens`, `total-tokens`, `cost`).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::InputTokens => "input-tokens",
            LimitKind::OutputTokens => "output-tokens",
            LimitKind::TotalTokens => "total-tokens",
            LimitKind::Cost => "cost",
        }
    }

    /// What `amounts` come to in this kind's unit (micro-dollars for cost).
    pub fn of(self, amounts: &Amounts) -> u64 {
        match self {
            LimitKind::Requests => amounts.requests,
            LimitKind::InputTokens => amounts.input_tokens,
            LimitKind::OutputTokens => amounts.output_tokens,
            LimitKind::TotalTokens => amounts.input_tokens.saturating_add(amounts.output_tokens),
            LimitKind::Cost => amounts.cost.micros(),
        }
    }

    /// An amount of this kind for people: `$0.0125` for cost, the number otherwise.
    pub fn format(self, amount: u64) -> String {
        if amount == Limit::UNLIMITED {
            return "unlimited".to_owned();
        }
        match self {
            LimitKind::Cost => format!("${}", Money::from_micros(amount)),
            _ => amount.to_string(),
        }
    }

    /// Parses a maximum written for this kind: a decimal amount of dollars for cost, a whole
    /// number otherwise, or `unlimited` ([`Limit::UNLIMITED`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a negative, fractional (tokens, requests) or non-numeric
    /// amount.
    pub fn parse_amount(self, text: &str) -> Result<u64> {
        if text.trim() == "unlimited" {
            return Ok(Limit::UNLIMITED);
        }
        if self == LimitKind::Cost {
            return text
                .parse::<Money>()
                .map(Money::micros)
                .map_err(|e| match e {
                    Error::InvalidInput { reason, .. } => Error::invalid("max", reason),
                    other => other,
                });
        }
        let t = text.trim();
        if t.starts_with('-') {
            return Err(Error::invalid("max", format!("`{t}` is negative")));
        }
        t.parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or_else(|| Error::invalid("max", format!("`{t}` is not a whole number")))
    }
}

impl FromStr for LimitKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        LimitKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "limit type",
                    format!(
                        "unknown type `{s}` (requests, input-tokens, output-tokens, total-tokens, cost)"
                    ),
                )
            })
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Amounts of every kind: what a request asks for, what a reservation holds, what usage came
/// to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    /// Calls.
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost.
    pub cost: Money,
}

impl Amounts {
    /// The amounts of one event (one request).
    pub fn of_event(e: &UsageEvent) -> Amounts {
        Amounts {
            requests: 1,
            input_tokens: e.prompt_tokens,
            output_tokens: e.completion_tokens,
            cost: e.cost,
        }
    }

    /// Sum, saturating.
    pub fn plus(self, o: Amounts) -> Amounts {
        Amounts {
            requests: self.requests.saturating_add(o.requests),
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
            cost: self.cost.saturating_add(o.cost),
        }
    }
}

/// A limit to create: no id yet. Its `max` may be [`Limit::UNLIMITED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLimit {
    /// Which calls it counts.
    pub scope: Scope,
    /// What it counts.
    pub kind: LimitKind,
    /// The most allowed per window (micro-dollars for cost).
    pub max: u64,
    /// The window.
    pub window: Window,
}

impl NewLimit {
    /// Checks scope names, the maximum and the window.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        self.scope.validate()?;
        self.window.validate()?;
        if self.max != Limit::UNLIMITED && i64::try_from(self.max).is_err() {
            return Err(Error::invalid("max", "too large"));
        }
        Ok(())
    }
}

/// A stored limit.
///
/// The limits that apply to a call are checked from the most specific to the least (fewest
/// unset scope parts first, then lowest id); an unlimited one ([`Limit::UNLIMITED`]) ends the
/// check there, exempting the call from the rest: the Python llm-accounting package's rule
/// for `max_value = -1`, so that `--max unlimited --user alice` exempts alice from global
/// limits. See [`crate::governing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Its id.
    pub id: i64,
    /// Which calls it counts.
    pub scope: Scope,
    /// What it counts.
    pub kind: LimitKind,
    /// The most allowed per window (micro-dollars for cost).
    pub max: u64,
    /// The window.
    pub window: Window,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Limit {
    /// The maximum of a limit that exempts the calls it applies to from less specific limits.
    pub const UNLIMITED: u64 = u64::MAX;

    /// Whether this limit is unlimited (an exemption).
    pub fn is_unlimited(&self) -> bool {
        self.max == Limit::UNLIMITED
    }

    /// The order in which limits are checked: more specific scopes first, then by id.
    pub fn precedence(&self) -> (usize, i64) {
        (self.scope.unset_parts(), self.id)
    }
}

impl fmt::Display for Limit {
    /// `#3 requests per day for model=gpt-4o user=alice`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} ≤ {} per {} for {}",
            self.id,
            self.kind,
            self.kind.format(self.max),
            self.window,
            self.scope
        )
    }
}
