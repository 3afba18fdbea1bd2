//! The Azure Key Vault provider's settings: which credential, which wrap algorithm.

use llm_accounting_core::choice_impls;
use llm_accounting_core::settings::Choice;
use serde::Deserialize;

choice_impls!(AzureCredentials, WrapAlgorithm);

/// Settings of the Azure Key Vault provider (`[kms.azure]` in llm-accounting's configuration);
/// applied by `AzureKeyVaultProviderBuilder::with_config`.
///
/// Deserializable from a configuration: unknown fields are refused, missing ones default,
/// names are trimmed and case-insensitive, an empty one means the default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AzureKeyVaultConfig {
    /// How to authenticate.
    pub credentials: AzureCredentials,
    /// The key-wrap algorithm; change it only together with the key (and `keys rewrap`).
    pub wrap_algorithm: WrapAlgorithm,
}

/// How the Azure provider authenticates (`kms.azure.credentials`), by name; the credential
/// itself is an `AzureCredentialKind` made from it.
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

/// The algorithm the provider wraps data keys with (`kms.azure.wrap_algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WrapAlgorithm {
    /// `RSA-OAEP-256`: RSA-OAEP with SHA-256, for RSA keys (Key Vault and Managed HSM).
    #[default]
    RsaOaep256,
    /// `A256KW`: AES key wrap with a 256-bit key, for AES keys in a Managed HSM.
    A256Kw,
}

impl WrapAlgorithm {
    /// The JWA name (`RSA-OAEP-256`, `A256KW`).
    pub const fn as_str(self) -> &'static str {
        match self {
            WrapAlgorithm::RsaOaep256 => "RSA-OAEP-256",
            WrapAlgorithm::A256Kw => "A256KW",
        }
    }

    /// Parses a JWA name (trimmed, case-insensitive).
    ///
    /// # Errors
    ///
    /// An unknown name is [`Error::Config`](llm_accounting_core::Error::Config).
    pub fn parse(name: &str) -> llm_accounting_core::Result<Self> {
        name.parse()
    }
}

impl Choice for WrapAlgorithm {
    const WHAT: &'static str = "Azure wrap algorithm";
    const ALL: &'static [Self] = &[WrapAlgorithm::RsaOaep256, WrapAlgorithm::A256Kw];
    const EMPTY_IS_DEFAULT: bool = true;
    fn name(self) -> &'static str {
        self.as_str()
    }
}
