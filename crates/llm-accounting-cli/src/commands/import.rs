//! `keys import --env-file .env`: every key of a dotenv file in one transaction.
//!
//! `OPENAI_API_KEY` becomes service `openai`, `AZURE_OPENAI_API_KEY` `azure-openai`: a name
//! ending in `_API_KEY`, `_KEY` or `_TOKEN` loses that ending, is lowercased, and has `_`
//! turned into `-`; `--map NAME=service` says otherwise (or imports any other name). Every
//! other line is skipped and listed. Everything is parsed, mapped and checked before the
//! store is opened; the keys are then written with one `store_many`: all of them or none.

use std::collections::BTreeMap;

use llm_accounting::{ApiKey, BatchMode, Error, KeyIdentity, Result, StoreOutcome, WriteOptions};
use serde::Serialize;

use super::{Context, finish};
use crate::cli::{Format, ImportArgs};
use crate::{dotenv, escape, print, read_key};

/// The endings that mark a key, longest first.
const ENDINGS: &[&str] = &["_API_KEY", "_KEY", "_TOKEN"];

/// The service a variable name stands for, by the naming rule (none for other names).
pub(crate) fn service_of(name: &str) -> Option<String> {
    let stem = ENDINGS.iter().find_map(|e| name.strip_suffix(e))?;
    let service = stem
        .trim_matches('_')
        .to_ascii_lowercase()
        .replace('_', "-");
    // `API_KEY` alone names no service.
    (!service.is_empty() && service != "api").then_some(service)
}

/// One key to import (its value is in the batch, at the same index).
struct Planned {
    variable: String,
    line: usize,
    identity: KeyIdentity,
}

/// What [`plan`] makes of a file.
struct Plan {
    planned: Vec<Planned>,
    batch: Vec<(KeyIdentity, ApiKey)>,
    skipped: Vec<Skipped>,
}

/// One skipped line, in the summary.
#[derive(Debug, Serialize)]
struct Skipped {
    variable: String,
    line: usize,
    reason: &'static str,
}

/// One stored key, in the summary.
#[derive(Debug, Serialize)]
struct Stored<'a> {
    variable: &'a str,
    service: &'a str,
    user: Option<&'a str>,
    project: Option<&'a str>,
    version: u32,
    rotated: bool,
}

/// The `--map NAME=service` pairs.
fn explicit_map(args: &ImportArgs) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for m in &args.map {
        let (name, service) = m
            .split_once('=')
            .map(|(n, s)| (n.trim(), s.trim()))
            .filter(|(n, s)| dotenv::is_env_name(n) && !s.is_empty())
            .ok_or_else(|| {
                Error::invalid(
                    "--map",
                    format!("`{}` is not NAME=SERVICE", escape::text(m)),
                )
            })?;
        map.insert(name.to_owned(), service.to_owned());
    }
    Ok(map)
}

/// Parses, maps and checks the file: the keys to store and the lines skipped.
fn plan(args: &ImportArgs) -> Result<Plan> {
    let map = explicit_map(args)?;
    let file = args.env_file.display().to_string();
    let text = zeroize::Zeroizing::new(super::exec::read_named_file(&args.env_file, "--env-file")?);
    let mut entries = dotenv::parse(&text, &file)?;
    dotenv::expand(&mut entries);
    drop(text);
    let mut planned: Vec<Planned> = Vec::new();
    let mut batch = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        if let Some(first) = seen.insert(e.name.clone(), e.line) {
            return Err(Error::invalid(
                "--env-file",
                format!("{} is set twice (lines {first} and {})", e.name, e.line),
            ));
        }
        let service = map.get(&e.name).cloned().or_else(|| service_of(&e.name));
        let Some(service) = service else {
            skipped.push(Skipped {
                variable: e.name,
                line: e.line,
                reason: "not a key: the name ends in none of _API_KEY, _KEY, _TOKEN (--map \
                         NAME=SERVICE imports it)",
            });
            continue;
        };
        if e.value.is_empty() {
            skipped.push(Skipped {
                variable: e.name,
                line: e.line,
                reason: "empty value",
            });
            continue;
        }
        let identity =
            KeyIdentity::from_parts(&service, args.user.as_deref(), args.project.as_deref())?;
        if let Some(other) = planned.iter().find(|p| p.identity == identity) {
            return Err(Error::invalid(
                "--env-file",
                format!(
                    "{} and {} are both the key for {identity}; drop one, or --map one \
                     to another service",
                    other.variable, e.name
                ),
            ));
        }
        let key = ApiKey::new(e.value.to_string());
        let checked = key.validate().and_then(|()| {
            if args.keep_whitespace {
                Ok(())
            } else {
                read_key::check_whitespace(key.expose_secret())
            }
        });
        if let Err(err) = checked {
            return Err(Error::invalid(
                "--env-file",
                format!(
                    "{} line {}: {}: {}",
                    escape::text(&file),
                    e.line,
                    e.name,
                    crate::output::error_line(&err).trim_start_matches("error: ")
                ),
            ));
        }
        batch.push((identity.clone(), key));
        planned.push(Planned {
            variable: e.name,
            line: e.line,
            identity,
        });
    }
    Ok(Plan {
        planned,
        batch,
        skipped,
    })
}

/// Writes the batch: all of it, or none. The one place that writes, so that the batch store
/// is the only way in.
async fn write(
    ctx: &Context,
    batch: Vec<(KeyIdentity, ApiKey)>,
    mode: BatchMode,
) -> Result<Vec<StoreOutcome>> {
    let manager = ctx.manager().await?;
    let result = manager
        .store_many(&batch, mode, &WriteOptions::default())
        .await;
    drop(batch);
    finish(&manager, result).await
}

/// `keys import`.
pub(crate) async fn import(ctx: &Context, args: &ImportArgs) -> Result<()> {
    let Plan {
        planned,
        batch,
        skipped,
    } = plan(args)?;
    for s in &skipped {
        ctx.say(&escape::text(&format!(
            "skipped {} (line {}): {}",
            s.variable, s.line, s.reason
        )));
    }
    if planned.is_empty() {
        return Err(Error::invalid(
            "--env-file",
            format!(
                "{} holds no key to import ({} line(s) skipped)",
                escape::text(&args.env_file.display().to_string()),
                skipped.len()
            ),
        ));
    }
    let mode = if args.rotate {
        BatchMode::Upsert
    } else {
        BatchMode::CreateOnly
    };
    let outcomes = write(ctx, batch, mode).await.map_err(|e| match e {
        // The batch's own refusal of an existing key: say how to go on.
        Error::InvalidInput {
            field: "identity",
            reason,
        } => Error::invalid(
            "identity",
            format!("{reason} (pass --rotate to replace existing keys)"),
        ),
        e => e,
    })?;
    let stored: Vec<Stored<'_>> = planned
        .iter()
        .zip(&outcomes)
        .map(|(p, o)| Stored {
            variable: &p.variable,
            service: p.identity.service(),
            user: p.identity.user(),
            project: p.identity.project(),
            version: o.version,
            rotated: !o.created,
        })
        .collect();
    for (s, p) in stored.iter().zip(&planned) {
        let verb = if s.rotated { "rotated" } else { "stored" };
        ctx.say(&escape::text(&format!(
            "{verb} {} (line {}) as {} (version {})",
            s.variable, p.line, p.identity, s.version
        )));
    }
    let rotated = stored.iter().filter(|s| s.rotated).count();
    ctx.say(&format!(
        "imported {} key(s) ({} new, {rotated} rotated); skipped {} line(s)",
        stored.len(),
        stored.len() - rotated,
        skipped.len()
    ));
    if args.format == Format::Json {
        #[derive(Serialize)]
        struct Summary<'a> {
            stored: &'a [Stored<'a>],
            skipped: &'a [Skipped],
        }
        let text = serde_json::to_string_pretty(&Summary {
            stored: &stored,
            skipped: &skipped,
        })
        .unwrap_or_else(|_| "{}".to_owned());
        print::print(&escape::json(text), "writing the import summary")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_services() {
        for (name, service) in [
            ("OPENAI_API_KEY", Some("openai")),
            ("AZURE_OPENAI_API_KEY", Some("azure-openai")),
            ("ANTHROPIC_KEY", Some("anthropic")),
            ("HF_TOKEN", Some("hf")),
            ("API_KEY", None),
            ("_KEY", None),
            ("DEBUG", None),
            ("KEYBOARD", None),
        ] {
            assert_eq!(service_of(name).as_deref(), service, "{name}");
        }
    }
}
