//! Building the KMS provider from [`Settings`]: each provider crate's settings
//! (`[kms.<provider>]`) and the shared `kms.key_id` / `kms.endpoint` handed to its builder.

use std::sync::Arc;

use crate::build::{DefaultsUsed, build_repository};
use crate::layers::{self, KmsMetrics};
use crate::settings::KmsProviderKind;
use crate::{Error, KmsProvider, Result, SeaOrmKeyRepository, Settings};

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
    let metrics = Arc::new(KmsMetrics::new());
    let (provider, used) = layered(settings, false, Arc::clone(&metrics))?;
    Ok((provider, metrics, used))
}

/// The provider in its layers, counting into `metrics`, told whether the key store holds keys
/// wrapped by the local provider (which forbids making a new local master key file).
fn layered(
    settings: &Settings,
    holds_local_keys: bool,
    metrics: Arc<KmsMetrics>,
) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    settings.validate()?;
    let kind = settings.kms.provider;
    if !kind.is_built() {
        return Err(not_built(kind));
    }
    let (provider, used) = match kind {
        KmsProviderKind::Local => local_provider(settings, holds_local_keys)?,
        KmsProviderKind::Aws => (aws_provider(settings)?, DefaultsUsed::default()),
        KmsProviderKind::Azure => (azure_provider(settings)?, DefaultsUsed::default()),
        KmsProviderKind::Gcp => (gcp_provider(settings)?, DefaultsUsed::default()),
    };
    Ok((
        layers::stack(provider, &settings.layer_options(), metrics),
        used,
    ))
}

/// Like [`build_provider`], for use with `repo`: a local master key file that is missing is
/// not created while `repo` holds keys wrapped by the local provider (a new master key would
/// not open them): that is [`Error::Config`] naming the file, and nothing is created.
pub async fn build_provider_for(
    settings: &Settings,
    repo: &SeaOrmKeyRepository,
) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    settings.validate()?;
    provider_for(settings, repo, Arc::new(KmsMetrics::new())).await
}

/// [`build_provider_for`], counting into `metrics` (a stack's second provider: a rewrap's
/// target).
pub(crate) async fn provider_for(
    settings: &Settings,
    repo: &SeaOrmKeyRepository,
    metrics: Arc<KmsMetrics>,
) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    // Only asked when it matters: the file is missing.
    let holds_local_keys = missing_master_key_file(settings)?
        && repo
            .has_versions_wrapped_by(KmsProviderKind::Local.as_str())
            .await?;
    layered(settings, holds_local_keys, metrics)
}

/// The provider and the repository the settings name, checked against each other (see
/// [`build_provider_for`]). A configuration error that can be found without opening anything
/// (a provider that is not built, a missing master key file that may not be created) is
/// reported before the database is opened or created.
pub async fn build_provider_and_repository(
    settings: &Settings,
) -> Result<(Arc<dyn KmsProvider>, Arc<SeaOrmKeyRepository>, DefaultsUsed)> {
    settings.validate()?;
    provider_and_repository(settings, Arc::new(KmsMetrics::new())).await
}

/// [`build_provider_and_repository`], counting the provider's calls into `metrics`.
pub(crate) async fn provider_and_repository(
    settings: &Settings,
    metrics: Arc<KmsMetrics>,
) -> Result<(Arc<dyn KmsProvider>, Arc<SeaOrmKeyRepository>, DefaultsUsed)> {
    if settings.kms.provider != KmsProviderKind::Local {
        let (provider, p_used) = layered(settings, false, metrics)?;
        let (repo, r_used) = build_repository(settings).await?;
        return Ok((provider, repo, merge(r_used, p_used)));
    }
    if !settings.kms.provider.is_built() {
        return Err(not_built(settings.kms.provider));
    }
    refuse_unasked_master_key(settings)?;
    let (repo, r_used) = build_repository(settings).await?;
    let (provider, p_used) = provider_for(settings, &repo, metrics).await?;
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

/// Whether the local provider is selected and its master key file is missing.
#[cfg(feature = "kms-local")]
fn missing_master_key_file(settings: &Settings) -> Result<bool> {
    if settings.kms.provider != KmsProviderKind::Local {
        return Ok(false);
    }
    let (path, _) = settings.master_key_file()?;
    Ok(!llm_accounting_kms_local::MasterKeyFile::exists(&path)?)
}

#[cfg(not(feature = "kms-local"))]
fn missing_master_key_file(_: &Settings) -> Result<bool> {
    Ok(false)
}

/// The rules of a missing local master key file (see
/// [`MasterKeyFile::open_with`](llm_accounting_kms_local::MasterKeyFile::open_with)): created
/// only at the default location or with `create_if_missing`, in these settings' words.
#[cfg(feature = "kms-local")]
fn create_rules(settings: &Settings, default: bool) -> llm_accounting_kms_local::CreateRules {
    llm_accounting_kms_local::CreateRules {
        allowed: default || settings.create_if_missing,
        how_to_ask: format!(
            "create_if_missing, {}",
            crate::settings::env_var_of("create_if_missing")
        ),
        path_setting: crate::settings::env_var_of("kms.local.master_key_file").to_owned(),
    }
}

/// The configured local master key file when it is missing and may not be created: named
/// explicitly, and `create_if_missing` off. Checked before anything is opened or created.
#[cfg(feature = "kms-local")]
fn refuse_unasked_master_key(settings: &Settings) -> Result<()> {
    let (path, default) = settings.master_key_file()?;
    llm_accounting_kms_local::MasterKeyFile::check_missing(&path, &create_rules(settings, default))
}

#[cfg(not(feature = "kms-local"))]
fn refuse_unasked_master_key(_: &Settings) -> Result<()> {
    Ok(())
}

/// The local provider over `kms.local.master_key_file` (the data directory's `master.key` by
/// default, made private first), opened or created by the rules of
/// [`MasterKeyFile::open_with`](llm_accounting_kms_local::MasterKeyFile::open_with).
#[cfg(feature = "kms-local")]
fn local_provider(
    settings: &Settings,
    holds_local_keys: bool,
) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    use llm_accounting_kms_local::{LocalKmsProvider, MasterKeyFile};
    let mut used = DefaultsUsed::default();
    let (path, default) = settings.master_key_file()?;
    if default {
        used.master_key_file = Some(path.display().to_string());
        crate::build::private_data_dir(&settings.data_dir()?)?;
    }
    let rules = create_rules(settings, default);
    let (file, created) = MasterKeyFile::open_with(&path, &rules, holds_local_keys)?;
    used.master_key_created = default && created;
    let provider = LocalKmsProvider::from_file(file).with_config(&settings.kms.local)?;
    Ok((Arc::new(provider), used))
}

#[cfg(not(feature = "kms-local"))]
fn local_provider(_: &Settings, _: bool) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
    Err(not_built(KmsProviderKind::Local))
}

/// `[kms.aws]` (the region; else, like credentials and `AWS_ENDPOINT_URL`, the aws-config
/// chain's); `kms.endpoint` wins over `AWS_ENDPOINT_URL`.
#[cfg(feature = "kms-aws")]
fn aws_provider(settings: &Settings) -> Result<Arc<dyn KmsProvider>> {
    let mut b = llm_accounting_kms_aws::AwsKmsProvider::builder()
        .with_key_id(required_key_id(settings)?)
        .with_config(&settings.kms.aws);
    if let Some(endpoint) = &settings.kms.endpoint {
        b = b.with_endpoint_url(endpoint);
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(not(feature = "kms-aws"))]
fn aws_provider(_: &Settings) -> Result<Arc<dyn KmsProvider>> {
    Err(not_built(KmsProviderKind::Aws))
}

/// `[kms.azure]` (credentials and wrap algorithm; the client-secret and managed-identity
/// credentials read the standard `AZURE_*` variables).
#[cfg(feature = "kms-azure")]
fn azure_provider(settings: &Settings) -> Result<Arc<dyn KmsProvider>> {
    let mut b = llm_accounting_kms_azure::AzureKeyVaultProvider::builder()
        .with_key_id(required_key_id(settings)?)
        .with_config(&settings.kms.azure);
    if let Some(endpoint) = &settings.kms.endpoint {
        b = b.with_endpoint(endpoint);
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(not(feature = "kms-azure"))]
fn azure_provider(_: &Settings) -> Result<Arc<dyn KmsProvider>> {
    Err(not_built(KmsProviderKind::Azure))
}

/// `[kms.gcp]` (Application Default Credentials, or none for emulators).
#[cfg(feature = "kms-gcp")]
fn gcp_provider(settings: &Settings) -> Result<Arc<dyn KmsProvider>> {
    let mut b = llm_accounting_kms_gcp::GcpKmsProvider::builder()
        .with_key_name(required_key_id(settings)?)
        .with_config(&settings.kms.gcp);
    if let Some(endpoint) = &settings.kms.endpoint {
        b = b.with_endpoint(endpoint);
    }
    Ok(Arc::new(b.build()?))
}

#[cfg(not(feature = "kms-gcp"))]
fn gcp_provider(_: &Settings) -> Result<Arc<dyn KmsProvider>> {
    Err(not_built(KmsProviderKind::Gcp))
}
