//! The AWS KMS provider's settings.

use llm_accounting_core::settings::empty_is_none;
use serde::Deserialize;

/// Settings of the AWS KMS provider (`[kms.aws]` in llm-accounting's configuration); applied
/// by `AwsKmsProviderBuilder::with_config`. Credentials, and the region unless set here, come
/// from the standard aws-config chain (`AWS_REGION`, `AWS_PROFILE`, ...).
///
/// Deserializable from a configuration: unknown fields are refused, missing ones default, an
/// empty value means "not set".
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AwsKmsConfig {
    /// The AWS region; `None`: `AWS_REGION` or the profile's.
    #[serde(deserialize_with = "empty_is_none")]
    pub region: Option<String>,
}
