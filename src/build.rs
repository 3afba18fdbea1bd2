//! Building providers, repositories and managers from [`Settings`].

use std::sync::Arc;

use crate::layers::{self, KmsMetrics};
use crate::{Error, KmsProvider, Result, SeaOrmKeyRepository, SecureKeyManager, Settings};

/// What [`build_manager_with_info`] chose where nothing was configured, so a CLI can tell the
/// user where their data lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultsUsed {
    /// The default SQLite database path, if that default was used.
    pub database: Option<String>,
    /// The default local master key file, if that default was used.
    pub master_key_file: Option<String>,
}

fn not_built(provider: &str) -> Error {
    Error::config(format!(
        "KMS provider `{provider}` was selected, but this build of llm-accounting was made \
         without feature kms-{provider}; rebuild with `--features kms-{provider}`"
    ))
}

/// The KMS provider named by the settings, wrapped in the retry, metrics and timeout layers
/// configured by `kms.max_attempts`, `kms.max_retry_time_ms`, `kms.timeout_ms`, ... A provider
/// whose feature is not compiled in is a clear [`Error::Config`].
pub fn build_provider(settings: &Settings) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    let (provider, _metrics, used) = build_provider_with_metrics(settings)?;
    Ok((provider, used))
}

/// Like [`build_provider`], also returning the layers' counters (KMS calls, failures, retries).
///
/// The returned provider keeps the inner provider's name (records store it).
pub fn build_provider_with_metrics(
    settings: &Settings,
) -> Result<(Arc<dyn KmsProvider>, Arc<KmsMetrics>, DefaultsUsed)> {
    let (provider, used) = build_bare_provider(settings)?;
    let metrics = Arc::new(KmsMetrics::new());
    let layered = layers::stack(provider, &settings.layer_options(), Arc::clone(&metrics));
    Ok((layered, metrics, used))
}

/// The provider itself, without layers.
fn build_bare_provider(settings: &Settings) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    let mut used = DefaultsUsed::default();
    match settings.kms.provider.as_str() {
        "local" => {
            #[cfg(feature = "kms-local")]
            {
                let (path, default) = settings.master_key_file()?;
                if default {
                    used.master_key_file = Some(path.display().to_string());
                }
                let mut p = llm_accounting_kms_local::LocalKmsProvider::open_or_create(&path)?;
                if settings.local.min_master_key_version > 0 {
                    p = p.with_min_version(settings.local.min_master_key_version)?;
                }
                Ok((Arc::new(p), used))
            }
            #[cfg(not(feature = "kms-local"))]
            {
                Err(not_built("local"))
            }
        }
        "aws" => {
            #[cfg(feature = "kms-aws")]
            {
                // Region, credentials and AWS_ENDPOINT_URL come from the aws-config chain; an
                // explicit kms.endpoint (LLM_ACCOUNTING_KMS_ENDPOINT) wins over AWS_ENDPOINT_URL.
                let mut b = llm_accounting_kms_aws::AwsKmsProvider::builder();
                if let Some(key_id) = &settings.kms.key_id {
                    b = b.with_key_id(key_id);
                }
                if let Some(endpoint) = &settings.kms.endpoint {
                    b = b.with_endpoint_url(endpoint);
                }
                Ok((Arc::new(b.build()?), used))
            }
            #[cfg(not(feature = "kms-aws"))]
            {
                Err(not_built("aws"))
            }
        }
        "azure" => {
            #[cfg(feature = "kms-azure")]
            {
                // Wrap algorithm and credential choice from LLM_ACCOUNTING_AZURE_*; the key id
                // and the endpoint override from the settings.
                let mut b =
                    llm_accounting_kms_azure::AzureKeyVaultProvider::builder().settings_from_env();
                if let Some(key_id) = &settings.kms.key_id {
                    b = b.with_key_id(key_id);
                }
                if let Some(endpoint) = &settings.kms.endpoint {
                    b = b.with_endpoint(endpoint);
                }
                Ok((Arc::new(b.build()?), used))
            }
            #[cfg(not(feature = "kms-azure"))]
            {
                Err(not_built("azure"))
            }
        }
        "gcp" => {
            #[cfg(feature = "kms-gcp")]
            {
                // Credentials: Application Default Credentials, or none with
                // LLM_ACCOUNTING_GCP_CREDENTIALS=anonymous (emulators).
                let mut b =
                    llm_accounting_kms_gcp::GcpKmsProvider::builder().credentials_from_env();
                if let Some(key_id) = &settings.kms.key_id {
                    b = b.with_key_name(key_id);
                }
                if let Some(endpoint) = &settings.kms.endpoint {
                    b = b.with_endpoint(endpoint);
                }
                Ok((Arc::new(b.build()?), used))
            }
            #[cfg(not(feature = "kms-gcp"))]
            {
                Err(not_built("gcp"))
            }
        }
        other if crate::settings::PROVIDER_NAMES.contains(&other) => Err(not_built(other)),
        other => Err(Error::invalid(
            "KMS provider",
            format!(
                "unknown provider `{other}`; expected one of: {}",
                crate::settings::PROVIDER_NAMES.join(", ")
            ),
        )),
    }
}

/// The repository named by the settings, with migrations applied.
pub async fn build_repository(
    settings: &Settings,
) -> Result<(Arc<SeaOrmKeyRepository>, DefaultsUsed)> {
    let mut used = DefaultsUsed::default();
    let (url, default) = settings.database_url()?;
    if default {
        let dir = settings.data_dir()?;
        create_private_dir(&dir)?;
        used.database = Some(dir.join("keys.db").display().to_string());
    }
    let repo = SeaOrmKeyRepository::connect(&url, &settings.store_options()).await?;
    Ok((Arc::new(repo), used))
}

/// The audit log the settings ask for: none (`audit.enabled = false`), the key database, or
/// the database of `audit.database_url`.
pub async fn build_audit_log(
    settings: &Settings,
    repo: &Arc<SeaOrmKeyRepository>,
) -> Result<Option<Arc<dyn llm_accounting_core::AuditLog>>> {
    if !settings.audit.enabled {
        return Ok(None);
    }
    Ok(Some(match &settings.audit.database_url {
        Some(url) => Arc::new(SeaOrmKeyRepository::connect(url, &settings.store_options()).await?),
        None => Arc::clone(repo) as Arc<dyn llm_accounting_core::AuditLog>,
    }))
}

/// A manager built from the settings.
pub async fn build_manager(settings: &Settings) -> Result<SecureKeyManager> {
    Ok(build_manager_with_info(settings).await?.0)
}

/// Like [`build_manager`], also saying which defaults were used.
pub async fn build_manager_with_info(
    settings: &Settings,
) -> Result<(SecureKeyManager, DefaultsUsed)> {
    let (provider, p_used) = build_provider(settings)?;
    let (repo, r_used) = build_repository(settings).await?;
    let audit = build_audit_log(settings, &repo).await?;
    let mut builder = SecureKeyManager::builder(provider, repo).options(settings.manager_options());
    if let Some(log) = audit {
        builder = builder.audit(log, settings.audit.fail_closed);
    }
    let manager = builder.build();
    Ok((
        manager,
        DefaultsUsed {
            database: r_used.database,
            master_key_file: p_used.master_key_file,
        },
    ))
}

fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| Error::Io {
        operation: "creating the data directory",
        path: dir.display().to_string(),
        source: Arc::new(e),
    })
}
