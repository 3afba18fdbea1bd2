//! The sections of [`Settings`](super::Settings): one struct per `[section]`.

use std::fmt;

use llm_accounting_core::settings::{empty_is_none, empty_is_none_path};
use llm_accounting_usage::Enforcement;
use serde::Deserialize;

use super::choices::*;

/// Audit trail settings (`[audit]`). `Debug` shows the URL with its password redacted.
#[derive(Clone, Deserialize, PartialEq, Eq)]
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
    /// Fail-open: most rows waiting to be written (and most cache-hit aggregates open); an
    /// event beyond is dropped and counted in a `dropped` row.
    pub max_pending: usize,
    /// Fail-open: milliseconds over which the cache hits of one identity by one principal
    /// become one row with a count.
    pub aggregate_interval_ms: u64,
    /// Fail-open: one row per cache hit instead of aggregates.
    pub every_hit: bool,
    /// A file outside the database where the audit trail's head is written after every key
    /// change and checked when a process first looks at the store: a database put back from
    /// an older copy is then refused.
    #[serde(deserialize_with = "empty_is_none_path")]
    pub anchor_file: Option<std::path::PathBuf>,
    /// Who the rows of this process name as the principal (when no principal is bound);
    /// `None`: the operating-system user (`$USER`, else `$LOGNAME`), else `-`.
    #[serde(deserialize_with = "empty_is_none")]
    pub principal: Option<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            fail_closed: false,
            database_url: None,
            max_pending: 10_000,
            aggregate_interval_ms: 10_000,
            every_hit: false,
            anchor_file: None,
            principal: None,
        }
    }
}

impl fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSettings")
            .field("enabled", &self.enabled)
            .field("fail_closed", &self.fail_closed)
            .field("anchor_file", &self.anchor_file)
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::redact_url),
            )
            .finish()
    }
}

/// Key lifecycle settings (`[keys]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeysSettings {
    /// Seconds a rotated-out value stays readable with `get --previous`.
    pub previous_grace_secs: u64,
    /// Refuse a store that is not sealed (see `keys seal`); set it once the store is sealed.
    pub require_sealed: bool,
}

impl Default for KeysSettings {
    fn default() -> Self {
        KeysSettings {
            previous_grace_secs: 86_400,
            require_sealed: false,
        }
    }
}

/// Which KMS, which master key in it, how calls to it are retried, and each provider's own
/// settings (`[kms]`, `[kms.local]`, `[kms.aws]`, `[kms.azure]`, `[kms.gcp]`).
///
/// Each provider's section is its crate's settings type, read whatever features are compiled
/// in (the provider crates without their `provider` feature are only these types): a file
/// naming a provider's settings loads, and a bad value in it is reported, by any build.
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
    /// Branch keys: `off` (every data key wrapped by the KMS), `store`, `service`, `project`
    /// or `user` (one KMS-wrapped branch key per such scope, data keys wrapped locally).
    pub hierarchy: KmsHierarchy,
    /// How long an unwrapped branch key is kept in memory, in seconds.
    pub branch_key_ttl_secs: u64,
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
            hierarchy: KmsHierarchy::Off,
            branch_key_ttl_secs: 600,
            local: LocalSettings::default(),
            aws: AwsSettings::default(),
            azure: AzureSettings::default(),
            gcp: GcpSettings::default(),
        }
    }
}

/// Local provider settings (`[kms.local]`, or `[local]` in older files): the local provider
/// crate's own.
pub type LocalSettings = llm_accounting_kms_local::LocalKmsConfig;

/// AWS KMS provider settings (`[kms.aws]`): the AWS provider crate's own.
pub type AwsSettings = llm_accounting_kms_aws::AwsKmsConfig;

/// Azure Key Vault provider settings (`[kms.azure]`): the Azure provider crate's own.
pub type AzureSettings = llm_accounting_kms_azure::AzureKeyVaultConfig;

/// Google Cloud KMS provider settings (`[kms.gcp]`): the Google Cloud provider crate's own.
pub type GcpSettings = llm_accounting_kms_gcp::GcpKmsConfig;

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

/// Usage accounting and quotas (`[accounting]`). `Debug` shows the URL with its password
/// redacted.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AccountingSettings {
    /// The accounting database; `None`: the key database.
    #[serde(deserialize_with = "empty_is_none")]
    pub database_url: Option<String>,
    /// `strict` (atomic reservations in the database) or `local` (per-process counters).
    pub enforcement: Enforcement,
    /// Local enforcement: milliseconds between synchronisations of the counters.
    pub sync_ms: u64,
    /// Most usage events waiting to be written; recording waits beyond (nothing is dropped).
    pub max_pending: usize,
    /// Seconds a reservation holds its budget if neither committed nor released.
    pub reservation_ttl_secs: u64,
    /// Where reservations and counters live: `database` (default) or `redis`.
    pub engine: super::AccountingEngine,
    /// The Redis of the `redis` engine (`redis://[user:password@]host[:port][/db]`); it may
    /// hold a password: it is only ever shown redacted.
    #[serde(deserialize_with = "empty_is_none")]
    pub redis_url: Option<String>,
    /// `database`: when Redis cannot be reached, the database engine answers (with a
    /// warning) instead of calls failing as unavailable.
    pub redis_fallback: super::RedisFallback,
}

impl Default for AccountingSettings {
    fn default() -> Self {
        AccountingSettings {
            database_url: None,
            enforcement: Enforcement::Strict,
            sync_ms: 1_000,
            max_pending: 100_000,
            reservation_ttl_secs: 600,
            engine: super::AccountingEngine::Database,
            redis_url: None,
            redis_fallback: super::RedisFallback::None,
        }
    }
}

impl fmt::Debug for AccountingSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountingSettings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::redact_url),
            )
            .field("enforcement", &self.enforcement)
            .field("sync_ms", &self.sync_ms)
            .field("max_pending", &self.max_pending)
            .field("reservation_ttl_secs", &self.reservation_ttl_secs)
            .field("engine", &self.engine)
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(crate::redact_url),
            )
            .field("redis_fallback", &self.redis_fallback)
            .finish()
    }
}

/// The gateway (`[gateway]`): where it listens, the upstreams it forwards to, and how it
/// treats calls.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewaySettings {
    /// Address to listen on (`127.0.0.1:4000`).
    pub listen: String,
    /// Service of the OpenAI-style routes when the model names none (`openai`).
    pub default_service: String,
    /// A call to a model without a price under a cost limit: `deny` (default) or `allow`.
    pub unpriced: super::UnpricedModels,
    /// A TOML file of prices that extends and overrides the shipped table; `None`: the
    /// shipped table only.
    #[serde(deserialize_with = "llm_accounting_core::settings::empty_is_none_path")]
    pub prices_file: Option<std::path::PathBuf>,
    /// Retries of an upstream call that failed to connect (0: none).
    pub upstream_retries: u32,
    /// Seconds an upstream call may take in all (streams included).
    pub upstream_timeout_secs: u64,
    /// Seconds in-flight calls get to finish after SIGTERM or Ctrl-C.
    pub drain_secs: u64,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Milliseconds between reloads of the virtual keys (revocations made elsewhere are seen
    /// within this; at once on PostgreSQL).
    pub key_refresh_ms: u64,
    /// One upstream per service name.
    pub upstreams: std::collections::BTreeMap<String, UpstreamSettings>,
    /// A file holding the admin token of the usage dashboard (`/dashboard`; mode 0600 or
    /// stricter); `None`: no dashboard. A file, so that the token is in no configuration
    /// file, environment or command line.
    #[serde(deserialize_with = "llm_accounting_core::settings::empty_is_none_path")]
    pub admin_token_file: Option<std::path::PathBuf>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        let upstream = |base_url: &str, api| UpstreamSettings {
            base_url: base_url.to_owned(),
            api,
        };
        GatewaySettings {
            listen: "127.0.0.1:4000".to_owned(),
            default_service: "openai".to_owned(),
            unpriced: super::UnpricedModels::Deny,
            prices_file: None,
            upstream_retries: 0,
            upstream_timeout_secs: 600,
            drain_secs: 30,
            max_body_bytes: 16 * 1024 * 1024,
            key_refresh_ms: 2_000,
            admin_token_file: None,
            upstreams: [
                (
                    "openai".to_owned(),
                    upstream("https://api.openai.com/v1", super::UpstreamApi::OpenAi),
                ),
                (
                    "anthropic".to_owned(),
                    upstream("https://api.anthropic.com", super::UpstreamApi::Anthropic),
                ),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// One upstream of the gateway (`[gateway.upstreams.<service>]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UpstreamSettings {
    /// The base URL as the provider's own SDK takes it (`https://api.openai.com/v1`,
    /// `https://api.anthropic.com`).
    pub base_url: String,
    /// The wire format it speaks: `openai` (the default) or `anthropic`.
    #[serde(default)]
    pub api: super::UpstreamApi,
}
