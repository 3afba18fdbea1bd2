//! One LLM call's usage.

use std::time::Duration;

use chrono::{DateTime, Utc};
use llm_accounting_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::Money;

/// Longest name (model, service, user, project, caller, session) in characters.
pub const MAX_FIELD_CHARS: usize = 256;

/// Which stored key served a call: its identity (as `KeyIdentity` prints it) and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRef {
    /// The key's identity, as printed (`openai`, `openai user=alice`, ...).
    pub identity: String,
    /// The key version that was handed out.
    pub version: u32,
}

/// The usage of one call (or, with `requests`, of a known number of calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageEvent {
    /// When the call was made (UTC, microseconds).
    pub at: DateTime<Utc>,
    /// The model called.
    pub model: String,
    /// The service (provider: openai, anthropic, ...).
    pub service: Option<String>,
    /// Who made the call.
    pub user: Option<String>,
    /// For which project.
    pub project: Option<String>,
    /// Which application or component.
    pub caller: Option<String>,
    /// A session id.
    pub session: Option<String>,
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens (part of the prompt tokens).
    pub cached_tokens: u64,
    /// Reasoning tokens (part of the completion tokens).
    pub reasoning_tokens: u64,
    /// What the call cost, exactly.
    pub cost: Money,
    /// How long the call took.
    pub execution_time: Option<Duration>,
    /// The key that served the call, if one of ours did.
    pub key: Option<KeyRef>,
}

impl UsageEvent {
    /// An event for `model` at `at`, with nothing else known.
    pub fn new(model: impl Into<String>, at: DateTime<Utc>) -> Self {
        UsageEvent {
            at,
            model: model.into(),
            service: None,
            user: None,
            project: None,
            caller: None,
            session: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            reasoning_tokens: 0,
            cost: Money::ZERO,
            execution_time: None,
            key: None,
        }
    }

    /// Sets the service.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Sets the user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the project.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// Sets the caller.
    pub fn caller(mut self, caller: impl Into<String>) -> Self {
        self.caller = Some(caller.into());
        self
    }

    /// Sets prompt and completion tokens.
    pub fn tokens(mut self, prompt: u64, completion: u64) -> Self {
        self.prompt_tokens = prompt;
        self.completion_tokens = completion;
        self
    }

    /// Sets the cost.
    pub fn cost(mut self, cost: Money) -> Self {
        self.cost = cost;
        self
    }

    /// Sets the key that served the call.
    pub fn key(mut self, key: KeyRef) -> Self {
        self.key = Some(key);
        self
    }

    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Checks names and amounts before anything is written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty model, a name that is too long or holds control
    /// characters, or a token count beyond what a database column holds.
    pub fn validate(&self) -> Result<()> {
        check_name("model", Some(&self.model))?;
        if self.model.is_empty() {
            return Err(Error::invalid("model", "it is empty"));
        }
        for (field, value) in [
            ("service", &self.service),
            ("user", &self.user),
            ("project", &self.project),
            ("caller", &self.caller),
            ("session", &self.session),
        ] {
            check_name(field, value.as_ref())?;
        }
        check_amounts(
            [
                ("prompt tokens", self.prompt_tokens),
                ("completion tokens", self.completion_tokens),
                ("cached tokens", self.cached_tokens),
                ("reasoning tokens", self.reasoning_tokens),
            ],
            self.cost,
        )
    }
}

/// Checks counts of tokens and a cost against [`MAX_TOKENS`] and [`MAX_COST`].
pub(crate) fn check_amounts<const N: usize>(
    tokens: [(&'static str, u64); N],
    cost: Money,
) -> Result<()> {
    for (field, n) in tokens {
        if n > MAX_TOKENS {
            return Err(Error::invalid(
                field,
                format!("more than the maximum of {MAX_TOKENS} per call"),
            ));
        }
    }
    if cost > MAX_COST {
        return Err(Error::invalid(
            "cost",
            format!("more than the maximum of ${MAX_COST} per call"),
        ));
    }
    Ok(())
}

/// The most tokens of each kind one event or estimate may count (10^12): with it no sum of
/// fewer than nine million events can overflow a 64-bit counter. Rows written by other
/// programs are read as at most this much.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

/// The most one event or estimate may cost ($10^9).
pub const MAX_COST: Money = Money::from_micros(1_000_000_000 * crate::MICROS_PER_DOLLAR);

/// Checks one optional name: at most [`MAX_FIELD_CHARS`], no control characters.
pub(crate) fn check_name(field: &'static str, value: Option<&String>) -> Result<()> {
    let Some(v) = value else { return Ok(()) };
    if v.chars().count() > MAX_FIELD_CHARS {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_FIELD_CHARS} characters"),
        ));
    }
    // The rule of key names: nothing that prints as nothing or rewrites the line it is shown
    // on (the code point is named, never the character).
    if let Some(c) = v.chars().find(|c| llm_accounting_core::is_hidden_char(*c)) {
        let what = if c.is_control() {
            "control characters"
        } else {
            "an invisible or formatting character"
        };
        return Err(Error::invalid(
            field,
            format!("it contains {what} (U+{:04X})", u32::from(c)),
        ));
    }
    Ok(())
}
