//! The Google Cloud KMS provider's settings: which credentials.

use llm_accounting_core::choice_impls;
use llm_accounting_core::settings::Choice;
use serde::Deserialize;

choice_impls!(GcpCredentials);

/// Settings of the Google Cloud KMS provider (`[kms.gcp]` in llm-accounting's configuration);
/// applied by `GcpKmsProviderBuilder::with_config`.
///
/// Deserializable from a configuration: unknown fields are refused, missing ones default,
/// names are trimmed and case-insensitive, an empty one means the default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GcpKmsConfig {
    /// Which credentials to send.
    pub credentials: GcpCredentials,
}

/// Which credentials the Google Cloud provider sends (`kms.gcp.credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum GcpCredentials {
    /// `default`: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
    /// ADC file, or the metadata server).
    #[default]
    Default,
    /// `anonymous`: none at all, for emulators.
    Anonymous,
}

impl GcpCredentials {
    /// The name in settings: `default` or `anonymous`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GcpCredentials::Default => "default",
            GcpCredentials::Anonymous => "anonymous",
        }
    }
}

impl Choice for GcpCredentials {
    const WHAT: &'static str = "GCP credential kind";
    const ALL: &'static [Self] = &[GcpCredentials::Default, GcpCredentials::Anonymous];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}
