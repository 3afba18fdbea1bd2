//! Settings whose value is one of a few names: the provider, and per-provider choices.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::{Error, Result};

/// Every provider name llm-accounting knows, compiled in or not: the names of
/// [`KmsProviderKind::ALL`].
pub const PROVIDER_NAMES: &[&str] = &PROVIDER_NAME_ARRAY;

const PROVIDER_NAME_ARRAY: [&str; KmsProviderKind::ALL.len()] = {
    let mut names = [""; KmsProviderKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = KmsProviderKind::ALL[i].as_str();
        i += 1;
    }
    names
};

/// A setting whose value is one of a few names.
trait Choice: Sized + Copy + Default + 'static {
    /// What the value is, for messages (`provider`, `Azure credential kind`).
    const WHAT: &'static str;
    /// Every value.
    const ALL: &'static [Self];
    /// Whether an empty (or blank) value means the default.
    const EMPTY_IS_DEFAULT: bool;
    /// The value's name.
    fn name(self) -> &'static str;
}

/// The value named `text` (trimmed, case-insensitive).
fn parse_choice<T: Choice>(text: &str) -> std::result::Result<T, String> {
    let name = text.trim();
    if T::EMPTY_IS_DEFAULT && name.is_empty() {
        return Ok(T::default());
    }
    T::ALL
        .iter()
        .copied()
        .find(|c| c.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|c| c.name()).collect();
            format!(
                "unknown {} `{text}`; expected one of: {}",
                T::WHAT,
                names.join(", ")
            )
        })
}

/// `Display` (the name), `FromStr` and `Deserialize` (by name, trimmed and case-insensitive)
/// for [`Choice`] types.
macro_rules! choice_impls {
    ($($t:ty),* $(,)?) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                parse_choice(s).map_err(Error::config)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                parse_choice(&text).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

choice_impls!(
    KmsProviderKind,
    AzureCredentials,
    AzureKeyWrap,
    GcpCredentials,
    KmsHierarchy
);

/// Which KMS holds the master key (`kms.provider`).
///
/// Every variant exists whatever features are compiled in, so that a provider whose feature
/// is off is reported as such ("built without feature kms-gcp") when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KmsProviderKind {
    /// The local-development provider: master keys in a file (feature `kms-local`).
    #[default]
    Local,
    /// AWS KMS (feature `kms-aws`).
    Aws,
    /// Azure Key Vault or Managed HSM (feature `kms-azure`).
    Azure,
    /// Google Cloud KMS (feature `kms-gcp`).
    Gcp,
}

impl KmsProviderKind {
    /// Every provider llm-accounting knows, compiled in or not.
    pub const ALL: &'static [KmsProviderKind] = &[
        KmsProviderKind::Local,
        KmsProviderKind::Aws,
        KmsProviderKind::Azure,
        KmsProviderKind::Gcp,
    ];

    /// The name in settings, on the command line and in stored records: `local`, `aws`,
    /// `azure` or `gcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KmsProviderKind::Local => "local",
            KmsProviderKind::Aws => "aws",
            KmsProviderKind::Azure => "azure",
            KmsProviderKind::Gcp => "gcp",
        }
    }

    /// The Cargo feature of the facade that compiles this provider in.
    pub const fn feature(self) -> &'static str {
        match self {
            KmsProviderKind::Local => "kms-local",
            KmsProviderKind::Aws => "kms-aws",
            KmsProviderKind::Azure => "kms-azure",
            KmsProviderKind::Gcp => "kms-gcp",
        }
    }

    /// Whether this build of llm-accounting has the provider.
    pub const fn is_built(self) -> bool {
        match self {
            KmsProviderKind::Local => cfg!(feature = "kms-local"),
            KmsProviderKind::Aws => cfg!(feature = "kms-aws"),
            KmsProviderKind::Azure => cfg!(feature = "kms-azure"),
            KmsProviderKind::Gcp => cfg!(feature = "kms-gcp"),
        }
    }
}

impl Choice for KmsProviderKind {
    const WHAT: &'static str = "provider";
    const ALL: &'static [Self] = KmsProviderKind::ALL;
    const EMPTY_IS_DEFAULT: bool = false;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Compares with a provider name (`settings.kms.provider == "aws"`).
impl PartialEq<str> for KmsProviderKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Compares with a provider name (`settings.kms.provider == "aws"`).
impl PartialEq<&str> for KmsProviderKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How the Azure provider authenticates (`kms.azure.credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AzureCredentials {
    /// `default`: a DefaultAzureCredential-style chain (client secret from the standard
    /// `AZURE_*` variables, workload identity, managed identity, Azure CLI / azd).
    #[default]
    Default,
    /// `client-secret`: a service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    /// `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// `managed-identity`: the system-assigned identity, or the user-assigned one whose client
    /// id is in `AZURE_CLIENT_ID`.
    ManagedIdentity,
    /// `developer-tools`: `az login`, then `azd auth login`.
    DeveloperTools,
}

impl AzureCredentials {
    /// The name in settings: `default`, `client-secret`, `managed-identity`,
    /// `developer-tools`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AzureCredentials::Default => "default",
            AzureCredentials::ClientSecret => "client-secret",
            AzureCredentials::ManagedIdentity => "managed-identity",
            AzureCredentials::DeveloperTools => "developer-tools",
        }
    }
}

impl Choice for AzureCredentials {
    const WHAT: &'static str = "Azure credential kind";
    const ALL: &'static [Self] = &[
        AzureCredentials::Default,
        AzureCredentials::ClientSecret,
        AzureCredentials::ManagedIdentity,
        AzureCredentials::DeveloperTools,
    ];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// The algorithm the Azure provider wraps data keys with (`kms.azure.wrap_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AzureKeyWrap {
    /// `RSA-OAEP-256`, for RSA keys (Key Vault and Managed HSM).
    #[default]
    RsaOaep256,
    /// `A256KW`, for AES keys in a Managed HSM.
    A256Kw,
}

impl AzureKeyWrap {
    /// The JWA name: `RSA-OAEP-256` or `A256KW`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AzureKeyWrap::RsaOaep256 => "RSA-OAEP-256",
            AzureKeyWrap::A256Kw => "A256KW",
        }
    }
}

impl Choice for AzureKeyWrap {
    const WHAT: &'static str = "Azure wrap algorithm";
    const ALL: &'static [Self] = &[AzureKeyWrap::RsaOaep256, AzureKeyWrap::A256Kw];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
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

/// How data keys are grouped under branch keys (`kms.hierarchy`; see
/// [`llm_accounting_core::branch`]): `off` wraps every data key with the KMS (one call per
/// key); the others make one branch key per store, service, project or user, wrapped by the
/// KMS, and wrap data keys locally under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KmsHierarchy {
    /// `off`: no branch keys (the default).
    #[default]
    Off,
    /// `store`: one branch key for the whole store.
    Store,
    /// `service`: one branch key per service.
    Service,
    /// `project`: one branch key per project (and one for keys without a project).
    Project,
    /// `user`: one branch key per user (and one for keys without a user).
    User,
}

impl KmsHierarchy {
    /// The name in settings.
    pub const fn as_str(self) -> &'static str {
        self.to_core().as_str()
    }

    /// The core's value.
    pub const fn to_core(self) -> llm_accounting_core::branch::Hierarchy {
        use llm_accounting_core::branch::Hierarchy;
        match self {
            KmsHierarchy::Off => Hierarchy::Off,
            KmsHierarchy::Store => Hierarchy::Store,
            KmsHierarchy::Service => Hierarchy::Service,
            KmsHierarchy::Project => Hierarchy::Project,
            KmsHierarchy::User => Hierarchy::User,
        }
    }
}

impl Choice for KmsHierarchy {
    const WHAT: &'static str = "KMS hierarchy";
    const ALL: &'static [Self] = &[
        KmsHierarchy::Off,
        KmsHierarchy::Store,
        KmsHierarchy::Service,
        KmsHierarchy::Project,
        KmsHierarchy::User,
    ];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}
