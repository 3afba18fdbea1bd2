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
    ("LLM_ACCOUNTING_AUDIT_ANCHOR_FILE", "audit.anchor_file"),
    ("LLM_ACCOUNTING_AUDIT_PRINCIPAL", "audit.principal"),
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
    ("LLM_ACCOUNTING_ACCOUNTING_ENGINE", "accounting.engine"),
    (
        "LLM_ACCOUNTING_ACCOUNTING_REDIS_URL",
        "accounting.redis_url",
    ),
    (
        "LLM_ACCOUNTING_ACCOUNTING_REDIS_FALLBACK",
        "accounting.redis_fallback",
    ),
    ("LLM_ACCOUNTING_GATEWAY_LISTEN", "gateway.listen"),
    (
        "LLM_ACCOUNTING_GATEWAY_DEFAULT_SERVICE",
        "gateway.default_service",
    ),
    ("LLM_ACCOUNTING_GATEWAY_UNPRICED", "gateway.unpriced"),
    ("LLM_ACCOUNTING_GATEWAY_PRICES_FILE", "gateway.prices_file"),
    (
        "LLM_ACCOUNTING_GATEWAY_UPSTREAM_RETRIES",
        "gateway.upstream_retries",
    ),
    (
        "LLM_ACCOUNTING_GATEWAY_UPSTREAM_TIMEOUT_SECS",
        "gateway.upstream_timeout_secs",
    ),
    ("LLM_ACCOUNTING_GATEWAY_DRAIN_SECS", "gateway.drain_secs"),
    (
        "LLM_ACCOUNTING_GATEWAY_MAX_BODY_BYTES",
        "gateway.max_body_bytes",
    ),
    (
        "LLM_ACCOUNTING_GATEWAY_KEY_REFRESH_MS",
        "gateway.key_refresh_ms",
    ),
    (
        "LLM_ACCOUNTING_GATEWAY_ADMIN_TOKEN_FILE",
        "gateway.admin_token_file",
    ),
];

/// The prefix of the variables of the gateway's upstreams, one per service and field:
/// `LLM_ACCOUNTING_GATEWAY_UPSTREAMS_<SERVICE>_BASE_URL` and `..._<SERVICE>_API` set
/// `gateway.upstreams.<service>.base_url` and `.api` (the service in lower case).
pub const UPSTREAM_ENV_PREFIX: &str = "LLM_ACCOUNTING_GATEWAY_UPSTREAMS_";

/// The fields of an upstream, as they end its variables' names (`_BASE_URL`, `_API`).
const UPSTREAM_FIELDS: &[(&str, &str)] = &[("_BASE_URL", "base_url"), ("_API", "api")];

/// The setting a gateway upstream variable sets (`gateway.upstreams.mistral.base_url` for
/// `LLM_ACCOUNTING_GATEWAY_UPSTREAMS_MISTRAL_BASE_URL`); `None` for any other name.
pub(crate) fn upstream_setting_of(var: &str) -> Option<String> {
    let rest = var.strip_prefix(UPSTREAM_ENV_PREFIX)?;
    UPSTREAM_FIELDS.iter().find_map(|(suffix, field)| {
        let service = rest.strip_suffix(suffix)?;
        (!service.is_empty())
            .then(|| format!("gateway.upstreams.{}.{field}", service.to_lowercase()))
    })
}

/// The variables that would set the upstream of `service`, one per field.
pub(crate) fn upstream_vars_of(service: &str) -> impl Iterator<Item = String> + '_ {
    UPSTREAM_FIELDS
        .iter()
        .map(move |(suffix, _)| format!("{UPSTREAM_ENV_PREFIX}{}{suffix}", service.to_uppercase()))
}

/// The variable of `setting` in [`ENV_VARS`] (empty for a setting that has none, which a unit
/// test rules out).
pub(crate) fn env_var_of(setting: &str) -> &'static str {
    ENV_VARS
        .iter()
        .find(|(_, s)| *s == setting)
        .map_or("", |(v, _)| v)
}

/// Variables starting with `LLM_ACCOUNTING_` that are read by this project but set no setting:
/// the configuration file's ([`CONFIG_FILE_ENV`](super::CONFIG_FILE_ENV)) and the test
/// harness's. [`Settings::unknown_env_vars`](super::Settings::unknown_env_vars) does not report
/// them, nor those starting with `LLM_ACCOUNTING_TEST_` or `LLM_ACCOUNTING_BENCH_` (the tests'
/// and benchmarks' own).
pub const OTHER_ENV_VARS: &[&str] = &[super::CONFIG_FILE_ENV, "LLM_ACCOUNTING_REQUIRE_SERVICES"];

/// Prefixes of the tests' and benchmarks' own variables (see [`OTHER_ENV_VARS`]).
const OTHER_ENV_PREFIXES: &[&str] = &["LLM_ACCOUNTING_TEST_", "LLM_ACCOUNTING_BENCH_"];

/// The prefix of every variable of this project.
const PREFIX: &str = "LLM_ACCOUNTING_";

/// A variable that starts with `LLM_ACCOUNTING_` and that nothing reads: most likely a typo,
/// which leaves the setting it meant at its default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownEnvVar {
    /// The variable's name (never its value, which may hold a password).
    pub name: String,
    /// The nearest variable that is read, when one is near enough to be the one meant.
    pub suggestion: Option<&'static str>,
}

impl std::fmt::Display for UnknownEnvVar {
    /// `NAME is set but no setting reads it (did you mean SUGGESTION?)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is set but no setting reads it", self.name)?;
        match self.suggestion {
            Some(s) => write!(f, " (did you mean {s}?)"),
            None => write!(f, " (`llm-accounting --help` lists the variables)"),
        }
    }
}

/// The names among `names` that start with `LLM_ACCOUNTING_` and are neither a setting's
/// ([`ENV_VARS`]) nor one of [`OTHER_ENV_VARS`], sorted, each with the nearest valid name.
pub(super) fn unknown_env_vars_in(names: impl IntoIterator<Item = String>) -> Vec<UnknownEnvVar> {
    let mut unknown: Vec<UnknownEnvVar> = names
        .into_iter()
        .filter(|n| n.starts_with(PREFIX))
        .filter(|n| !ENV_VARS.iter().any(|(v, _)| v == n))
        .filter(|n| upstream_setting_of(n).is_none())
        .filter(|n| !OTHER_ENV_VARS.contains(&n.as_str()))
        .filter(|n| !OTHER_ENV_PREFIXES.iter().any(|p| n.starts_with(p)))
        .map(|name| {
            let suggestion = nearest(&name);
            UnknownEnvVar { name, suggestion }
        })
        .collect();
    unknown.sort_by(|a, b| a.name.cmp(&b.name));
    unknown.dedup();
    unknown
}

/// The valid name nearest to `name` (edit distance of the parts after the prefix), when it is
/// at most a third of the part's length away (at least 2): a typo, not another word.
fn nearest(name: &str) -> Option<&'static str> {
    let part = name.strip_prefix(PREFIX).unwrap_or(name);
    let (best, distance) = ENV_VARS
        .iter()
        .map(|(v, _)| *v)
        .chain(std::iter::once(super::CONFIG_FILE_ENV))
        .map(|v| (v, levenshtein(part, v.strip_prefix(PREFIX).unwrap_or(v))))
        .min_by_key(|(_, d)| *d)?;
    (distance <= (part.chars().count() / 3).max(2)).then_some(best)
}

/// The number of single-character insertions, deletions and substitutions that turn `a` into
/// `b`.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
