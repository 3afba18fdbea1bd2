//! Building providers, repositories and managers from [`Settings`].

use std::sync::Arc;

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

/// The KMS provider named by the settings. A provider whose feature is not compiled in is a
/// clear [`Error::Config`].
pub fn build_provider(settings: &Settings) -> Result<(Arc<dyn KmsProvider>, DefaultsUsed)> {
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
    let manager = SecureKeyManager::builder(provider, repo)
        .options(settings.manager_options())
        .build();
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
