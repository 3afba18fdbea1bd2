//! Building repositories and managers from [`Settings`] (the provider: [`crate::provider`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use llm_accounting_core::branch::{BranchKeyProvider, BranchKeyStore};
use llm_accounting_core::files::{self, PrivatePath};

use crate::provider::build_provider_and_repository;
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
        used.database_created = !files::exists(&file, "inspecting the database file")?;
        used.database = Some(file.display().to_string());
        options.create_if_missing = true;
    }
    let repo = SeaOrmKeyRepository::connect(&url, &options).await?;
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
pub(crate) fn private_data_dir(dir: &Path) -> Result<()> {
    if files::exists(dir, "inspecting the data directory")? {
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
