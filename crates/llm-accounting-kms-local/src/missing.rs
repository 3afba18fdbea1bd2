//! The rules of a missing master key file: created only when asked, never while the store
//! holds keys wrapped under the lost one.

use std::path::Path;

use llm_accounting_core::files;
use llm_accounting_core::{Error, Result};

use crate::MasterKeyFile;

/// When a missing master key file may be created, and how the caller names the settings its
/// refusals point at (this crate knows no settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRules {
    /// A missing file may be created: it was asked for, or the file is at the caller's default
    /// location.
    pub allowed: bool,
    /// How to ask for the file to be created, in the caller's words (a setting, its variable).
    pub how_to_ask: String,
    /// How to point at another file, in the caller's words (a setting or its variable).
    pub path_setting: String,
}

impl MasterKeyFile {
    /// Whether something (a file, a directory, a link) is at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `path` cannot be inspected.
    pub fn exists(path: &Path) -> Result<bool> {
        files::exists(path, "inspecting the master key file")
    }

    /// Refuses a missing file that `rules` do not allow to create. Nothing is opened or
    /// created: a caller checks this before it opens or creates anything else.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file and `rules.how_to_ask`.
    pub fn check_missing(path: &Path, rules: &CreateRules) -> Result<()> {
        if rules.allowed || Self::exists(path)? {
            return Ok(());
        }
        Err(Error::config(format!(
            "local master key file {} does not exist, and creating it was not asked for \
             ({}): check the path, or ask for it to be created",
            path.display(),
            rules.how_to_ask
        )))
    }

    /// Opens `path` ([`MasterKeyFile::open`]); a missing file is created with one fresh master
    /// key ([`MasterKeyFile::open_or_create`]) if `rules` allow it and the store holds no key
    /// wrapped by the local provider (`holds_wrapped_keys`, the caller's to find out, when the
    /// file is missing: see [`MasterKeyFile::exists`]). Returns the file and whether this call
    /// created it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file is missing and the store holds keys wrapped under it (a
    /// new master key would not open them; nothing is created), or when creating it is not
    /// allowed ([`MasterKeyFile::check_missing`]); the errors of opening or creating it.
    pub fn open_with(
        path: &Path,
        rules: &CreateRules,
        holds_wrapped_keys: bool,
    ) -> Result<(Self, bool)> {
        if Self::exists(path)? {
            return Ok((Self::open(path)?, false));
        }
        if holds_wrapped_keys {
            return Err(Error::config(format!(
                "local master key file {} does not exist, but the database holds keys wrapped \
                 under it: a new master key would not open them, so none was made. Restore the \
                 file (from a backup) at that path, or point {} at it",
                path.display(),
                rules.path_setting
            )));
        }
        Self::check_missing(path, rules)?;
        Ok((Self::open_or_create(path)?, true))
    }
}
