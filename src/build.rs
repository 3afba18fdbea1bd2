//! Building providers, repositories and managers from [`Settings`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use llm_accounting_core::branch::{BranchKeyProvider, BranchKeyStore};
use llm_accounting_core::files::{self, PrivatePath};

use crate::layers::{self, KmsMetrics};
use crate::settings::KmsProviderKind;
use crate::{Error, KmsProvider, Result, SeaOrmKeyRepository, SecureKeyManager, Settings};

/// What [`build_manager_with_info`] chose where nothing was configured, so a CLI can tell the
/// user where their data lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultsUsed {
    /// The default SQLite database path, if that default was used.
    pub database: Option<String>,
    /// The default local master key file, if that default was used.
    pub master_key_file: Option<String>,
    /// Whether the default database was created by this call (its first use).
    pub database_created: bool,
    /// Whether the default master key file was created by this call (its first use).
    pub master_key_created: bool,
}

impl DefaultsUsed {
    /// Whether this call created a default file: the first use, when a CLI says where its
    /// data lives (afterwards only when asked to be verbose).
    pub fn created_any(&self) -> bool {
        self.database_created || self.master_key_created
    }
}

fn not_built(kind: KmsProviderKind) -> Error {
    Error::config(format!(
        "KMS provider `{kind}` was selected, but this build of llm-accounting was made \
         without feature {feature}; rebuild with `--features {feature}`",
        feature = kind.feature()
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

/// The provider itself, without layers: the settings mapped onto the provider's builder.
fn build_bare_provider(settings: &Settings) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    settings.validate()?;
    let kind = settings.kms.provider;
    if !kind.is_built() {
        return Err(not_built(kind));
    }
    match kind {
        KmsProviderKind::Local => local_provider(settings),
        KmsProviderKind::Aws => Ok((aws_provider(settings)?, DefaultsUsed::default())),
        KmsProviderKind::Azure => Ok((azure_provider(settings)?, DefaultsUsed::default())),
        KmsProviderKind::Gcp => Ok((gcp_provider(settings)?, DefaultsUsed::default())),
    }
}

/// `kms.key_id`, which every cloud provider needs. Checked here, before the provider's builder,
/// so that the message names the setting and its variable (the provider crates know neither).
#[cfg(any(feature = "kms-aws", feature = "kms-azure", feature = "kms-gcp"))]
fn required_key_id(settings: &Settings) -> Result<&str> {
    let kind = settings.kms.provider;
    let (what, example) = match kind {
        KmsProviderKind::Aws => (
            "the AWS KMS provider",
            "a key id, key ARN or alias such as alias/llm-accounting",
        ),
        KmsProviderKind::Azure => (
            "the Azure Key Vault provider",
            "a key id such as https://NAME.vault.azure.net/keys/KEY",
        ),
        KmsProviderKind::Gcp => (
            "the Google Cloud KMS provider",
            "a CryptoKey name such as projects/P/locations/L/keyRings/R/cryptoKeys/K",
        ),
        KmsProviderKind::Local => ("the local provider", "a key id"),
    };
    settings
        .kms
        .key_id
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::config(format!(
                "{what} needs a master key: set {} (setting kms.key_id) to {example}",
                crate::settings::env_var_of("kms.key_id")
            ))
        })
}

/// Whether something (a file, a directory, a link) is at `path`.
fn exists(path: &Path, what: &'static str) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Io {
            operation: what,
            path: path.display().to_string(),
            source: Arc::new(e),
        }),
    }
}

/// The configured local master key file when it is missing and may not be created: named
/// explicitly, and `create_if_missing` off. Checked before anything is opened or created.
fn refuse_unasked_master_key(settings: &Settings) -> Result<()> {
    if settings.kms.provider != KmsProviderKind::Local {
        return Ok(());
    }
    let (path, default) = settings.master_key_file()?;
    if default || settings.create_if_missing || exists(&path, "inspecting the master key file")? {
        return Ok(());
    }
    Err(Error::config(format!(
        "local master key file {} does not exist, and creating it was not asked for \
         (create_if_missing, {}): check the path, or ask for it to be created",
        path.display(),
        crate::settings::env_var_of("create_if_missing")
    )))
}

/// Refuses to let a missing local master key file be created while `repo` holds versions
/// wrapped by the local provider: a new master key would not open them, and they would look
/// like integrity failures. Nothing is created.
async fn refuse_lost_master_key(settings: &Settings, repo: &SeaOrmKeyRepository) -> Result<()> {
    if settings.kms.provider != KmsProviderKind::Local {
        return Ok(());
    }
    let (path, _) = settings.master_key_file()?;
    if exists(&path, "inspecting the master key file")? {
        return Ok(());
    }
    if !repo
        .has_versions_wrapped_by(KmsProviderKind::Local.as_str())
        .await?
    {
        return Ok(());
    }
    Err(Error::config(format!(
        "local master key file {} does not exist, but the database holds keys wrapped under \
         it: a new master key would not open them, so none was made. Restore the file (from a \
         backup) at that path, or point {} at it",
        path.display(),
        crate::settings::env_var_of("kms.local.master_key_file")
    )))
}

#[cfg(feature = "kms-local")]
fn local_provider(settings: &Settings) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    use llm_accounting_kms_local::LocalKmsProvider;
    let mut used = DefaultsUsed::default();
    let (path, default) = settings.master_key_file()?;
    if default {
        used.master_key_file = Some(path.display().to_string());
        private_data_dir(&settings.data_dir()?)?;
    }
    refuse_unasked_master_key(settings)?;
    let mut p = if exists(&path, "inspecting the master key file")? {
        LocalKmsProvider::open(&path)?
    } else {
        used.master_key_created = default;
        LocalKmsProvider::open_or_create(&path)?
    };
    let min_version = settings.kms.local.min_master_key_version;
    if min_version > 0 {
        p = p.with_min_version(min_version)?;
    }
    Ok((Arc::new(p), used))
}

#[cfg(not(feature = "kms-local"))]
fn local_provider(_: &Settings) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    Err(not_built(KmsProviderKind::Local))
}

/// Region from `kms.aws.region`, else (like credentials and `AWS_ENDPOINT_URL`) from the
/// aws-config chain; `kms.endpoint` wins over `AWS_ENDPOINT_URL`.
#[cfg(feature = "kms-aws")]
fn aws_provider(settings: &Settings) -> Result<Arc<dyn KmsProvider>> {
    let mut b =
        llm_accounting_kms_aws::AwsKmsProvider::builder().with_key_id(required_key_id(settings)?);
    if let Some(region) = &settings.kms.aws.region {
        b = b.with_region(region);
    }
    if let Some(endpoint) = &settings.kms.endpoint {
        b = b.with_endpoint_url(endpoint);
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(not(feature = "kms-aws"))]
fn aws_provider(_: &Settings) -> Result<Arc<dyn KmsProvider>> {
    Err(not_built(KmsProviderKind::Aws))
}

/// Credentials and wrap algorithm from `[kms.azure]`; the client-secret and managed-identity
/// credentials read the standard `AZURE_*` variables.
#[cfg(feature = "kms-azure")]
fn azure_provider(settings: &Settings) -> Result<Arc<dyn KmsProvider>> {
    use crate::settings::{AzureCredentials, AzureKeyWrap};
    use llm_accounting_kms_azure::{AzureCredentialKind, AzureKeyVaultProvider, WrapAlgorithm};
    let azure = &settings.kms.azure;
    let credential = match azure.credentials {
        AzureCredentials::Default => AzureCredentialKind::Default,
        AzureCredentials::ClientSecret => AzureCredentialKind::client_secret_from_env(),
        AzureCredentials::ManagedIdentity => AzureCredentialKind::managed_identity_from_env(),
        AzureCredentials::DeveloperTools => AzureCredentialKind::DeveloperTools,
    };
    let algorithm = match azure.wrap_algorithm {
        AzureKeyWrap::RsaOaep256 => WrapAlgorithm::RsaOaep256,
        AzureKeyWrap::A256Kw => WrapAlgorithm::A256Kw,
    };
    let mut b = AzureKeyVaultProvider::builder()
        .with_key_id(required_key_id(settings)?)
        .with_credential(credential)
        .with_algorithm(algorithm);
    if let Some(endpoint) = &settings.kms.endpoint {
        b = b.with_endpoint(endpoint);
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(not(feature = "kms-azure"))]
fn azure_provider(_: &Settings) -> Result<Arc<dyn KmsProvider>> {
    Err(not_built(KmsProviderKind::Azure))
}

/// Credentials from `kms.gcp.credentials`: Application Default Credentials, or none
/// (emulators).
#[cfg(feature = "kms-gcp")]
fn gcp_provider(settings: &Settings) -> Result<Arc<dyn KmsProvider>> {
    use crate::settings::GcpCredentials;
    let mut b =
        llm_accounting_kms_gcp::GcpKmsProvider::builder().with_key_name(required_key_id(settings)?);
    match settings.kms.gcp.credentials {
        GcpCredentials::Default => {}
        GcpCredentials::Anonymous => b = b.with_anonymous_credentials(),
    }
    if let Some(endpoint) = &settings.kms.endpoint {
        b = b.with_endpoint(endpoint);
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(not(feature = "kms-gcp"))]
fn gcp_provider(_: &Settings) -> Result<Arc<dyn KmsProvider>> {
    Err(not_built(KmsProviderKind::Gcp))
}

/// The repository named by the settings, with migrations applied.
///
/// The default SQLite file (in the data directory) is created on first use; a file named by
/// `database_url` only with `create_if_missing` (else a missing one is [`Error::Config`]).
/// An existing data directory or database file is refused if group or others can write it or
/// another user owns it.
pub async fn build_repository(
    settings: &Settings,
) -> Result<(Arc<SeaOrmKeyRepository>, DefaultsUsed)> {
    settings.validate()?;
    let mut used = DefaultsUsed::default();
    let (url, default) = settings.database_url()?;
    let mut options = settings.store_options();
    if default {
        let dir = settings.data_dir()?;
        private_data_dir(&dir)?;
        let file = dir.join("keys.db");
        used.database_created = !exists(&file, "inspecting the database file")?;
        used.database = Some(file.display().to_string());
        options.create_if_missing = true;
    }
    let repo = SeaOrmKeyRepository::connect(&url, &options).await?;
    Ok((Arc::new(repo), used))
}

/// Like [`build_provider`], for use with `repo`: a local master key file that is missing is
/// not created while `repo` holds keys wrapped by the local provider (a new master key would
/// not open them): that is [`Error::Config`] naming the file, and nothing is created.
pub async fn build_provider_for(
    settings: &Settings,
    repo: &SeaOrmKeyRepository,
) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    settings.validate()?;
    refuse_lost_master_key(settings, repo).await?;
    build_provider(settings)
}

/// The provider and the repository the settings name, checked against each other (see
/// [`build_provider_for`]). A configuration error that can be found without opening anything
/// (a provider that is not built, a missing master key file that may not be created) is
/// reported before the database is opened or created.
pub async fn build_provider_and_repository(
    settings: &Settings,
) -> Result<(Arc<dyn KmsProvider>, Arc<SeaOrmKeyRepository>, DefaultsUsed)> {
    settings.validate()?;
    if settings.kms.provider != KmsProviderKind::Local {
        let (provider, p_used) = build_provider(settings)?;
        let (repo, r_used) = build_repository(settings).await?;
        return Ok((provider, repo, merge(r_used, p_used)));
    }
    if !settings.kms.provider.is_built() {
        return Err(not_built(settings.kms.provider));
    }
    refuse_unasked_master_key(settings)?;
    let (repo, r_used) = build_repository(settings).await?;
    let (provider, p_used) = build_provider_for(settings, &repo).await?;
    Ok((provider, repo, merge(r_used, p_used)))
}

fn merge(repository: DefaultsUsed, provider: DefaultsUsed) -> DefaultsUsed {
    DefaultsUsed {
        database: repository.database,
        master_key_file: provider.master_key_file,
        database_created: repository.database_created,
        master_key_created: provider.master_key_created,
    }
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

/// The branch-key layer (`kms.hierarchy`, `kms.branch_key_ttl_secs`; see
/// [`llm_accounting_core::branch`]) over `provider` (the layered provider, so that its metrics
/// count the KMS calls made for branch keys), keeping branch keys in `repo`.
///
/// [`build_manager`] installs it whatever the hierarchy: with `off` it wraps every data key
/// with `provider` as before, and only reads the keys wrapped under branch keys while the
/// hierarchy was on, until `keys rewrap` moves them back.
pub fn branch_layer(
    settings: &Settings,
    provider: Arc<dyn KmsProvider>,
    repo: &Arc<SeaOrmKeyRepository>,
) -> BranchKeyProvider {
    BranchKeyProvider::new(
        provider,
        Arc::clone(repo) as Arc<dyn BranchKeyStore>,
        settings.kms.hierarchy.to_core(),
        Duration::from_secs(settings.kms.branch_key_ttl_secs),
    )
}

/// A manager built from the settings.
pub async fn build_manager(settings: &Settings) -> Result<SecureKeyManager> {
    Ok(build_manager_with_info(settings).await?.0)
}

/// Like [`build_manager`], also saying which defaults were used.
pub async fn build_manager_with_info(
    settings: &Settings,
) -> Result<(SecureKeyManager, DefaultsUsed)> {
    let (manager, _, used) = build_manager_and_repository(settings).await?;
    Ok((manager, used))
}

/// Like [`build_manager_with_info`], with the accounting of the same settings (see
/// [`build_accounting`]).
#[cfg(feature = "accounting")]
pub async fn build_manager_and_accounting(
    settings: &Settings,
) -> Result<(SecureKeyManager, crate::usage::Accounting, DefaultsUsed)> {
    let (manager, repo, used) = build_manager_and_repository(settings).await?;
    let accounting = build_accounting(settings, &repo).await?;
    Ok((manager, accounting, used))
}

async fn build_manager_and_repository(
    settings: &Settings,
) -> Result<(SecureKeyManager, Arc<SeaOrmKeyRepository>, DefaultsUsed)> {
    let (provider, repo, used) = build_provider_and_repository(settings).await?;
    let branches = Arc::new(branch_layer(settings, provider, &repo));
    let audit = build_audit_log(settings, &repo).await?;
    let mut builder = SecureKeyManager::builder(Arc::clone(&branches) as _, Arc::clone(&repo) as _)
        .branch_keys(Arc::clone(&branches))
        .options(settings.manager_options());
    if let Some(log) = audit {
        builder = builder.audit_with(log, settings.audit_options());
    }
    // PostgreSQL: changes made by any process drop cached keys here at once.
    #[cfg(feature = "postgres")]
    if let Some(feed) = llm_accounting_store::PgChangeFeed::of(&repo) {
        builder = builder.change_feed(Arc::new(feed));
    }
    let manager = builder.build();
    // A branch changed by any process drops its cached key here (with a change feed).
    manager.subscribe_changes(branches);
    Ok((manager, repo, used))
}

/// The data directory, checked if it exists (see [`llm_accounting_core::files`]), else
/// created with mode 0700.
fn private_data_dir(dir: &Path) -> Result<()> {
    if exists(dir, "inspecting the data directory")? {
        return files::check_existing(dir, PrivatePath::DataDirectory);
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

/// The accounting the settings ask for: the usage store in the key database (`repo`'s pool)
/// or in `accounting.database_url`, with the enforcement, interval, queue bound and
/// reservation lifetime of `[accounting]`.
///
/// # Errors
///
/// Opening `accounting.database_url` (as [`build_repository`]); local enforcement: the first
/// synchronisation.
#[cfg(feature = "accounting")]
pub async fn build_accounting(
    settings: &Settings,
    repo: &SeaOrmKeyRepository,
) -> Result<crate::usage::Accounting> {
    use crate::usage::{Accounting, AccountingOptions, RecorderOptions};
    settings.validate()?;
    let store: Arc<dyn crate::usage::UsageStore> = match &settings.accounting.database_url {
        Some(url) => Arc::new(
            llm_accounting_store::SeaOrmUsageStore::connect(url, &settings.store_options()).await?,
        ),
        None => Arc::new(repo.usage_store().await?),
    };
    let a = &settings.accounting;
    let options = AccountingOptions {
        enforcement: a.enforcement,
        sync_interval: std::time::Duration::from_millis(a.sync_ms),
        reservation_ttl: std::time::Duration::from_secs(a.reservation_ttl_secs),
        recorder: RecorderOptions {
            max_pending: a.max_pending,
            ..RecorderOptions::default()
        },
    };
    Accounting::start(store, options).await
}
