//! How the provider authenticates to Key Vault.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::ClientOptions;
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use llm_accounting_core::{Error, Result};
use zeroize::Zeroizing;

use crate::AzureCredentials;

/// Which Azure credential to use.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum AzureCredentialKind {
    /// A DefaultAzureCredential-style chain, first that gives a token wins: a client secret from
    /// `AZURE_TENANT_ID` / `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET`, workload identity
    /// (`AZURE_FEDERATED_TOKEN_FILE`), managed identity, then Azure CLI / Azure Developer CLI.
    #[default]
    Default,
    /// A service principal with a client secret.
    ClientSecret {
        /// The Entra ID tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: Zeroizing<String>,
    },
    /// A managed identity: system-assigned, or user-assigned with this client id.
    ManagedIdentity {
        /// The client id of a user-assigned identity; `None` for the system-assigned one.
        client_id: Option<String>,
    },
    /// Azure CLI (`az login`), then Azure Developer CLI (`azd auth login`).
    DeveloperTools,
    /// A ready credential.
    Custom(Arc<dyn TokenCredential>),
}

impl fmt::Debug for AzureCredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureCredentialKind::Default => f.write_str("Default"),
            AzureCredentialKind::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"[REDACTED]")
                .finish(),
            AzureCredentialKind::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            AzureCredentialKind::DeveloperTools => f.write_str("DeveloperTools"),
            AzureCredentialKind::Custom(_) => f.write_str("Custom([REDACTED])"),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The credential a name in settings stands for; `client-secret` and `managed-identity` read
/// the standard `AZURE_*` variables.
impl From<AzureCredentials> for AzureCredentialKind {
    fn from(name: AzureCredentials) -> Self {
        match name {
            AzureCredentials::Default => AzureCredentialKind::Default,
            AzureCredentials::ClientSecret => Self::client_secret_from_env(),
            AzureCredentials::ManagedIdentity => Self::managed_identity_from_env(),
            AzureCredentials::DeveloperTools => AzureCredentialKind::DeveloperTools,
        }
    }
}

impl AzureCredentialKind {
    /// The credential named `name` (trimmed, case-insensitive): `client-secret`
    /// ([`AzureCredentialKind::client_secret_from_env`]), `managed-identity`
    /// ([`AzureCredentialKind::managed_identity_from_env`]), `developer-tools`, or `default`
    /// (also for an empty name) for the chain.
    ///
    /// # Errors
    /// An unknown name is a configuration error.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(name.parse::<AzureCredentials>()?.into())
    }

    /// A service principal from the standard variables `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    /// `AZURE_CLIENT_SECRET`; a missing one is reported by the provider builder's `build`.
    pub fn client_secret_from_env() -> Self {
        AzureCredentialKind::ClientSecret {
            tenant_id: env("AZURE_TENANT_ID").unwrap_or_default(),
            client_id: env("AZURE_CLIENT_ID").unwrap_or_default(),
            client_secret: Zeroizing::new(env("AZURE_CLIENT_SECRET").unwrap_or_default()),
        }
    }

    /// A managed identity: the user-assigned one whose client id is in the standard variable
    /// `AZURE_CLIENT_ID`, or the system-assigned one when it is unset.
    pub fn managed_identity_from_env() -> Self {
        AzureCredentialKind::ManagedIdentity {
            client_id: env("AZURE_CLIENT_ID"),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            AzureCredentialKind::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
            } if tenant_id.is_empty() || client_id.is_empty() || client_secret.is_empty() => {
                Err(Error::config(
                    "the Azure client-secret credential needs AZURE_TENANT_ID, AZURE_CLIENT_ID \
                     and AZURE_CLIENT_SECRET",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The credential, its token requests going through `options` (transport, no retries).
    pub(crate) fn build(&self, options: &ClientOptions) -> Result<Arc<dyn TokenCredential>> {
        let made = |e: azure_core::Error| Error::Config {
            message: "cannot set up the Azure credential".to_owned(),
            source: Some(Arc::new(e)),
        };
        Ok(match self {
            AzureCredentialKind::Default => Arc::new(Chain::new(options)),
            AzureCredentialKind::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(client_secret.as_str().to_owned()),
                Some(ClientSecretCredentialOptions {
                    client_options: options.clone(),
                }),
            )
            .map_err(made)?,
            AzureCredentialKind::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: options.clone(),
                }))
                .map_err(made)?
            }
            AzureCredentialKind::DeveloperTools => {
                DeveloperToolsCredential::new(None).map_err(made)?
            }
            AzureCredentialKind::Custom(c) => Arc::clone(c),
        })
    }
}

/// The DefaultAzureCredential-style chain. Sources that cannot be set up (missing variables)
/// are left out; the first source that gives a token is used from then on.
#[derive(Debug)]
struct Chain {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: Mutex<Option<usize>>,
}

impl Chain {
    fn new(options: &ClientOptions) -> Self {
        let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
        if let (Some(t), Some(c), Some(s)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) && let Ok(cred) = ClientSecretCredential::new(
            &t,
            c,
            Secret::new(s),
            Some(ClientSecretCredentialOptions {
                client_options: options.clone(),
            }),
        ) {
            sources.push(("environment client secret", cred));
        }
        if env("AZURE_FEDERATED_TOKEN_FILE").is_some()
            && let Ok(cred) =
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: azure_identity::ClientAssertionCredentialOptions {
                        client_options: options.clone(),
                    },
                    ..Default::default()
                }))
        {
            sources.push(("workload identity", cred));
        }
        if let Ok(cred) = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: env("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
            client_options: options.clone(),
        })) {
            sources.push(("managed identity", cred));
        }
        if let Ok(cred) = DeveloperToolsCredential::new(None) {
            sources.push(("Azure CLI / Azure Developer CLI", cred));
        }
        Chain {
            sources,
            chosen: Mutex::new(None),
        }
    }
}

#[async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = self.chosen.lock().ok().and_then(|c| *c);
        if let Some(i) = chosen
            && let Some((_, c)) = self.sources.get(i)
        {
            return c.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (i, (name, c)) in self.sources.iter().enumerate() {
            match c.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    if let Ok(mut ch) = self.chosen.lock() {
                        *ch = Some(i);
                    }
                    return Ok(token);
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no Azure credential gave a token (choose one explicitly, such as \
                 kms.azure.credentials in llm-accounting's settings; set AZURE_TENANT_ID / \
                 AZURE_CLIENT_ID / AZURE_CLIENT_SECRET, run on a managed identity, or `az \
                 login`); tried: {}",
                if failures.is_empty() {
                    "nothing".to_owned()
                } else {
                    failures.join("; ")
                }
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_kinds_parse_by_name() {
        for (name, expect) in [
            ("", "Default"),
            (" Default ", "Default"),
            ("developer-tools", "DeveloperTools"),
            ("MANAGED-IDENTITY", "ManagedIdentity"),
            ("client-secret", "ClientSecret"),
        ] {
            let kind = AzureCredentialKind::parse(name).expect(name);
            assert!(format!("{kind:?}").starts_with(expect), "{name}: {kind:?}");
        }
        let err = AzureCredentialKind::parse("certificate").expect_err("unknown");
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(err.to_string().contains("`certificate`"), "{err}");
    }
}
