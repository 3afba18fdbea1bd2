//! One environment variable per setting.

/// Environment variables read by [`Settings::load`](super::Settings::load), and the setting each one sets: one
/// variable per setting, each setting has one.
///
/// Variables added after the first release are named `LLM_ACCOUNTING_` + the setting's path in
/// capitals with `.` turned into `_` (`store.last_used_interval_secs` →
/// `LLM_ACCOUNTING_STORE_LAST_USED_INTERVAL_SECS`); older ones keep the names they had.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("LLM_ACCOUNTING_DATABASE_URL", "database_url"),
    ("LLM_ACCOUNTING_DATA_DIR", "data_dir"),
    ("LLM_ACCOUNTING_CREATE_IF_MISSING", "create_if_missing"),
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
    ("LLM_ACCOUNTING_KMS_HIERARCHY", "kms.hierarchy"),
    (
        "LLM_ACCOUNTING_KMS_BRANCH_KEY_TTL_SECS",
        "kms.branch_key_ttl_secs",
    ),
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
    ("LLM_ACCOUNTING_KEYS_REQUIRE_SEALED", "keys.require_sealed"),
    ("LLM_ACCOUNTING_AUDIT_ENABLED", "audit.enabled"),
    ("LLM_ACCOUNTING_AUDIT_FAIL_CLOSED", "audit.fail_closed"),
    ("LLM_ACCOUNTING_AUDIT_DATABASE_URL", "audit.database_url"),
    ("LLM_ACCOUNTING_AUDIT_MAX_PENDING", "audit.max_pending"),
    (
        "LLM_ACCOUNTING_AUDIT_AGGREGATE_INTERVAL_MS",
        "audit.aggregate_interval_ms",
    ),
    ("LLM_ACCOUNTING_AUDIT_EVERY_HIT", "audit.every_hit"),
    (
        "LLM_ACCOUNTING_ACCOUNTING_DATABASE_URL",
        "accounting.database_url",
    ),
    (
        "LLM_ACCOUNTING_ACCOUNTING_ENFORCEMENT",
        "accounting.enforcement",
    ),
    ("LLM_ACCOUNTING_ACCOUNTING_SYNC_MS", "accounting.sync_ms"),
    (
        "LLM_ACCOUNTING_ACCOUNTING_MAX_PENDING",
        "accounting.max_pending",
    ),
    (
        "LLM_ACCOUNTING_ACCOUNTING_RESERVATION_TTL_SECS",
        "accounting.reservation_ttl_secs",
    ),
];

/// The variable of `setting` in [`ENV_VARS`] (empty for a setting that has none, which a unit
/// test rules out).
pub(crate) fn env_var_of(setting: &str) -> &'static str {
    ENV_VARS
        .iter()
        .find(|(_, s)| *s == setting)
        .map_or("", |(v, _)| v)
}
