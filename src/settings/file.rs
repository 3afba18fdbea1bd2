//! Reading a configuration file: unknown keys, the older `[local]` section, and where each
//! value came from (for error messages).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::{Config, ConfigError, File, FileFormat, Map, Source, Value, ValueKind};

use super::*;
use crate::{Error, Result};

/// The file section that older configurations use for [`KmsSettings::local`]: `[local]` is read
/// as `[kms.local]`.
pub(super) const LEGACY_LOCAL_SECTION: &str = "local";

/// A parsed configuration file, as a source for the `config` crate.
#[derive(Debug, Clone)]
pub(super) struct FileTable(pub(super) Map<String, Value>);

impl Source for FileTable {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> std::result::Result<Map<String, Value>, ConfigError> {
        Ok(self.0.clone())
    }
}

/// Where the values of one [`Settings::load_with`] came from, to name the culprit of a bad one.
#[derive(Default)]
pub(super) struct Origins {
    /// The configuration file and its settings (`[local]` already read as `[kms.local]`).
    pub(super) file: Option<(PathBuf, Map<String, Value>)>,
    /// Settings set by environment variables: (setting, variable).
    pub(super) env: Vec<(String, String)>,
    /// Settings set by overrides: (setting, flag).
    pub(super) overrides: Vec<(&'static str, &'static str)>,
}

impl Origins {
    /// Where the value of `setting` came from: `from --provider`, `from LLM_ACCOUNTING_...`,
    /// `in FILE`, or `in the embedded defaults`.
    pub(super) fn of(&self, setting: &str) -> String {
        let by = |list: &[(&str, &'static str)]| {
            list.iter()
                .find(|(s, _)| *s == setting)
                .map(|(_, name)| *name)
        };
        if let Some(flag) = by(&self.overrides) {
            return format!("from {flag}");
        }
        if let Some((_, var)) = self.env.iter().find(|(s, _)| s == setting) {
            return format!("from {var}");
        }
        match &self.file {
            Some((path, table)) if lookup(table, setting).is_some() => {
                format!("in {}", path.display())
            }
            _ => "in the embedded defaults".to_owned(),
        }
    }

    /// A deserialization failure as a configuration error naming the setting and where its
    /// value came from.
    pub(super) fn explain(&self, e: ConfigError) -> Error {
        let (key, text) = describe(&e);
        match key {
            Some(key) => Error::config(format!("bad value for {key} ({}): {text}", self.of(&key))),
            None => Error::Config {
                message: "invalid configuration".to_owned(),
                source: Some(Arc::new(e)),
            },
        }
    }
}

/// The setting a `config` error is about, if it says, and what is wrong, without the setting.
pub(super) fn describe(e: &ConfigError) -> (Option<String>, String) {
    match e {
        ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => (
            key.clone(),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        ConfigError::At { error, key, .. } => {
            let (inner, text) = describe(error);
            (key.clone().or(inner), text)
        }
        ConfigError::NotFound(key) => (Some(key.clone()), "missing".to_owned()),
        other => (None, other.to_string()),
    }
}

/// The value at the dotted `path` of `table`.
pub(super) fn lookup<'a>(table: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        match &value.kind {
            ValueKind::Table(t) => value = t.get(part)?,
            _ => return None,
        }
    }
    Some(value)
}

/// The embedded defaults as a table: the shape every configuration must fit.
pub(super) fn defaults_table() -> Result<Map<String, Value>> {
    Config::builder()
        .add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml))
        .build()
        .and_then(|c| c.collect())
        .map_err(|e| config_error("the embedded defaults do not parse", e))
}

/// Keys of `file` that no setting has, as dotted paths (`prefix` + key), appended to `out`.
/// `schema` is the matching part of the embedded defaults. A value whose type does not fit
/// (a table for a number, ...) is left to deserialization, which names it.
pub(super) fn unknown_keys(
    file: &Map<String, Value>,
    schema: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (key, value) in file {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (schema.get(key).map(|s| &s.kind), &value.kind) {
            (None, _) => {
                let mut known: Vec<&str> = schema.keys().map(String::as_str).collect();
                known.sort_unstable();
                out.push(format!("`{path}` (expected one of: {})", known.join(", ")));
            }
            // Any service may have an upstream: each is checked against the fields of one.
            (Some(ValueKind::Table(s)), ValueKind::Table(f)) if path == "gateway.upstreams" => {
                let Some(ValueKind::Table(fields)) = s.values().next().map(|v| &v.kind) else {
                    continue;
                };
                for (service, upstream) in f {
                    if let ValueKind::Table(u) = &upstream.kind {
                        unknown_keys(u, fields, &format!("{path}.{service}"), out);
                    }
                }
            }
            (Some(ValueKind::Table(s)), ValueKind::Table(f)) => unknown_keys(f, s, &path, out),
            (Some(_), _) => {}
        }
    }
}

/// Reads a configuration file: checks that it names only existing settings, and reads its
/// `[local]` section (the older name) as `[kms.local]`.
///
/// A setting given under both names must have the same value in both.
pub(super) fn read_file(path: &Path, defaults: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut table = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml).required(true))
        .build()
        .and_then(|c| c.collect())
        .map_err(|e| match e {
            // The parser's message points at the line and column over several lines: it is
            // kept whole, in the message (a reader of the error keeps the message's lines).
            ConfigError::FileParse { cause, .. } => Error::config(format!(
                "cannot parse the configuration file {}:\n{}",
                path.display(),
                cause.to_string().trim_end()
            )),
            e => config_error(
                format!("could not read the configuration (in {})", path.display()),
                e,
            ),
        })?;
    let legacy = table.remove(LEGACY_LOCAL_SECTION);

    let mut unknown = Vec::new();
    unknown_keys(&table, defaults, "", &mut unknown);
    let local_schema = match lookup(defaults, "kms.local").map(|v| &v.kind) {
        Some(ValueKind::Table(t)) => t.clone(),
        _ => Map::new(),
    };
    let legacy = match legacy.map(|v| v.kind) {
        None => Map::new(),
        Some(ValueKind::Table(t)) => t,
        Some(_) => {
            return Err(Error::config(format!(
                "`{LEGACY_LOCAL_SECTION}` in {} must be a section ([{LEGACY_LOCAL_SECTION}], the \
                 older name of [kms.local])",
                path.display()
            )));
        }
    };
    unknown_keys(&legacy, &local_schema, LEGACY_LOCAL_SECTION, &mut unknown);
    if !unknown.is_empty() {
        unknown.sort();
        return Err(Error::config(format!(
            "unknown setting{} in {}: {}",
            if unknown.len() == 1 { "" } else { "s" },
            path.display(),
            unknown.join("; ")
        )));
    }
    if legacy.is_empty() {
        return Ok(table);
    }

    let origin = path.display().to_string();
    let not_a_section = |name: &str| {
        Error::config(format!(
            "`{name}` in {} must be a section ([{name}])",
            path.display()
        ))
    };
    let kms = section(table.entry("kms".to_owned()).or_default(), &origin)
        .ok_or_else(|| not_a_section("kms"))?;
    let local = section(kms.entry("local".to_owned()).or_default(), &origin)
        .ok_or_else(|| not_a_section("kms.local"))?;
    let mut entries: Vec<(String, Value)> = legacy.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in entries {
        match local.get(&key) {
            Some(current) if current.kind != value.kind => {
                return Err(Error::config(format!(
                    "{} sets both local.{key} and kms.local.{key}, to different values: \
                     [local] is the older name of [kms.local]; keep one",
                    path.display()
                )));
            }
            Some(_) => {}
            None => {
                local.insert(key, value);
            }
        }
    }
    Ok(table)
}

/// The table `value` holds, made an empty one (from `origin`) if it was unset; `None` if it
/// holds something else.
pub(super) fn section<'a>(
    value: &'a mut Value,
    origin: &String,
) -> Option<&'a mut Map<String, Value>> {
    if matches!(value.kind, ValueKind::Nil) {
        *value = Value::new(Some(origin), Map::<String, Value>::new());
    }
    match &mut value.kind {
        ValueKind::Table(t) => Some(t),
        _ => None,
    }
}

pub(super) fn config_error(message: impl Into<String>, e: ConfigError) -> Error {
    Error::Config {
        message: message.into(),
        source: Some(Arc::new(e)),
    }
}

/// `text` with the password of every URL in it replaced (see [`crate::redact_url`]): the
/// words (between blanks and quotes) that hold `://`.
pub(super) fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |out: &mut String, word: &mut String| {
        if word.contains("://") {
            out.push_str(&crate::redact_url(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '`') {
            flush(&mut out, &mut word);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut out, &mut word);
    out
}

/// A configuration error whose text (its message, and its source's, folded into the message)
/// holds no password of a URL. Other errors are returned as they are.
pub(super) fn redact_error(e: Error) -> Error {
    match e {
        Error::Config { message, source } => {
            let with_source = match &source {
                Some(s) => format!("{message}: {s}"),
                None => message.clone(),
            };
            let redacted = redact_urls_in(&with_source);
            if redacted == with_source {
                Error::Config { message, source }
            } else {
                Error::Config {
                    message: redacted,
                    source: None,
                }
            }
        }
        other => other,
    }
}
