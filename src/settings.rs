//! Configuration: embedded defaults < file < environment < explicit overrides (CLI flags).
//!
//! Every setting lives in [`Settings`] and has exactly one environment variable
//! ([`ENV_VARS`]). A file may only name settings that exist: an unknown key is an error naming
//! it, never silently a default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use config::{Config, ConfigError, File, FileFormat, Map, Source, Value, ValueKind};
use serde::{Deserialize, Deserializer};

use crate::layers::{LayerOptions, RetryPolicy};
use crate::{CacheOptions, Error, ManagerOptions, Result, StoreOptions};

/// The embedded defaults (`config/default.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Environment variables read by [`Settings::load`], and the setting each one sets: one
/// variable per setting, each setting has one.
///
/// Variables added after the first release are named `LLM_ACCOUNTING_` + the setting's path in
/// capitals with `.` turned into `_` (`store.last_used_interval_secs` →
/// `LLM_ACCOUNTING_STORE_LAST_USED_INTERVAL_SECS`); older ones keep the names they had.
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
        "kms.local.master_key_file",
    ),
    (
        "LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION",
        "kms.local.min_master_key_version",
    ),
    ("LLM_ACCOUNTING_KMS_AWS_REGION", "kms.aws.region"),
    ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "kms.azure.credentials"),
    (
        "LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM",
        "kms.azure.wrap_algorithm",
    ),
    ("LLM_ACCOUNTING_GCP_CREDENTIALS", "kms.gcp.credentials"),
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
        "LLM_ACCOUNTING_STORE_LAST_USED_INTERVAL_SECS",
        "store.last_used_interval_secs",
    ),
    (
        "LLM_ACCOUNTING_PREVIOUS_GRACE_SECS",
        "keys.previous_grace_secs",
    ),
    ("LLM_ACCOUNTING_AUDIT_ENABLED", "audit.enabled"),
    ("LLM_ACCOUNTING_AUDIT_FAIL_CLOSED", "audit.fail_closed"),
    ("LLM_ACCOUNTING_AUDIT_DATABASE_URL", "audit.database_url"),
];

/// The variable of `setting` in [`ENV_VARS`] (empty for a setting that has none, which a unit
/// test rules out).
pub(crate) fn env_var_of(setting: &str) -> &'static str {
    ENV_VARS
        .iter()
        .find(|(_, s)| *s == setting)
        .map_or("", |(v, _)| v)
}

/// Variable naming a config file when none is given explicitly.
pub const CONFIG_FILE_ENV: &str = "LLM_ACCOUNTING_CONFIG";

/// The file section that older configurations use for [`KmsSettings::local`]: `[local]` is read
/// as `[kms.local]`.
const LEGACY_LOCAL_SECTION: &str = "local";

/// Every provider name llm-accounting knows, compiled in or not: the names of
/// [`KmsProviderKind::ALL`].
pub const PROVIDER_NAMES: &[&str] = &PROVIDER_NAME_ARRAY;

const PROVIDER_NAME_ARRAY: [&str; KmsProviderKind::ALL.len()] = {
    let mut names = [""; KmsProviderKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = KmsProviderKind::ALL[i].as_str();
        i += 1;
    }
    names
};

/// A setting whose value is one of a few names.
trait Choice: Sized + Copy + Default + 'static {
    /// What the value is, for messages (`provider`, `Azure credential kind`).
    const WHAT: &'static str;
    /// Every value.
    const ALL: &'static [Self];
    /// Whether an empty (or blank) value means the default.
    const EMPTY_IS_DEFAULT: bool;
    /// The value's name.
    fn name(self) -> &'static str;
}

/// The value named `text` (trimmed, case-insensitive).
fn parse_choice<T: Choice>(text: &str) -> std::result::Result<T, String> {
    let name = text.trim();
    if T::EMPTY_IS_DEFAULT && name.is_empty() {
        return Ok(T::default());
    }
    T::ALL
        .iter()
        .copied()
        .find(|c| c.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|c| c.name()).collect();
            format!(
                "unknown {} `{text}`; expected one of: {}",
                T::WHAT,
                names.join(", ")
            )
        })
}

/// `Display` (the name), `FromStr` and `Deserialize` (by name, trimmed and case-insensitive)
/// for [`Choice`] types.
macro_rules! choice_impls {
    ($($t:ty),* $(,)?) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                parse_choice(s).map_err(Error::config)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                parse_choice(&text).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

choice_impls!(
    KmsProviderKind,
    AzureCredentials,
    AzureKeyWrap,
    GcpCredentials
);

/// Which KMS holds the master key (`kms.provider`).
///
/// Every variant exists whatever features are compiled in, so that a provider whose feature
/// is off is reported as such ("built without feature kms-gcp") when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KmsProviderKind {
    /// The local-development provider: master keys in a file (feature `kms-local`).
    #[default]
    Local,
    /// AWS KMS (feature `kms-aws`).
    Aws,
    /// Azure Key Vault or Managed HSM (feature `kms-azure`).
    Azure,
    /// Google Cloud KMS (feature `kms-gcp`).
    Gcp,
}

impl KmsProviderKind {
    /// Every provider llm-accounting knows, compiled in or not.
    pub const ALL: &'static [KmsProviderKind] = &[
        KmsProviderKind::Local,
        KmsProviderKind::Aws,
        KmsProviderKind::Azure,
        KmsProviderKind::Gcp,
    ];

    /// The name in settings, on the command line and in stored records: `local`, `aws`,
    /// `azure` or `gcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KmsProviderKind::Local => "local",
            KmsProviderKind::Aws => "aws",
            KmsProviderKind::Azure => "azure",
            KmsProviderKind::Gcp => "gcp",
        }
    }

    /// The Cargo feature of the facade that compiles this provider in.
    pub const fn feature(self) -> &'static str {
        match self {
            KmsProviderKind::Local => "kms-local",
            KmsProviderKind::Aws => "kms-aws",
            KmsProviderKind::Azure => "kms-azure",
            KmsProviderKind::Gcp => "kms-gcp",
        }
    }

    /// Whether this build of llm-accounting has the provider.
    pub const fn is_built(self) -> bool {
        match self {
            KmsProviderKind::Local => cfg!(feature = "kms-local"),
            KmsProviderKind::Aws => cfg!(feature = "kms-aws"),
            KmsProviderKind::Azure => cfg!(feature = "kms-azure"),
            KmsProviderKind::Gcp => cfg!(feature = "kms-gcp"),
        }
    }
}

impl Choice for KmsProviderKind {
    const WHAT: &'static str = "provider";
    const ALL: &'static [Self] = KmsProviderKind::ALL;
    const EMPTY_IS_DEFAULT: bool = false;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Compares with a provider name (`settings.kms.provider == "aws"`).
impl PartialEq<str> for KmsProviderKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Compares with a provider name (`settings.kms.provider == "aws"`).
impl PartialEq<&str> for KmsProviderKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How the Azure provider authenticates (`kms.azure.credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AzureCredentials {
    /// `default`: a DefaultAzureCredential-style chain (client secret from the standard
    /// `AZURE_*` variables, workload identity, managed identity, Azure CLI / azd).
    #[default]
    Default,
    /// `client-secret`: a service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    /// `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// `managed-identity`: the system-assigned identity, or the user-assigned one whose client
    /// id is in `AZURE_CLIENT_ID`.
    ManagedIdentity,
    /// `developer-tools`: `az login`, then `azd auth login`.
    DeveloperTools,
}

impl AzureCredentials {
    /// The name in settings: `default`, `client-secret`, `managed-identity`,
    /// `developer-tools`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AzureCredentials::Default => "default",
            AzureCredentials::ClientSecret => "client-secret",
            AzureCredentials::ManagedIdentity => "managed-identity",
            AzureCredentials::DeveloperTools => "developer-tools",
        }
    }
}

impl Choice for AzureCredentials {
    const WHAT: &'static str = "Azure credential kind";
    const ALL: &'static [Self] = &[
        AzureCredentials::Default,
        AzureCredentials::ClientSecret,
        AzureCredentials::ManagedIdentity,
        AzureCredentials::DeveloperTools,
    ];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// The algorithm the Azure provider wraps data keys with (`kms.azure.wrap_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AzureKeyWrap {
    /// `RSA-OAEP-256`, for RSA keys (Key Vault and Managed HSM).
    #[default]
    RsaOaep256,
    /// `A256KW`, for AES keys in a Managed HSM.
    A256Kw,
}

impl AzureKeyWrap {
    /// The JWA name: `RSA-OAEP-256` or `A256KW`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AzureKeyWrap::RsaOaep256 => "RSA-OAEP-256",
            AzureKeyWrap::A256Kw => "A256KW",
        }
    }
}

impl Choice for AzureKeyWrap {
    const WHAT: &'static str = "Azure wrap algorithm";
    const ALL: &'static [Self] = &[AzureKeyWrap::RsaOaep256, AzureKeyWrap::A256Kw];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Which credentials the Google Cloud provider sends (`kms.gcp.credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum GcpCredentials {
    /// `default`: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
    /// ADC file, or the metadata server).
    #[default]
    Default,
    /// `anonymous`: none at all, for emulators.
    Anonymous,
}

impl GcpCredentials {
    /// The name in settings: `default` or `anonymous`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GcpCredentials::Default => "default",
            GcpCredentials::Anonymous => "anonymous",
        }
    }
}

impl Choice for GcpCredentials {
    const WHAT: &'static str = "GCP credential kind";
    const ALL: &'static [Self] = &[GcpCredentials::Default, GcpCredentials::Anonymous];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

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
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
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
}

impl Default for Settings {
    /// The embedded defaults (`config/default.toml`), with nothing from the environment.
    fn default() -> Self {
        Settings {
            database_url: None,
            data_dir: None,
            default_user: None,
            default_project: None,
            kms: KmsSettings::default(),
            cache: CacheSettings::default(),
            store: StoreSettings::default(),
            keys: KeysSettings::default(),
            audit: AuditSettings::default(),
        }
    }
}

/// Audit trail settings (`[audit]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuditSettings {
    /// Write one audit row per operation.
    pub enabled: bool,
    /// Refuse an operation (return no key) when its audit row cannot be written.
    pub fail_closed: bool,
    /// Another database for the audit table; `None`: the key database.
    #[serde(deserialize_with = "empty_is_none")]
    pub database_url: Option<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            fail_closed: false,
            database_url: None,
        }
    }
}

/// Key lifecycle settings (`[keys]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeysSettings {
    /// Seconds a rotated-out value stays readable with `get --previous`.
    pub previous_grace_secs: u64,
}

impl Default for KeysSettings {
    fn default() -> Self {
        KeysSettings {
            previous_grace_secs: 86_400,
        }
    }
}

/// Which KMS, which master key in it, how calls to it are retried, and each provider's own
/// settings (`[kms]`, `[kms.local]`, `[kms.aws]`, `[kms.azure]`, `[kms.gcp]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KmsSettings {
    /// `local`, `aws`, `azure` or `gcp`.
    pub provider: KmsProviderKind,
    /// Master key id of a cloud provider (AWS key id/ARN/alias, Azure key URL, GCP CryptoKey
    /// name); required for those.
    #[serde(deserialize_with = "empty_is_none")]
    pub key_id: Option<String>,
    /// Endpoint override (emulators, private endpoints).
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
    /// The local provider (`[kms.local]`; older files call it `[local]`).
    pub local: LocalSettings,
    /// The AWS KMS provider (`[kms.aws]`).
    pub aws: AwsSettings,
    /// The Azure Key Vault provider (`[kms.azure]`).
    pub azure: AzureSettings,
    /// The Google Cloud KMS provider (`[kms.gcp]`).
    pub gcp: GcpSettings,
}

impl Default for KmsSettings {
    fn default() -> Self {
        KmsSettings {
            provider: KmsProviderKind::default(),
            key_id: None,
            endpoint: None,
            max_attempts: 3,
            max_retry_time_ms: 10_000,
            timeout_ms: 5_000,
            initial_backoff_ms: 50,
            max_backoff_ms: 2_000,
            local: LocalSettings::default(),
            aws: AwsSettings::default(),
            azure: AzureSettings::default(),
            gcp: GcpSettings::default(),
        }
    }
}

/// Local provider settings (`[kms.local]`, or `[local]` in older files).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalSettings {
    /// Master key file; `None` means `master.key` in the data directory.
    #[serde(deserialize_with = "empty_is_none_path")]
    pub master_key_file: Option<PathBuf>,
    /// Master-key versions below this are retired (0: none).
    pub min_master_key_version: u32,
}

/// AWS KMS provider settings (`[kms.aws]`). Credentials, and the region unless set here, come
/// from the standard aws-config chain (`AWS_REGION`, `AWS_PROFILE`, ...).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AwsSettings {
    /// The AWS region; `None`: `AWS_REGION` or the profile's.
    #[serde(deserialize_with = "empty_is_none")]
    pub region: Option<String>,
}

/// Azure Key Vault provider settings (`[kms.azure]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AzureSettings {
    /// How to authenticate.
    pub credentials: AzureCredentials,
    /// The key-wrap algorithm; change it only together with the key (and `keys rewrap`).
    pub wrap_algorithm: AzureKeyWrap,
}

/// Google Cloud KMS provider settings (`[kms.gcp]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GcpSettings {
    /// Which credentials to send.
    pub credentials: GcpCredentials,
}

/// Cache settings (`[cache]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheSettings {
    /// Seconds a decrypted key is served from memory.
    pub ttl_secs: u64,
    /// Most keys cached at once.
    pub max_entries: u64,
    /// Milliseconds between checks of cached keys against the store (0: off).
    pub refresh_interval_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl_secs: 3_600,
            max_entries: 10_000,
            refresh_interval_ms: 2_000,
        }
    }
}

/// Database settings (`[store]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreSettings {
    /// Connection pool size.
    pub max_connections: u32,
    /// Seconds to wait for a connection.
    pub connect_timeout_secs: u64,
    /// Seconds SQLite waits on a locked database.
    pub busy_timeout_secs: u64,
    /// PostgreSQL schema for the tables; `None`: the server's default.
    #[serde(deserialize_with = "empty_is_none")]
    pub schema: Option<String>,
    /// `last_used_at` is written at most once per key per this many seconds.
    pub last_used_interval_secs: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            max_connections: 8,
            connect_timeout_secs: 10,
            busy_timeout_secs: 5,
            schema: None,
            last_used_interval_secs: 60,
        }
    }
}

fn empty_is_none<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

fn empty_is_none_path<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<PathBuf>, D::Error> {
    Ok(empty_is_none(d)?.map(PathBuf::from))
}

/// Values given on the command line, the strongest layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--db URL`.
    pub database_url: Option<String>,
    /// `--provider NAME`: one of [`PROVIDER_NAMES`] (anything else is a configuration error).
    pub provider: Option<String>,
}

impl Overrides {
    /// The settings these override, each with the command-line flag that sets it.
    fn entries(&self) -> [(&'static str, &'static str, Option<&String>); 2] {
        [
            ("database_url", "--db", self.database_url.as_ref()),
            ("kms.provider", "--provider", self.provider.as_ref()),
        ]
    }
}

/// A parsed configuration file, as a source for the `config` crate.
#[derive(Debug, Clone)]
struct FileTable(Map<String, Value>);

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
struct Origins {
    /// The configuration file and its settings (`[local]` already read as `[kms.local]`).
    file: Option<(PathBuf, Map<String, Value>)>,
    /// Settings set by environment variables: (setting, variable).
    env: Vec<(&'static str, &'static str)>,
    /// Settings set by overrides: (setting, flag).
    overrides: Vec<(&'static str, &'static str)>,
}

impl Origins {
    /// Where the value of `setting` came from: `from --provider`, `from LLM_ACCOUNTING_...`,
    /// `in FILE`, or `in the embedded defaults`.
    fn of(&self, setting: &str) -> String {
        let by = |list: &[(&str, &'static str)]| {
            list.iter()
                .find(|(s, _)| *s == setting)
                .map(|(_, name)| *name)
        };
        if let Some(flag) = by(&self.overrides) {
            return format!("from {flag}");
        }
        if let Some(var) = by(&self.env) {
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
    fn explain(&self, e: ConfigError) -> Error {
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
fn describe(e: &ConfigError) -> (Option<String>, String) {
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
fn lookup<'a>(table: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
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
fn defaults_table() -> Result<Map<String, Value>> {
    Config::builder()
        .add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml))
        .build()
        .and_then(|c| c.collect())
        .map_err(|e| config_error("the embedded defaults do not parse", e))
}

/// Keys of `file` that no setting has, as dotted paths (`prefix` + key), appended to `out`.
/// `schema` is the matching part of the embedded defaults. A value whose type does not fit
/// (a table for a number, ...) is left to deserialization, which names it.
fn unknown_keys(
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
            (Some(ValueKind::Table(s)), ValueKind::Table(f)) => unknown_keys(f, s, &path, out),
            (Some(_), _) => {}
        }
    }
}

/// Reads a configuration file: checks that it names only existing settings, and reads its
/// `[local]` section (the older name) as `[kms.local]`.
///
/// A setting given under both names must have the same value in both.
fn read_file(path: &Path, defaults: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut table = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml).required(true))
        .build()
        .and_then(|c| c.collect())
        .map_err(|e| {
            config_error(
                format!("could not read the configuration (in {})", path.display()),
                e,
            )
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
fn section<'a>(value: &'a mut Value, origin: &String) -> Option<&'a mut Map<String, Value>> {
    if matches!(value.kind, ValueKind::Nil) {
        *value = Value::new(Some(origin), Map::<String, Value>::new());
    }
    match &mut value.kind {
        ValueKind::Table(t) => Some(t),
        _ => None,
    }
}

fn config_error(message: impl Into<String>, e: ConfigError) -> Error {
    Error::Config {
        message: message.into(),
        source: Some(Arc::new(e)),
    }
}

impl Settings {
    /// Loads settings from the process environment: defaults, then the file named by
    /// `file` or `LLM_ACCOUNTING_CONFIG`, then `LLM_ACCOUNTING_*` variables, then `overrides`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a missing or unreadable file, a key in the file that is no
    /// setting (named, with the file), or a bad value (named, with the variable, flag or file
    /// it came from).
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        Self::load_with(file, overrides, |name| std::env::var(name).ok())
    }

    /// Settings from the environment alone (no file, no overrides).
    pub fn from_env() -> Result<Self> {
        Self::load(None, &Overrides::default())
    }

    /// Like [`Settings::load`], reading variables through `env` (for tests and embedding).
    /// Code that builds its settings itself starts from [`Settings::default`] instead.
    pub fn load_with(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
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
        for (var, key) in ENV_VARS {
            if let Some(v) = env(var) {
                b = b
                    .set_override(*key, v)
                    .map_err(|e| config_error(format!("bad value in {var}"), e))?;
                origins.env.push((*key, *var));
            }
        }
        for (key, flag, value) in overrides.entries() {
            if let Some(v) = value {
                b = b
                    .set_override(key, v.clone())
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

    /// Like [`Settings::validate`], naming the setting at fault.
    fn check(&self) -> std::result::Result<(), (&'static str, &'static str)> {
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
            s.kms.local.master_key_file.as_deref(),
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

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    /// Dotted paths of every leaf of `table`.
    fn leaves(table: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match &value.kind {
                ValueKind::Table(t) => leaves(t, &path, out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn default_is_the_embedded_defaults() {
        let loaded = load(&[], None, &Overrides::default()).expect("defaults");
        assert_eq!(Settings::default(), loaded);
        Settings::default().validate().expect("valid");
    }

    #[test]
    fn every_setting_has_exactly_one_variable() {
        let mut settings = Vec::new();
        leaves(&defaults_table().expect("defaults"), "", &mut settings);
        settings.sort();
        let mut listed: Vec<String> = ENV_VARS.iter().map(|(_, s)| (*s).to_owned()).collect();
        listed.sort();
        assert_eq!(settings, listed, "ENV_VARS and config/default.toml differ");
        let mut vars: Vec<&str> = ENV_VARS.iter().map(|(v, _)| *v).collect();
        vars.sort_unstable();
        vars.dedup();
        assert_eq!(vars.len(), ENV_VARS.len(), "a variable sets two settings");
        assert!(!vars.contains(&CONFIG_FILE_ENV));
    }

    #[test]
    fn new_variables_follow_the_naming_rule() {
        // The names that existed before the rule; this list must not grow.
        const OLDER_NAMES: &[&str] = &[
            "LLM_ACCOUNTING_USER",
            "LLM_ACCOUNTING_PROJECT",
            "LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE",
            "LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION",
            "LLM_ACCOUNTING_AZURE_CREDENTIALS",
            "LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM",
            "LLM_ACCOUNTING_GCP_CREDENTIALS",
            "LLM_ACCOUNTING_CACHE_REFRESH_MS",
            "LLM_ACCOUNTING_DB_MAX_CONNECTIONS",
            "LLM_ACCOUNTING_DB_CONNECT_TIMEOUT_SECS",
            "LLM_ACCOUNTING_DB_BUSY_TIMEOUT_SECS",
            "LLM_ACCOUNTING_DATABASE_SCHEMA",
            "LLM_ACCOUNTING_PREVIOUS_GRACE_SECS",
        ];
        for (var, setting) in ENV_VARS {
            let rule = format!(
                "LLM_ACCOUNTING_{}",
                setting.to_ascii_uppercase().replace('.', "_")
            );
            if OLDER_NAMES.contains(var) {
                assert_ne!(
                    *var, rule,
                    "{var} follows the rule: drop it from OLDER_NAMES"
                );
            } else {
                assert_eq!(*var, rule, "the variable of {setting}");
            }
        }
        assert_eq!(
            env_var_of("store.last_used_interval_secs"),
            "LLM_ACCOUNTING_STORE_LAST_USED_INTERVAL_SECS"
        );
        assert_eq!(env_var_of("kms.key_id"), "LLM_ACCOUNTING_KMS_KEY_ID");
    }

    #[test]
    fn the_readme_lists_every_variable_with_its_setting() {
        let readme = include_str!("../README.md");
        for (var, setting) in ENV_VARS {
            let row = format!("| `{var}` | `{setting}`");
            assert!(
                readme.lines().any(|l| l.starts_with(&row)),
                "README.md's configuration table has no row {row}"
            );
        }
    }

    #[test]
    fn the_example_files_load() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
        let mut loaded = Vec::new();
        for entry in std::fs::read_dir(dir).expect("config/") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !name.ends_with(".example.toml") {
                continue;
            }
            let s = load(&[], Some(&path), &Overrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                name.strip_suffix(".example.toml"),
                Some(s.kms.provider.as_str()),
                "one example per provider, named after it"
            );
            loaded.push(s.kms.provider);
        }
        loaded.sort_by_key(|k| k.as_str());
        let mut all = KmsProviderKind::ALL.to_vec();
        all.sort_by_key(|k| k.as_str());
        assert_eq!(loaded, all);
    }

    #[test]
    fn providers_are_an_enum_named_as_before() {
        assert_eq!(PROVIDER_NAMES, &["local", "aws", "azure", "gcp"]);
        for (kind, name) in KmsProviderKind::ALL.iter().zip(PROVIDER_NAMES) {
            assert_eq!(kind.as_str(), *name);
            assert_eq!(name.parse::<KmsProviderKind>().expect(name), *kind);
            assert_eq!(kind.to_string(), *name);
            assert_eq!(kind.feature(), format!("kms-{name}"));
        }
        assert!(KmsProviderKind::Local == "local" && KmsProviderKind::Gcp != "aws");
        let err = "vault".parse::<KmsProviderKind>().expect_err("unknown");
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("unknown provider `vault`; expected one of: local, aws, azure, gcp"),
            "{err}"
        );
        assert!(
            "".parse::<KmsProviderKind>().is_err(),
            "no default provider"
        );
    }

    #[test]
    fn every_settings_struct_denies_unknown_fields() {
        // Straight through serde, without the file check of `load_with`: each section.
        let mut sections = vec![String::new()];
        fn tables(t: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                if let ValueKind::Table(inner) = &v.kind {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(path.clone());
                    tables(inner, &path, out);
                }
            }
        }
        tables(&defaults_table().expect("defaults"), "", &mut sections);
        assert!(sections.len() >= 10, "{sections:?}");
        for section in sections {
            let key = if section.is_empty() {
                "unheard_of".to_owned()
            } else {
                format!("{section}.unheard_of")
            };
            let err = Config::builder()
                .add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml))
                .set_override(key.as_str(), "1")
                .and_then(|b| b.build())
                .and_then(|c| c.try_deserialize::<Settings>())
                .expect_err(&key);
            assert!(
                err.to_string().contains("unknown field `unheard_of`"),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_in_a_file_are_errors_naming_them_and_the_file() {
        for (text, named) in [
            ("[kms]\nprovder = \"aws\"\n", "`kms.provder`"),
            ("[audit]\nfail_close = true\n", "`audit.fail_close`"),
            ("databse_url = \"sqlite://x.db\"\n", "`databse_url`"),
            (
                "[kms.azure]\ncredential = \"default\"\n",
                "`kms.azure.credential`",
            ),
            ("[kms.aws]\nprofile = \"dev\"\n", "`kms.aws.profile`"),
            ("[local]\nmaster_key = \"/k\"\n", "`local.master_key`"),
            (
                "[kms.local]\nmaster_key = \"/k\"\n",
                "`kms.local.master_key`",
            ),
            ("[metrics]\nenabled = true\n", "`metrics`"),
        ] {
            let (_dir, path) = file(text);
            let err = load(&[], Some(&path), &Overrides::default()).expect_err(text);
            let msg = err.to_string();
            assert!(matches!(err, Error::Config { .. }), "{msg}");
            assert!(msg.contains(named), "{text}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        let (_dir, path) = file("[kms]\nprovder = \"aws\"\n");
        let msg = load(&[], Some(&path), &Overrides::default())
            .expect_err("typo")
            .to_string();
        assert!(
            msg.contains("expected one of:") && msg.contains("provider"),
            "{msg}"
        );
        // All of them at once, not only the first.
        let (_dir, path) = file("[audit]\nfail_close = true\n[kms]\nprovder = \"aws\"\n");
        let msg = load(&[], Some(&path), &Overrides::default())
            .expect_err("two typos")
            .to_string();
        assert!(
            msg.contains("`audit.fail_close`") && msg.contains("`kms.provder`"),
            "{msg}"
        );
    }

    #[test]
    fn the_older_local_section_is_read_as_kms_local() {
        let (_dir, path) =
            file("[local]\nmaster_key_file = \"/old\"\nmin_master_key_version = 2\n");
        let s = load(&[], Some(&path), &Overrides::default()).expect("older file");
        assert_eq!(
            s.kms.local.master_key_file.as_deref(),
            Some(Path::new("/old"))
        );
        assert_eq!(s.kms.local.min_master_key_version, 2);
        assert_eq!(s.master_key_file().expect("path").0, PathBuf::from("/old"));

        // The variables still win over the file, whichever name it uses.
        let env = [("LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE", "/env")];
        let s = load(&env, Some(&path), &Overrides::default()).expect("env wins");
        assert_eq!(
            s.kms.local.master_key_file.as_deref(),
            Some(Path::new("/env"))
        );
        assert_eq!(s.kms.local.min_master_key_version, 2);

        // Both names in one file: fine when they agree or set different settings.
        let (_dir, path) = file(
            "[local]\nmaster_key_file = \"/same\"\n\
             [kms.local]\nmaster_key_file = \"/same\"\nmin_master_key_version = 3\n",
        );
        let s = load(&[], Some(&path), &Overrides::default()).expect("agreeing");
        assert_eq!(
            s.kms.local.master_key_file.as_deref(),
            Some(Path::new("/same"))
        );
        assert_eq!(s.kms.local.min_master_key_version, 3);

        // ... an error naming both when they disagree.
        let (_dir, path) =
            file("[local]\nmaster_key_file = \"/a\"\n[kms.local]\nmaster_key_file = \"/b\"\n");
        let msg = load(&[], Some(&path), &Overrides::default())
            .expect_err("disagreeing")
            .to_string();
        assert!(
            msg.contains("local.master_key_file")
                && msg.contains("kms.local.master_key_file")
                && msg.contains(&path.display().to_string()),
            "{msg}"
        );

        let (_dir, path) = file("local = \"/k\"\n");
        let msg = load(&[], Some(&path), &Overrides::default())
            .expect_err("not a section")
            .to_string();
        assert!(msg.contains("`local`"), "{msg}");
    }

    #[test]
    fn provider_sections_come_from_files_and_their_variables() {
        let (_dir, path) = file(
            "[kms.aws]\nregion = \"eu-west-1\"\n\
             [kms.azure]\ncredentials = \"client-secret\"\nwrap_algorithm = \"a256kw\"\n\
             [kms.gcp]\ncredentials = \"anonymous\"\n",
        );
        let s = load(&[], Some(&path), &Overrides::default()).expect("file");
        assert_eq!(s.kms.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.kms.azure.credentials, AzureCredentials::ClientSecret);
        assert_eq!(s.kms.azure.wrap_algorithm, AzureKeyWrap::A256Kw);
        assert_eq!(s.kms.gcp.credentials, GcpCredentials::Anonymous);

        let env = [
            ("LLM_ACCOUNTING_KMS_AWS_REGION", "us-east-2"),
            ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "Managed-Identity"),
            ("LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM", "RSA-OAEP-256"),
            // Blank means "not set", as it always did: the default.
            ("LLM_ACCOUNTING_GCP_CREDENTIALS", " "),
        ];
        let s = load(&env, Some(&path), &Overrides::default()).expect("env");
        assert_eq!(s.kms.aws.region.as_deref(), Some("us-east-2"));
        assert_eq!(s.kms.azure.credentials, AzureCredentials::ManagedIdentity);
        assert_eq!(s.kms.azure.wrap_algorithm, AzureKeyWrap::RsaOaep256);
        assert_eq!(s.kms.gcp.credentials, GcpCredentials::Default);

        let s = load(
            &[("LLM_ACCOUNTING_STORE_LAST_USED_INTERVAL_SECS", "7")],
            None,
            &Overrides::default(),
        )
        .expect("new variable");
        assert_eq!(
            s.manager_options().last_used_interval,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn bad_values_name_the_variable_flag_or_file_they_came_from() {
        /// Variables, and what the error must mention.
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                &[("LLM_ACCOUNTING_CACHE_TTL_SECS", "soon")],
                &["cache.ttl_secs", "LLM_ACCOUNTING_CACHE_TTL_SECS", "soon"],
            ),
            (
                &[("LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM", "RSA1_5")],
                &[
                    "kms.azure.wrap_algorithm",
                    "LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM",
                    "unknown Azure wrap algorithm `RSA1_5`",
                ],
            ),
            (
                &[("LLM_ACCOUNTING_GCP_CREDENTIALS", "service-account")],
                &["kms.gcp.credentials", "LLM_ACCOUNTING_GCP_CREDENTIALS"],
            ),
            (
                &[("LLM_ACCOUNTING_AZURE_CREDENTIALS", "certificate")],
                &["kms.azure.credentials", "LLM_ACCOUNTING_AZURE_CREDENTIALS"],
            ),
            (
                &[("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "0")],
                &["kms.max_attempts", "LLM_ACCOUNTING_KMS_MAX_ATTEMPTS"],
            ),
            (
                &[("LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION", "-1")],
                &[
                    "kms.local.min_master_key_version",
                    "LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION",
                ],
            ),
        ];
        for (env, expect) in cases {
            let err = load(env, None, &Overrides::default()).expect_err(expect[0]);
            assert!(matches!(err, Error::Config { .. }), "{err}");
            for e in *expect {
                assert!(err.to_string().contains(e), "{err} should mention {e}");
            }
        }

        let o = Overrides {
            provider: Some("vault".into()),
            ..Overrides::default()
        };
        let msg = load(&[], None, &o).expect_err("flag").to_string();
        assert!(
            msg.contains("kms.provider") && msg.contains("--provider"),
            "{msg}"
        );

        let (_dir, path) = file("[cache]\nttl_secs = \"soon\"\n[store]\nmax_connections = 0\n");
        let msg = load(&[], Some(&path), &Overrides::default())
            .expect_err("file")
            .to_string();
        assert!(
            msg.contains("cache.ttl_secs") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
        let (_dir, path) = file("[store]\nmax_connections = 0\n");
        let msg = load(&[], Some(&path), &Overrides::default())
            .expect_err("file")
            .to_string();
        assert!(
            msg.contains("store.max_connections") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
        // The variable wins over the file, and is the one named.
        let msg = load(
            &[("LLM_ACCOUNTING_DB_MAX_CONNECTIONS", "0")],
            Some(&path),
            &Overrides::default(),
        )
        .expect_err("env")
        .to_string();
        assert!(msg.contains("LLM_ACCOUNTING_DB_MAX_CONNECTIONS"), "{msg}");
    }
}
