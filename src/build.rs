//! Building the repository and the accounting of a [`Stack`](crate::Stack) from [`Settings`]
//! (the provider: [`crate::provider`]).

use std::path::Path;
use std::sync::Arc;

use llm_accounting_core::files::{self, PrivatePath};

use crate::{Error, Result, SeaOrmKeyRepository, Settings};

/// What a [`Stack`](crate::Stack) build chose where nothing was configured, so a CLI can tell the
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
pub(crate) async fn accounting(
    settings: &Settings,
    repo: Option<&SeaOrmKeyRepository>,
) -> Result<crate::usage::Accounting> {
    use crate::usage::{Accounting, AccountingOptions, RecorderOptions};
    settings.validate()?;
    let store: Arc<dyn crate::usage::UsageStore> = match (&settings.accounting.database_url, repo) {
        (Some(url), _) => Arc::new(
            llm_accounting_store::SeaOrmUsageStore::connect(url, &settings.store_options()).await?,
        ),
        (None, Some(repo)) => Arc::new(repo.usage_store().await?),
        (None, None) => {
            return Err(Error::config(
                "the accounting has no database of its own (accounting.database_url) and no key \
                 database was opened",
            ));
        }
    };
    let store = quota_engine(settings, store).await?;
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

/// The engine of `accounting.engine` over the accounting database `store`: the database
/// itself, or Redis in front of it.
#[cfg(feature = "accounting")]
async fn quota_engine(
    settings: &Settings,
    store: Arc<dyn crate::usage::UsageStore>,
) -> Result<Arc<dyn crate::usage::UsageStore>> {
    let a = &settings.accounting;
    match a.engine {
        crate::AccountingEngine::Database => Ok(store),
        #[cfg(feature = "redis")]
        crate::AccountingEngine::Redis => {
            let url = a.redis_url.as_deref().ok_or_else(|| {
                Error::config(
                    "accounting.engine = redis needs accounting.redis_url \
                     (LLM_ACCOUNTING_ACCOUNTING_REDIS_URL)",
                )
            })?;
            let options = llm_accounting_redis::RedisOptions {
                fallback: a.redis_fallback == crate::RedisFallback::Database,
                ..llm_accounting_redis::RedisOptions::default()
            };
            Ok(Arc::new(
                llm_accounting_redis::RedisUsageStore::connect(url, store, options).await?,
            ))
        }
        #[cfg(not(feature = "redis"))]
        crate::AccountingEngine::Redis => Err(Error::config(
            "accounting.engine = redis: this build of llm-accounting was built without feature redis",
        )),
    }
}
