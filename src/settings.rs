//! Configuration: embedded defaults < file < environment < explicit overrides (CLI flags).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, File, FileFormat};
use serde::Deserialize;

use crate::layers::{LayerOptions, RetryPolicy};
use crate::{CacheOptions, Error, ManagerOptions, Result, StoreOptions};

/// The embedded defaults (`config/default.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Environment variables read by [`Settings::load`], and the setting each one sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("LLM_ACCOUNTING_DATABASE_URL", "database_url"),
    ("LLM_ACCOUNTING_DATA_DIR", "data_dir"),
    ("LLM_ACCOUNTING_USER", "default_user"),
    ("LLM_ACCOUNTING_PROJECT", "default_project"),
    ("LLM_ACCOUNTING_KMS_PROVIDER", "kms.provider"),
    ("LLM_ACCOUNTING_KMS_KEY_ID", "kms.key_id"),
    ("LLM_ACCOUNTING_KMS_ENDPOINT", "kms.endpoint"),
    ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "kms.max_attempts"),
    (
        "LLM_ACCOUNTING_KMS_MAX_RETRY_TIME_MS",
        "kms.max_retry_time_ms",
    ),
    ("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "kms.timeout_ms"),
    (
        "LLM_ACCOUNTING_KMS_INITIAL_BACKOFF_MS",
        "kms.initial_backoff_ms",
    ),
    ("LLM_ACCOUNTING_KMS_MAX_BACKOFF_MS", "kms.max_backoff_ms"),
    (
        "LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE",
        "local.master_key_file",
    ),
    (
        "LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION",
        "local.min_master_key_version",
    ),
    ("LLM_ACCOUNTING_CACHE_TTL_SECS", "cache.ttl_secs"),
    ("LLM_ACCOUNTING_CACHE_MAX_ENTRIES", "cache.max_entries"),
    (
        "LLM_ACCOUNTING_CACHE_REFRESH_MS",
        "cache.refresh_interval_ms",
    ),
    ("LLM_ACCOUNTING_DB_MAX_CONNECTIONS", "store.max_connections"),
    (
        "LLM_ACCOUNTING_DB_CONNECT_TIMEOUT_SECS",
        "store.connect_timeout_secs",
    ),
    (
        "LLM_ACCOUNTING_DB_BUSY_TIMEOUT_SECS",
        "store.busy_timeout_secs",
    ),
    ("LLM_ACCOUNTING_DATABASE_SCHEMA", "store.schema"),
    (
        "LLM_ACCOUNTING_PREVIOUS_GRACE_SECS",
        "keys.previous_grace_secs",
    ),
    ("LLM_ACCOUNTING_AUDIT_ENABLED", "audit.enabled"),
    ("LLM_ACCOUNTING_AUDIT_FAIL_CLOSED", "audit.fail_closed"),
    ("LLM_ACCOUNTING_AUDIT_DATABASE_URL", "audit.database_url"),
];

/// Variable naming a config file when none is given explicitly.
pub const CONFIG_FILE_ENV: &str = "LLM_ACCOUNTING_CONFIG";

/// Every provider name llm-accounting knows, compiled in or not.
pub const PROVIDER_NAMES: &[&str] = &["local", "aws", "azure", "gcp"];

/// The resolved configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// Database URL; `None` means a SQLite file in the data directory.
    #[serde(deserialize_with = "empty_is_none")]
    pub database_url: Option<String>,
    /// Directory of the default database and master key file.
    #[serde(deserialize_with = "empty_is_none_path")]
    pub data_dir: Option<PathBuf>,
    /// User the facade's convenience calls use.
    #[serde(deserialize_with = "empty_is_none")]
    pub default_user: Option<String>,
    /// Project the facade's convenience calls use.
    #[serde(deserialize_with = "empty_is_none")]
    pub default_project: Option<String>,
    /// KMS selection.
    pub kms: KmsSettings,
    /// Local provider.
    pub local: LocalSettings,
    /// Cache of decrypted keys.
    pub cache: CacheSettings,
    /// Database connection handling.
    pub store: StoreSettings,
    /// Key lifecycle.
    pub keys: KeysSettings,
    /// Audit trail.
    pub audit: AuditSettings,
}

/// Audit trail settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AuditSettings {
    /// Write one audit row per operation.
    pub enabled: bool,
    /// Refuse an operation (return no key) when its audit row cannot be written.
    pub fail_closed: bool,
    /// Another database for the audit table; `None`: the key database.
    #[serde(deserialize_with = "empty_is_none")]
    pub database_url: Option<String>,
}

/// Key lifecycle settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct KeysSettings {
    /// Seconds a rotated-out value stays readable with `get --previous`.
    pub previous_grace_secs: u64,
}

/// Which KMS, and which master key in it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct KmsSettings {
    /// `local`, `aws`, `azure` or `gcp`.
    pub provider: String,
    /// Master key id (AWS key id/ARN/alias, Azure key URL, GCP CryptoKey name).
    #[serde(deserialize_with = "empty_is_none")]
    pub key_id: Option<String>,
    /// Endpoint override.
    #[serde(deserialize_with = "empty_is_none")]
    pub endpoint: Option<String>,
    /// Most calls made for one KMS operation, the first included; transient failures
    /// (unavailable, throttled, timed out) are retried up to this. 1 = no retries.
    pub max_attempts: u32,
    /// No retry starts later than this many milliseconds after the first call.
    pub max_retry_time_ms: u64,
    /// Deadline of each single KMS call, in milliseconds; a call that takes longer counts as
    /// a transient failure.
    pub timeout_ms: u64,
    /// Upper bound of the wait before the first retry, in milliseconds (doubles per retry,
    /// jittered).
    pub initial_backoff_ms: u64,
    /// Upper bound of any wait between retries, in milliseconds.
    pub max_backoff_ms: u64,
}

/// Local provider settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LocalSettings {
    /// Master key file; `None` means `master.key` in the data directory.
    #[serde(deserialize_with = "empty_is_none_path")]
    pub master_key_file: Option<PathBuf>,
    /// Master-key versions below this are retired (0: none).
    #[serde(default)]
    pub min_master_key_version: u32,
}

/// Cache settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CacheSettings {
    /// Seconds a decrypted key is served from memory.
    pub ttl_secs: u64,
    /// Most keys cached at once.
    pub max_entries: u64,
    /// Milliseconds between checks of cached keys against the store (0: off).
    pub refresh_interval_ms: u64,
}

/// Database settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct StoreSettings {
    /// Connection pool size.
    pub max_connections: u32,
    /// Seconds to wait for a connection.
    pub connect_timeout_secs: u64,
    /// Seconds SQLite waits on a locked database.
    pub busy_timeout_secs: u64,
    /// PostgreSQL schema for the tables; `None`: the server's default.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub schema: Option<String>,
    /// `last_used_at` is written at most once per key per this many seconds.
    pub last_used_interval_secs: u64,
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

fn empty_is_none_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(empty_is_none(d)?.map(PathBuf::from))
}

/// Values given on the command line, the strongest layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--db URL`.
    pub database_url: Option<String>,
    /// `--provider NAME`.
    pub provider: Option<String>,
}

fn config_error(message: impl Into<String>, e: config::ConfigError) -> Error {
    Error::Config {
        message: message.into(),
        source: Some(Arc::new(e)),
    }
}

impl Settings {
    /// Loads settings from the process environment: defaults, then the file named by
    /// `file` or `LLM_ACCOUNTING_CONFIG`, then `LLM_ACCOUNTING_*` variables, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        Self::load_with(file, overrides, |name| std::env::var(name).ok())
    }

    /// Settings from the environment alone (no file, no overrides).
    pub fn from_env() -> Result<Self> {
        Self::load(None, &Overrides::default())
    }

    /// Like [`Settings::load`], reading variables through `env` (for tests and embedding).
    pub fn load_with(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut b = Config::builder().add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env(CONFIG_FILE_ENV).map(PathBuf::from));
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(Error::config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            b = b.add_source(
                File::from(path.as_path())
                    .format(FileFormat::Toml)
                    .required(true),
            );
        }
        for (var, key) in ENV_VARS {
            if let Some(v) = env(var) {
                b = b
                    .set_override(*key, v)
                    .map_err(|e| config_error(format!("bad value in {var}"), e))?;
            }
        }
        b = b
            .set_override_option("database_url", overrides.database_url.clone())
            .and_then(|b| b.set_override_option("kms.provider", overrides.provider.clone()))
            .map_err(|e| config_error("bad command-line value", e))?;
        let cfg = b.build().map_err(|e| {
            let at = file
                .as_ref()
                .map(|p| format!(" (in {})", p.display()))
                .unwrap_or_default();
            config_error(format!("could not read the configuration{at}"), e)
        })?;
        let settings: Settings = cfg
            .try_deserialize()
            .map_err(|e| config_error("invalid configuration", e))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that deserialization cannot.
    pub fn validate(&self) -> Result<()> {
        if !PROVIDER_NAMES.contains(&self.kms.provider.as_str()) {
            return Err(Error::invalid(
                "KMS provider",
                format!(
                    "unknown provider `{}`; expected one of: {}",
                    self.kms.provider,
                    PROVIDER_NAMES.join(", ")
                ),
            ));
        }
        if self.cache.max_entries == 0 {
            return Err(Error::config("cache.max_entries must be at least 1"));
        }
        if self.store.max_connections == 0 {
            return Err(Error::config("store.max_connections must be at least 1"));
        }
        if self.kms.max_attempts == 0 {
            return Err(Error::config(
                "kms.max_attempts must be at least 1 (1 means no retries)",
            ));
        }
        if self.kms.timeout_ms == 0 {
            return Err(Error::config("kms.timeout_ms must be at least 1"));
        }
        Ok(())
    }

    /// The data directory: the configured one, or the platform's data directory.
    pub fn data_dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        dirs::data_dir()
            .map(|d| d.join("llm-accounting"))
            .ok_or_else(|| {
                Error::config(
                    "no platform data directory; set LLM_ACCOUNTING_DATA_DIR or LLM_ACCOUNTING_DATABASE_URL",
                )
            })
    }

    /// The database URL, and whether it is the default SQLite file.
    pub fn database_url(&self) -> Result<(String, bool)> {
        match &self.database_url {
            Some(url) => Ok((url.clone(), false)),
            None => Ok((
                format!("sqlite://{}", self.data_dir()?.join("keys.db").display()),
                true,
            )),
        }
    }

    /// The local master key file, and whether it is the default one.
    pub fn master_key_file(&self) -> Result<(PathBuf, bool)> {
        match &self.local.master_key_file {
            Some(p) => Ok((p.clone(), false)),
            None => Ok((self.data_dir()?.join("master.key"), true)),
        }
    }

    /// Manager options from these settings.
    pub fn manager_options(&self) -> ManagerOptions {
        ManagerOptions {
            cache: CacheOptions {
                ttl: Duration::from_secs(self.cache.ttl_secs),
                max_entries: self.cache.max_entries,
                refresh_interval: Duration::from_millis(self.cache.refresh_interval_ms),
            },
            last_used_interval: Duration::from_secs(self.store.last_used_interval_secs),
            previous_grace: Duration::from_secs(self.keys.previous_grace_secs),
        }
    }

    /// Retry and timeout layers around the KMS provider, from these settings.
    pub fn layer_options(&self) -> LayerOptions {
        let k = &self.kms;
        LayerOptions {
            retry: RetryPolicy {
                max_attempts: k.max_attempts,
                initial_backoff: Duration::from_millis(k.initial_backoff_ms),
                max_backoff: Duration::from_millis(k.max_backoff_ms),
                max_elapsed: Duration::from_millis(k.max_retry_time_ms),
            },
            timeout: Some(Duration::from_millis(k.timeout_ms)),
        }
    }

    /// Store options from these settings.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            max_connections: self.store.max_connections,
            connect_timeout: Duration::from_secs(self.store.connect_timeout_secs),
            busy_timeout: Duration::from_secs(self.store.busy_timeout_secs),
            schema: self.store.schema.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(env: &[(&str, &str)], file: Option<&Path>, o: &Overrides) -> Result<Settings> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with(file, o, |k| env.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = load(&[], None, &Overrides::default()).expect("defaults");
        assert_eq!(s.kms.provider, "local");
        assert_eq!(s.database_url, None);
        assert_eq!(s.cache.ttl_secs, 3600);
        let (url, default) = s.database_url().expect("url");
        assert!(
            default && url.starts_with("sqlite://") && url.ends_with("keys.db"),
            "{url}"
        );
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "database_url = \"sqlite://from-file.db\"\n[kms]\nprovider = \"aws\"\n[cache]\nttl_secs = 5\n",
        )
        .expect("write");
        let s = load(&[], Some(&file), &Overrides::default()).expect("file");
        assert_eq!(s.database_url.as_deref(), Some("sqlite://from-file.db"));
        assert_eq!(s.cache.ttl_secs, 5);
        let env = [
            ("LLM_ACCOUNTING_DATABASE_URL", "sqlite://from-env.db"),
            ("LLM_ACCOUNTING_KMS_KEY_ID", "alias/llm"),
            ("LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE", "/tmp/mk"),
        ];
        let s = load(&env, Some(&file), &Overrides::default()).expect("env");
        assert_eq!(s.database_url.as_deref(), Some("sqlite://from-env.db"));
        assert_eq!(s.kms.key_id.as_deref(), Some("alias/llm"));
        assert_eq!(s.kms.provider, "aws");
        assert_eq!(
            s.local.master_key_file.as_deref(),
            Some(Path::new("/tmp/mk"))
        );
        let o = Overrides {
            database_url: Some("sqlite://from-flag.db".into()),
            provider: Some("local".into()),
        };
        let s = load(&env, Some(&file), &o).expect("flags");
        assert_eq!(s.database_url.as_deref(), Some("sqlite://from-flag.db"));
        assert_eq!(s.kms.provider, "local");
        assert_eq!(s.cache.ttl_secs, 5, "untouched file values survive");
    }

    #[test]
    fn config_file_from_env_and_bad_values() {
        let err = load(
            &[("LLM_ACCOUNTING_KMS_PROVIDER", "vault")],
            None,
            &Overrides::default(),
        )
        .expect_err("unknown provider");
        assert!(
            err.to_string().contains("unknown provider `vault`"),
            "{err}"
        );
        let err = load(
            &[("LLM_ACCOUNTING_CACHE_TTL_SECS", "soon")],
            None,
            &Overrides::default(),
        )
        .expect_err("bad number");
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let err = load(
            &[("LLM_ACCOUNTING_CONFIG", "/nonexistent/x.toml")],
            None,
            &Overrides::default(),
        )
        .expect_err("missing file");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn kms_resilience_settings() {
        let s = load(&[], None, &Overrides::default()).expect("defaults");
        let o = s.layer_options();
        assert_eq!(o.retry, RetryPolicy::default(), "defaults match the core's");
        assert_eq!(o.timeout, Some(Duration::from_secs(5)));
        let env = [
            ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "5"),
            ("LLM_ACCOUNTING_KMS_MAX_RETRY_TIME_MS", "1500"),
            ("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "250"),
            ("LLM_ACCOUNTING_KMS_INITIAL_BACKOFF_MS", "20"),
            ("LLM_ACCOUNTING_KMS_MAX_BACKOFF_MS", "400"),
        ];
        let o = load(&env, None, &Overrides::default())
            .expect("env")
            .layer_options();
        assert_eq!(o.retry.max_attempts, 5);
        assert_eq!(o.retry.max_elapsed, Duration::from_millis(1500));
        assert_eq!(o.retry.initial_backoff, Duration::from_millis(20));
        assert_eq!(o.retry.max_backoff, Duration::from_millis(400));
        assert_eq!(o.timeout, Some(Duration::from_millis(250)));
        for (var, value) in [
            ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "0"),
            ("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "0"),
            ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "many"),
        ] {
            let err = load(&[(var, value)], None, &Overrides::default()).expect_err(var);
            assert!(matches!(err, Error::Config { .. }), "{var}={value}: {err}");
        }
        for (var, _) in env {
            assert!(ENV_VARS.iter().any(|(v, _)| *v == var), "{var} is listed");
        }
    }
}
