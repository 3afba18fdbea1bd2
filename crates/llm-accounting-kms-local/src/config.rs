//! The local provider's settings.

use std::path::PathBuf;

use llm_accounting_core::settings::empty_is_none_path;
use serde::Deserialize;

/// Settings of the local provider (`[kms.local]` in llm-accounting's configuration).
///
/// Deserializable from a configuration: unknown fields are refused, missing ones default, an
/// empty path means "not set". Applied by `LocalKmsProvider::with_config` once the file is
/// opened.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalKmsConfig {
    /// Master key file; `None`: the caller's default location.
    #[serde(deserialize_with = "empty_is_none_path")]
    pub master_key_file: Option<PathBuf>,
    /// Master-key versions below this are retired (0: none).
    pub min_master_key_version: u32,
}
