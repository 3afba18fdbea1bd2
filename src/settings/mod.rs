//! Configuration: embedded defaults < file < environment < explicit overrides (CLI flags).
//!
//! Every setting lives in [`Settings`] and has exactly one environment variable
//! ([`ENV_VARS`]). A file may only name settings that exist: an unknown key is an error naming
//! it, never silently a default.

mod choices;
mod env;
mod file;
mod sections;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, File, FileFormat};
use serde::Deserialize;

use crate::layers::{LayerOptions, RetryPolicy};
use crate::{AuditOptions, CacheOptions, Error, ManagerOptions, Result, StoreOptions, redact_url};

pub use self::choices::{
    AccountingEngine, KmsHierarchy, KmsProviderKind, PROVIDER_NAMES, RedisFallback, UnpricedModels,
    UpstreamApi,
};
pub(crate) use self::env::env_var_of;
pub use self::env::{ENV_VARS, OTHER_ENV_VARS, UPSTREAM_ENV_PREFIX, UnknownEnvVar};
use self::file::*;
pub use self::sections::{
    AccountingSettings, AuditSettings, AwsSettings, AzureSettings, CacheSettings, GatewaySettings,
    GcpSettings, KeysSettings, KmsSettings, LocalSettings, StoreSettings, UpstreamSettings,
};
use llm_accounting_core::settings::{empty_is_none, empty_is_none_path};
pub use llm_accounting_kms_azure::{AzureCredentials, WrapAlgorithm as AzureKeyWrap};
pub use llm_accounting_kms_gcp::GcpCredentials;
pub use llm_accounting_usage::Enforcement;

/// The embedded defaults (`config/default.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// Variable naming a config file when none is given explicitly.
pub const CONFIG_FILE_ENV: &str = "LLM_ACCOUNTING_CONFIG";

/// Where the configuration file [`Settings::load`] reads was named (see
/// [`Settings::config_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigFileSource {
    /// Given to [`Settings::load`] (the CLI's `--config`).
    Explicit,
    /// Named by [`CONFIG_FILE_ENV`].
    Env,
    /// The file at the default location ([`Settings::default_config_file`]), which exists.
    Default,
}

/// The default configuration file's path under the platform's configuration directory.
const DEFAULT_CONFIG_FILE: &str = "llm-accounting/config.toml";

/// The resolved configuration.
///
/// [`Settings::load`] reads it from the embedded defaults, a file, the environment and
/// command-line overrides. In code, start from the defaults and set what differs:
///
/// ```
/// use llm_accounting::{KmsProviderKind, Settings};
/// let mut s = Settings::default();
/// s.database_url = Some("sqlite:///var/lib/myapp/keys.db".into());
/// s.kms.provider = KmsProviderKind::Aws;
/// s.kms.key_id = Some("alias/llm-accounting".into());
/// s.kms.aws.region = Some("eu-west-1".into());
/// s.validate()?;
/// # Ok::<(), llm_accounting::Error>(())
/// ```
///
/// `Debug` shows the database URLs with their passwords redacted.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// Database URL; `None` means a SQLite file in the data directory.
    #[serde(deserialize_with = "empty_is_none")]
    pub database_url: Option<String>,
    /// Directory of the default database and master key file; `None`: the platform's data
    /// directory.
    #[serde(deserialize_with = "empty_is_none_path")]
    pub data_dir: Option<PathBuf>,
    /// Create a SQLite database file or local master key file that is named explicitly
    /// (`database_url`, `kms.local.master_key_file`, `audit.database_url`) and does not exist.
    /// Off by default: such a file missing is an [`Error::Config`] naming it, so that a
    /// mistyped path is not silently a new, empty store. The files at the default location
    /// (in the data directory) are created on first use whatever this says.
    pub create_if_missing: bool,
    /// User the facade's convenience calls use.
    #[serde(deserialize_with = "empty_is_none")]
    pub default_user: Option<String>,
    /// Project the facade's convenience calls use.
    #[serde(deserialize_with = "empty_is_none")]
    pub default_project: Option<String>,
    /// KMS selection, resilience, and each provider's own settings.
    pub kms: KmsSettings,
    /// Cache of decrypted keys.
    pub cache: CacheSettings,
    /// Database connection handling.
    pub store: StoreSettings,
    /// Key lifecycle.
    pub keys: KeysSettings,
    /// Audit trail.
    pub audit: AuditSettings,
    /// Usage accounting and quotas.
    pub accounting: AccountingSettings,
    /// The gateway (`llm-accounting gateway serve`).
    pub gateway: GatewaySettings,
}

impl Default for Settings {
    /// The embedded defaults (`config/default.toml`), with nothing from the environment.
    fn default() -> Self {
        Settings {
            database_url: None,
            data_dir: None,
            create_if_missing: false,
            default_user: None,
            default_project: None,
            kms: KmsSettings::default(),
            cache: CacheSettings::default(),
            store: StoreSettings::default(),
            keys: KeysSettings::default(),
            audit: AuditSettings::default(),
            accounting: AccountingSettings::default(),
            gateway: GatewaySettings::default(),
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("data_dir", &self.data_dir)
            .field("create_if_missing", &self.create_if_missing)
            .field("default_user", &self.default_user)
            .field("default_project", &self.default_project)
            .field("kms", &self.kms)
            .field("cache", &self.cache)
            .field("store", &self.store)
            .field("keys", &self.keys)
            .field("audit", &self.audit)
            .field("accounting", &self.accounting)
            .field("gateway", &self.gateway)
            .finish()
    }
}

/// Values given on the command line, the strongest layer.
///
/// `Debug` shows the database URL with its password redacted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--db URL`.
    pub database_url: Option<String>,
    /// `--provider NAME`: one of [`PROVIDER_NAMES`] (anything else is a configuration error).
    pub provider: Option<String>,
    /// `--create`: sets `create_if_missing` (`false` leaves it as configured).
    pub create_if_missing: bool,
}

impl Overrides {
    /// The settings these override, each with the command-line flag that sets it.
    fn entries(&self) -> [(&'static str, &'static str, Option<String>); 3] {
        [
            ("database_url", "--db", self.database_url.clone()),
            ("kms.provider", "--provider", self.provider.clone()),
            (
                "create_if_missing",
                "--create",
                self.create_if_missing.then(|| "true".to_owned()),
            ),
        ]
    }
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("provider", &self.provider)
            .field("create_if_missing", &self.create_if_missing)
            .finish()
    }
}

impl Settings {
    /// Loads settings from the process environment: defaults, then the configuration file
    /// ([`Settings::config_file`]: `file`, else the one `LLM_ACCOUNTING_CONFIG` names, else
    /// [`Settings::default_config_file`] if it exists), then `LLM_ACCOUNTING_*` variables,
    /// then `overrides`. The current directory is never searched: a repository's file must
    /// not redirect the keys.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a missing (named) or unreadable file, a key in the file that is no
    /// setting (named, with the file), or a bad value (named, with the variable, flag or file
    /// it came from). A default file that does not exist is no error; one that exists is read
    /// as strictly as a named one.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let file = Self::config_file(file).map(|(path, _)| path);
        // Upstreams may be added by variables alone: their names are found by listing.
        let upstream_vars = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| env::upstream_setting_of(name).is_some())
            .collect();
        Self::load_inner(
            file.as_deref(),
            overrides,
            |name| std::env::var(name).ok(),
            upstream_vars,
        )
    }

    /// Settings from the configuration file and the environment (no overrides): see
    /// [`Settings::load`].
    pub fn from_env() -> Result<Self> {
        Self::load(None, &Overrides::default())
    }

    /// The configuration file read when none is named: `llm-accounting/config.toml` in the
    /// platform's configuration directory (`$XDG_CONFIG_HOME`, else `~/.config`, on Linux;
    /// `~/Library/Application Support` on macOS; `%APPDATA%` on Windows), whether or not it
    /// exists. `None` when the platform has no such directory.
    pub fn default_config_file() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join(DEFAULT_CONFIG_FILE))
    }

    /// The configuration file [`Settings::load`] reads given `file` (the CLI's `--config`),
    /// and where it was named: `file`, else the one [`CONFIG_FILE_ENV`] names, else the
    /// default file if it exists. `None`: no file, the embedded defaults and the environment
    /// only.
    pub fn config_file(file: Option<&Path>) -> Option<(PathBuf, ConfigFileSource)> {
        if let Some(path) = file {
            return Some((path.to_path_buf(), ConfigFileSource::Explicit));
        }
        if let Some(path) = std::env::var_os(CONFIG_FILE_ENV) {
            return Some((PathBuf::from(path), ConfigFileSource::Env));
        }
        Self::default_config_file()
            .filter(|p| p.exists())
            .map(|p| (p, ConfigFileSource::Default))
    }

    /// The variables of the process environment that start with `LLM_ACCOUNTING_` but that
    /// nothing reads (not in [`ENV_VARS`] nor [`OTHER_ENV_VARS`]), each with the nearest valid
    /// name: most likely typos, which leave the setting meant at its default.
    pub fn unknown_env_vars() -> Vec<UnknownEnvVar> {
        env::unknown_env_vars_in(
            std::env::vars_os().map(|(name, _)| name.to_string_lossy().into_owned()),
        )
    }

    /// Like [`Settings::load`], reading variables through `env` (for tests and embedding), and
    /// reading no file unless `file` or `LLM_ACCOUNTING_CONFIG` (through `env`) names one: the
    /// default file is [`Settings::load`]'s. Code that builds its settings itself starts from
    /// [`Settings::default`] instead.
    /// Variables of upstreams (`LLM_ACCOUNTING_GATEWAY_UPSTREAMS_<SERVICE>_BASE_URL`, `_API`)
    /// are read for the services the defaults and the file name.
    pub fn load_with(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        Self::load_inner(file, overrides, env, Vec::new())
    }

    /// [`Settings::load_inner`] with every error's text cleared of passwords in URLs (a parse
    /// error quotes the line it stopped at, a type error the value).
    fn load_inner(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
        upstream_vars: Vec<String>,
    ) -> Result<Self> {
        Self::load_unredacted(file, overrides, env, upstream_vars).map_err(file::redact_error)
    }

    /// [`Settings::load_with`], also reading the upstream variables `upstream_vars`.
    fn load_unredacted(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
        mut upstream_vars: Vec<String>,
    ) -> Result<Self> {
        let mut origins = Origins::default();
        let mut b = Config::builder().add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env(CONFIG_FILE_ENV).map(PathBuf::from));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            let table = read_file(&path, &defaults_table()?)?;
            b = b.add_source(FileTable(table.clone()));
            origins.file = Some((path, table));
        }
        // An empty variable is "not set" (as an empty string in the file means "none").
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        for (var, key) in ENV_VARS {
            if let Some(v) = env(var) {
                b = b
                    .set_override(*key, v)
                    .map_err(|e| config_error(format!("bad value in {var}"), e))?;
                origins.env.push(((*key).to_owned(), (*var).to_owned()));
            }
        }
        let mut services: Vec<String> = GatewaySettings::default().upstreams.into_keys().collect();
        if let Some((_, table)) = &origins.file
            && let Some(config::ValueKind::Table(t)) =
                lookup(table, "gateway.upstreams").map(|v| &v.kind)
        {
            services.extend(t.keys().cloned());
        }
        upstream_vars.extend(services.iter().flat_map(|s| env::upstream_vars_of(s)));
        upstream_vars.sort();
        upstream_vars.dedup();
        for var in upstream_vars {
            if let (Some(key), Some(v)) = (env::upstream_setting_of(&var), env(&var)) {
                b = b
                    .set_override(key.as_str(), v)
                    .map_err(|e| config_error(format!("bad value in {var}"), e))?;
                origins.env.push((key, var));
            }
        }
        for (key, flag, value) in overrides.entries() {
            if let Some(v) = value {
                b = b
                    .set_override(key, v)
                    .map_err(|e| config_error(format!("bad value of {flag}"), e))?;
                origins.overrides.push((key, flag));
            }
        }
        let cfg = b
            .build()
            .map_err(|e| config_error("could not read the configuration", e))?;
        let settings: Settings = cfg.try_deserialize().map_err(|e| origins.explain(e))?;
        settings
            .check()
            .map_err(|(key, message)| Error::config(format!("{message} ({})", origins.of(key))))?;
        Ok(settings)
    }

    /// Checks values that deserialization cannot.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(_, message)| Error::config(message))
    }

    /// Every number from the user that a duration, a queue or a pool is made of, with the
    /// largest value it may take: beyond, time arithmetic overflows and queues cannot be
    /// allocated, so such values are configuration errors (exit 2), never a crash.
    fn bounded(&self) -> [(&'static str, u64, u64, &'static str); 24] {
        const SECS: u64 = 10 * 365 * 24 * 3600;
        const MS: u64 = SECS * 1000;
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        [
            (
                "kms.max_attempts",
                u64::from(self.kms.max_attempts),
                1_000,
                "at most 1000",
            ),
            (
                "kms.max_retry_time_ms",
                self.kms.max_retry_time_ms,
                MS,
                "at most 10 years",
            ),
            (
                "kms.timeout_ms",
                self.kms.timeout_ms,
                MS,
                "at most 10 years",
            ),
            (
                "kms.initial_backoff_ms",
                self.kms.initial_backoff_ms,
                MS,
                "at most 10 years",
            ),
            (
                "kms.max_backoff_ms",
                self.kms.max_backoff_ms,
                MS,
                "at most 10 years",
            ),
            (
                "kms.branch_key_ttl_secs",
                self.kms.branch_key_ttl_secs,
                SECS,
                "at most 10 years",
            ),
            (
                "cache.ttl_secs",
                self.cache.ttl_secs,
                SECS,
                "at most 10 years",
            ),
            (
                "cache.max_entries",
                self.cache.max_entries,
                100_000_000,
                "at most 100000000",
            ),
            (
                "cache.refresh_interval_ms",
                self.cache.refresh_interval_ms,
                MS,
                "at most 10 years",
            ),
            (
                "store.max_connections",
                u64::from(self.store.max_connections),
                10_000,
                "at most 10000",
            ),
            (
                "store.connect_timeout_secs",
                self.store.connect_timeout_secs,
                SECS,
                "at most 10 years",
            ),
            // SQLite takes its busy timeout in milliseconds, as a 32-bit number.
            (
                "store.busy_timeout_secs",
                self.store.busy_timeout_secs,
                2_147_483,
                "at most 2147483 (24 days)",
            ),
            (
                "store.last_used_interval_secs",
                self.store.last_used_interval_secs,
                SECS,
                "at most 10 years",
            ),
            (
                "keys.previous_grace_secs",
                self.keys.previous_grace_secs,
                SECS,
                "at most 10 years",
            ),
            (
                "audit.max_pending",
                n(self.audit.max_pending),
                100_000_000,
                "at most 100000000",
            ),
            (
                "audit.aggregate_interval_ms",
                self.audit.aggregate_interval_ms,
                MS,
                "at most 10 years",
            ),
            (
                "accounting.sync_ms",
                self.accounting.sync_ms,
                MS,
                "at most 10 years",
            ),
            (
                "accounting.max_pending",
                n(self.accounting.max_pending),
                100_000_000,
                "at most 100000000",
            ),
            (
                "accounting.reservation_ttl_secs",
                self.accounting.reservation_ttl_secs,
                SECS,
                "at most 10 years",
            ),
            (
                "gateway.upstream_retries",
                u64::from(self.gateway.upstream_retries),
                100,
                "at most 100",
            ),
            (
                "gateway.upstream_timeout_secs",
                self.gateway.upstream_timeout_secs,
                SECS,
                "at most 10 years",
            ),
            (
                "gateway.drain_secs",
                self.gateway.drain_secs,
                SECS,
                "at most 10 years",
            ),
            (
                "gateway.max_body_bytes",
                n(self.gateway.max_body_bytes),
                1 << 32,
                "at most 4 GiB",
            ),
            (
                "gateway.key_refresh_ms",
                self.gateway.key_refresh_ms,
                MS,
                "at most 10 years",
            ),
        ]
    }

    /// Like [`Settings::validate`], naming the setting at fault.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        for (setting, value, max, says) in self.bounded() {
            if value > max {
                return Err((setting, format!("{setting} must be {says}, not {value}")));
            }
        }
        self.check_rules().map_err(|(k, m)| (k, m.to_owned()))
    }

    /// The rules of [`Settings::check`] beyond the bounds.
    fn check_rules(&self) -> std::result::Result<(), (&'static str, &'static str)> {
        if self.cache.max_entries == 0 {
            return Err(("cache.max_entries", "cache.max_entries must be at least 1"));
        }
        if self.store.max_connections == 0 {
            return Err((
                "store.max_connections",
                "store.max_connections must be at least 1",
            ));
        }
        if self.kms.max_attempts == 0 {
            return Err((
                "kms.max_attempts",
                "kms.max_attempts must be at least 1 (1 means no retries)",
            ));
        }
        if self.kms.timeout_ms == 0 {
            return Err(("kms.timeout_ms", "kms.timeout_ms must be at least 1"));
        }
        if self.audit.max_pending == 0 {
            return Err(("audit.max_pending", "audit.max_pending must be at least 1"));
        }
        if self.audit.aggregate_interval_ms == 0 {
            return Err((
                "audit.aggregate_interval_ms",
                "audit.aggregate_interval_ms must be at least 1 (audit.every_hit = true writes \
                 one row per cache hit)",
            ));
        }
        if self.audit.anchor_file.is_some() && !self.audit.enabled {
            return Err((
                "audit.anchor_file",
                "audit.anchor_file keeps the audit trail's head: it needs audit.enabled = true",
            ));
        }
        if self.accounting.sync_ms == 0 {
            return Err((
                "accounting.sync_ms",
                "accounting.sync_ms must be at least 1",
            ));
        }
        if self.accounting.max_pending == 0 {
            return Err((
                "accounting.max_pending",
                "accounting.max_pending must be at least 1",
            ));
        }
        if self.accounting.engine == AccountingEngine::Redis && self.accounting.redis_url.is_none()
        {
            return Err((
                "accounting.redis_url",
                "accounting.engine = redis needs accounting.redis_url \
                 (LLM_ACCOUNTING_ACCOUNTING_REDIS_URL), e.g. redis://127.0.0.1:6379",
            ));
        }
        if !self
            .gateway
            .upstreams
            .contains_key(&self.gateway.default_service)
        {
            return Err((
                "gateway.default_service",
                "gateway.default_service must name a service of gateway.upstreams",
            ));
        }
        if self.gateway.key_refresh_ms == 0 {
            return Err((
                "gateway.key_refresh_ms",
                "gateway.key_refresh_ms must be at least 1",
            ));
        }
        if self.gateway.max_body_bytes == 0 {
            return Err((
                "gateway.max_body_bytes",
                "gateway.max_body_bytes must be at least 1",
            ));
        }
        if self.accounting.reservation_ttl_secs == 0 {
            return Err((
                "accounting.reservation_ttl_secs",
                "accounting.reservation_ttl_secs must be at least 1",
            ));
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
                Error::config(format!(
                    "no platform data directory; set {} or {}",
                    env_var_of("data_dir"),
                    env_var_of("database_url")
                ))
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
        match &self.kms.local.master_key_file {
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
            require_sealed: self.keys.require_sealed,
        }
    }

    /// Who the audit rows of an unbound manager name: `audit.principal`, else the
    /// operating-system user (`$USER`, else `$LOGNAME`), else `-`. A name with a control or
    /// invisible character, or longer than 64 characters, is not used (`-`).
    pub fn audit_actor(&self) -> String {
        let usable = |s: &str| {
            !s.is_empty()
                && s.chars().count() <= 64
                && !s
                    .chars()
                    .any(|c| c.is_control() || llm_accounting_core::is_hidden_char(c))
        };
        self.audit
            .principal
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .filter(|s| usable(s))
            .unwrap_or_else(|| "-".to_owned())
    }

    /// Audit trail options from these settings (whether there is a trail at all is
    /// `audit.enabled`).
    pub fn audit_options(&self) -> AuditOptions {
        AuditOptions {
            fail_closed: self.audit.fail_closed,
            max_pending: self.audit.max_pending,
            aggregate_interval: Duration::from_millis(self.audit.aggregate_interval_ms),
            every_hit: self.audit.every_hit,
            // The trail in the key database: a key change and its row commit together.
            same_transaction: self.audit.database_url.is_none(),
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

    /// Store options from these settings (`create_if_missing` as set: the default database is
    /// created by [`build_repository`](crate::build_repository) whatever it says).
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            max_connections: self.store.max_connections,
            connect_timeout: Duration::from_secs(self.store.connect_timeout_secs),
            busy_timeout: Duration::from_secs(self.store.busy_timeout_secs),
            schema: self.store.schema.clone(),
            create_if_missing: self.create_if_missing,
        }
    }
}
