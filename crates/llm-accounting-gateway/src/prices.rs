//! The price table: what a model's tokens cost, per million, exactly (micro-dollars).
//!
//! The shipped table is `config/prices.toml`; `gateway.prices_file` extends and overrides it
//! model by model. A model is looked up as `SERVICE/MODEL`, then `MODEL`, then `MODEL`
//! without a date suffix (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`).

use std::collections::HashMap;
use std::path::Path;

use llm_accounting_usage::Money;
use serde::Deserialize;

use crate::Error;

/// The shipped table.
pub const SHIPPED_PRICES: &str = include_str!("../../../config/prices.toml");

/// Tokens per priced unit.
const PER: u128 = 1_000_000;

/// The prices of one model, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Prompt tokens.
    pub input: Money,
    /// Completion tokens.
    pub output: Money,
    /// Prompt tokens read from the provider's cache (`input` when the table has none).
    pub cached: Money,
}

/// Tokens of one call, as the price applies to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens, cached ones included.
    pub prompt: u64,
    /// Of which read from the cache.
    pub cached: u64,
    /// Completion tokens.
    pub completion: u64,
}

impl Price {
    /// What `tokens` cost, rounded up to the micro-dollar (a call is never counted cheaper
    /// than it was).
    pub fn cost(&self, tokens: Tokens) -> Money {
        let cached = tokens.cached.min(tokens.prompt);
        let micros = u128::from(tokens.prompt - cached) * u128::from(self.input.micros())
            + u128::from(cached) * u128::from(self.cached.micros())
            + u128::from(tokens.completion) * u128::from(self.output.micros());
        Money::from_micros(u64::try_from(micros.div_ceil(PER)).unwrap_or(u64::MAX))
    }
}

/// A price table file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    /// When the prices were taken.
    #[serde(default)]
    taken: Option<String>,
    /// Per model.
    #[serde(default)]
    models: HashMap<String, PriceEntry>,
}

/// One model's row, in decimal dollars per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input: Amount,
    output: Amount,
    #[serde(default)]
    cached: Option<Amount>,
}

/// A decimal amount: a string (exact) or a TOML number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Text(String),
    Number(f64),
}

impl Amount {
    fn money(&self, model: &str, field: &str, origin: &str) -> Result<Money, Error> {
        let parsed = match self {
            Amount::Text(t) => t.parse::<Money>(),
            Amount::Number(n) => Money::from_f64(*n),
        };
        parsed.map_err(|e| {
            Error::Config(format!(
                "{origin}: models.\"{model}\".{field}: {e} (dollars per million tokens, e.g. \"2.50\")"
            ))
        })
    }
}

/// Every model's price.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prices {
    models: HashMap<String, Price>,
    taken: Option<String>,
}

impl Prices {
    /// The shipped table, extended and overridden by the file at `extra` if any.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file and the entry for a file that cannot be read or
    /// parsed, or an amount that is not a decimal number of dollars.
    pub fn load(extra: Option<&Path>) -> Result<Self, Error> {
        let mut prices = Prices::parse(SHIPPED_PRICES, "config/prices.toml")?;
        if let Some(path) = extra {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read gateway.prices_file {}: {e}",
                    path.display()
                ))
            })?;
            let more = Prices::parse(&text, &path.display().to_string())?;
            prices.models.extend(more.models);
            prices.taken = more.taken.or(prices.taken);
        }
        Ok(prices)
    }

    /// A table from TOML text (`origin` names it in errors).
    ///
    /// # Errors
    ///
    /// As [`Prices::load`].
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let file: PriceFile = toml::from_str(text)
            .map_err(|e| Error::Config(format!("cannot parse the prices in {origin}: {e}")))?;
        let mut models = HashMap::with_capacity(file.models.len());
        for (model, entry) in file.models {
            let input = entry.input.money(&model, "input", origin)?;
            let output = entry.output.money(&model, "output", origin)?;
            let cached = match &entry.cached {
                Some(c) => c.money(&model, "cached", origin)?,
                None => input,
            };
            models.insert(
                model,
                Price {
                    input,
                    output,
                    cached,
                },
            );
        }
        Ok(Prices {
            models,
            taken: file.taken,
        })
    }

    /// The price of `model` of `service`, if the table has one (see the module documentation
    /// for the order of lookups).
    pub fn get(&self, service: &str, model: &str) -> Option<Price> {
        let qualified = format!("{service}/{model}");
        self.models
            .get(&qualified)
            .or_else(|| self.models.get(model))
            .or_else(|| {
                let undated = without_date(model)?;
                self.models
                    .get(&format!("{service}/{undated}"))
                    .or_else(|| self.models.get(undated))
            })
            .copied()
    }

    /// Whether the table prices `model` of `service`.
    pub fn has(&self, service: &str, model: &str) -> bool {
        self.get(service, model).is_some()
    }

    /// When the prices were taken, as the table says.
    pub fn taken(&self) -> Option<&str> {
        self.taken.as_deref()
    }

    /// How many models are priced.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether no model is priced.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// `model` without a trailing date (`-2024-08-06` or `-20250929`), if it has one.
fn without_date(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, date)) = model.rsplit_once('-')
        && date.len() == 8
        && digits(date)
    {
        return Some(head);
    }
    // -YYYY-MM-DD: three dash-separated parts of 4, 2 and 2 digits.
    let mut parts = model.rsplitn(4, '-');
    let (d, m, y, head) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (y.len() == 4 && m.len() == 2 && d.len() == 2 && digits(y) && digits(m) && digits(d))
        .then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_prices_dated_models() {
        let p = Prices::load(None).expect("shipped table");
        assert!(p.len() >= 10, "{}", p.len());
        assert!(p.taken().is_some());
        let gpt = p.get("openai", "gpt-4o-mini").expect("priced");
        assert_eq!(gpt.input.micros(), 150_000);
        assert_eq!(p.get("openai", "gpt-4o-mini-2024-07-18"), Some(gpt));
        assert!(p.has("anthropic", "claude-sonnet-4-5-20250929"));
        assert!(p.has("mistral", "mistral-large-latest"));
        assert!(
            !p.has("openai", "mistral-large-latest"),
            "qualified by service"
        );
        assert!(!p.has("openai", "no-such-model"));
    }

    #[test]
    fn costs_are_exact_and_round_up() {
        let price = Price {
            input: "2.50".parse().expect("money"),
            output: "10".parse().expect("money"),
            cached: "1.25".parse().expect("money"),
        };
        let cost = price.cost(Tokens {
            prompt: 1_000_000,
            cached: 0,
            completion: 1_000_000,
        });
        assert_eq!(cost.micros(), 12_500_000);
        // 12 prompt tokens at $2.50/M = 30 micro-dollars; 5 at $10/M = 50.
        let small = price.cost(Tokens {
            prompt: 12,
            cached: 0,
            completion: 5,
        });
        assert_eq!(small.micros(), 80);
        // Cached tokens at their own price; a third of a micro-dollar rounds up.
        let cached = price.cost(Tokens {
            prompt: 10,
            cached: 10,
            completion: 0,
        });
        assert_eq!(cached.micros(), 13);
        assert_eq!(price.cost(Tokens::default()).micros(), 0);
    }

    #[test]
    fn a_file_extends_and_overrides_and_bad_amounts_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[models.\"gpt-4o-mini\"]\ninput = \"1\"\noutput = 2\n[models.\"local/llama\"]\ninput = \"0\"\noutput = \"0\"\n",
        )
        .expect("write");
        let p = Prices::load(Some(&path)).expect("load");
        let gpt = p.get("openai", "gpt-4o-mini").expect("priced");
        assert_eq!(
            (gpt.input.micros(), gpt.output.micros()),
            (1_000_000, 2_000_000)
        );
        assert_eq!(gpt.cached, gpt.input, "cached defaults to input");
        assert!(p.has("local", "llama"));
        assert!(
            p.has("openai", "gpt-4o"),
            "the rest of the shipped table stays"
        );

        std::fs::write(&path, "[models.m]\ninput = \"-1\"\noutput = \"0\"\n").expect("write");
        let e = Prices::load(Some(&path)).expect_err("negative");
        assert!(e.to_string().contains("models.\"m\".input"), "{e}");
        std::fs::write(&path, "[models.m]\ninput = \"1\"\n").expect("write");
        assert!(Prices::load(Some(&path)).is_err(), "output is required");
    }
}
