//! The provider and its builder.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use azure_core::http::{ClientOptions, HttpClient, RetryOptions, Transport};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, KeyClientUnwrapKeyOptions, KeyClientWrapKeyOptions, KeyOperationParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use llm_accounting_core::{
    DATA_KEY_LEN, DataKey, EncryptionContext, Error, FailureClass, KmsProvider, Result, WrappedKey,
    required_setting,
};
use zeroize::Zeroizing;

use crate::credential::AzureCredentialKind;
use crate::error::{self, map_azure_error};
use crate::transport::EndpointOverride;
use crate::{AzureKeyVaultConfig, PROVIDER_NAME, WrapAlgorithm};

impl WrapAlgorithm {
    fn sdk(self) -> EncryptionAlgorithm {
        match self {
            WrapAlgorithm::RsaOaep256 => EncryptionAlgorithm::RsaOaep256,
            WrapAlgorithm::A256Kw => EncryptionAlgorithm::A256Kw,
        }
    }
}

/// A parsed Key Vault key identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultKeyId {
    /// `https://NAME.vault.azure.net` (no trailing slash).
    pub vault_url: String,
    /// The key name.
    pub name: String,
    /// The key version, if given.
    pub version: Option<String>,
}

impl KeyVaultKeyId {
    /// Parses `https://VAULT/keys/NAME[/VERSION]`.
    pub fn parse(id: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::config(format!(
                "`{id}` is not a Key Vault key id ({why}): expected \
                 https://NAME.vault.azure.net/keys/KEY[/VERSION]"
            ))
        };
        let rest = id
            .trim()
            .strip_prefix("https://")
            .ok_or_else(|| bad("not an https:// URL"))?;
        let mut parts = rest.trim_end_matches('/').split('/');
        let host = parts
            .next()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        if parts.next() != Some("keys") {
            return Err(bad("no /keys/ path"));
        }
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 127
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        let name = parts
            .next()
            .filter(|n| valid(n))
            .ok_or_else(|| bad("bad key name"))?;
        let version = match parts.next() {
            None => None,
            Some(v) if valid(v) => Some(v.to_owned()),
            Some(_) => return Err(bad("bad key version")),
        };
        if parts.next().is_some() {
            return Err(bad("extra path segments"));
        }
        Ok(KeyVaultKeyId {
            vault_url: format!("https://{host}"),
            name: name.to_owned(),
            version,
        })
    }

    /// The identifier URL, with the version when there is one.
    pub fn url(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/keys/{}/{v}", self.vault_url, self.name),
            None => format!("{}/keys/{}", self.vault_url, self.name),
        }
    }
}

/// Wraps data keys with Azure Key Vault. Build it with [`AzureKeyVaultProvider::builder`].
///
/// SDK clients are made on first use (one per vault named by the records it reads), so
/// building the provider neither needs a runtime nor touches the network.
pub struct AzureKeyVaultProvider {
    key: KeyVaultKeyId,
    /// The versioned key id Key Vault reported for the configured key, once known.
    resolved: RwLock<Option<String>>,
    clients: Mutex<HashMap<String, Arc<KeyClient>>>,
    settings: AzureKeyVaultProviderBuilder,
}

impl fmt::Debug for AzureKeyVaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVaultProvider")
            .field("key", &self.key.url())
            .field(
                "resolved",
                &self.resolved.read().ok().and_then(|r| r.clone()),
            )
            .field("settings", &self.settings)
            .finish()
    }
}

/// Settings of an [`AzureKeyVaultProvider`]; validated by [`AzureKeyVaultProviderBuilder::build`].
#[derive(Clone, Default)]
pub struct AzureKeyVaultProviderBuilder {
    key_id: Option<String>,
    algorithm: Option<String>,
    endpoint: Option<String>,
    credential: AzureCredentialKind,
    transport: Option<Arc<dyn HttpClient>>,
    verify_challenge_resource: Option<bool>,
}

impl fmt::Debug for AzureKeyVaultProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVaultProviderBuilder")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("endpoint", &self.endpoint)
            .field("credential", &self.credential)
            .field("custom_transport", &self.transport.is_some())
            .field("verify_challenge_resource", &self.verify_challenge_resource)
            .finish()
    }
}

impl AzureKeyVaultProviderBuilder {
    /// The master key: `https://NAME.vault.azure.net/keys/KEY[/VERSION]`.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// The wrap algorithm (default RSA-OAEP-256).
    pub fn with_algorithm(mut self, algorithm: WrapAlgorithm) -> Self {
        self.algorithm = Some(algorithm.as_str().to_owned());
        self
    }

    /// Applies `config`: its credentials ([`AzureCredentialKind::from`], which reads the
    /// standard `AZURE_*` variables) and wrap algorithm.
    pub fn with_config(self, config: &AzureKeyVaultConfig) -> Self {
        self.with_credential(config.credentials.into())
            .with_algorithm(config.wrap_algorithm)
    }

    /// How to authenticate (default: the chain, [`AzureCredentialKind::Default`]).
    pub fn with_credential(mut self, credential: AzureCredentialKind) -> Self {
        self.credential = credential;
        self
    }

    /// Sends every request, Key Vault and token requests alike, to this base URL (an emulator
    /// or a test fake; plain `http://` is allowed here), keeping path and query.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Uses this HTTP client for every request (tests; proxies). Wins over
    /// [`AzureKeyVaultProviderBuilder::with_endpoint`].
    pub fn with_transport(mut self, client: Arc<dyn HttpClient>) -> Self {
        self.transport = Some(client);
        self
    }

    /// Whether the resource named in Key Vault's 401 challenge must match the vault's domain
    /// (default true; turn off only for fakes).
    pub fn with_verify_challenge_resource(mut self, verify: bool) -> Self {
        self.verify_challenge_resource = Some(verify);
        self
    }

    /// Checks the settings and makes the provider. Clients are made on first use.
    pub fn build(self) -> Result<AzureKeyVaultProvider> {
        let key_id = required_setting(
            self.key_id.as_deref(),
            "the Azure Key Vault provider needs a master key: call `with_key_id` with a key id \
             such as https://NAME.vault.azure.net/keys/KEY",
        )?;
        let key = KeyVaultKeyId::parse(&key_id)?;
        if let Some(a) = &self.algorithm {
            WrapAlgorithm::parse(a)?;
        }
        if let Some(url) = &self.endpoint {
            EndpointOverride::new(url)?;
        }
        self.credential.validate()?;
        Ok(AzureKeyVaultProvider {
            key,
            resolved: RwLock::new(None),
            clients: Mutex::new(HashMap::new()),
            settings: self,
        })
    }

    fn algorithm(&self) -> WrapAlgorithm {
        self.algorithm
            .as_deref()
            .and_then(|a| WrapAlgorithm::parse(a).ok())
            .unwrap_or_default()
    }

    /// Client options: no SDK retries, and the custom transport if any.
    fn client_options(&self) -> Result<ClientOptions> {
        let transport = match (&self.transport, &self.endpoint) {
            (Some(t), _) => Some(Transport::new(Arc::clone(t))),
            (None, Some(e)) => Some(Transport::new(Arc::new(EndpointOverride::new(e)?))),
            (None, None) => None,
        };
        Ok(ClientOptions {
            retry: RetryOptions::none(),
            transport,
            ..ClientOptions::default()
        })
    }

    fn client(&self, vault_url: &str) -> Result<KeyClient> {
        let client_options = self.client_options()?;
        let credential = self.credential.build(&client_options)?;
        let options = KeyClientOptions {
            client_options,
            verify_challenge_resource: Some(self.verify_challenge_resource.unwrap_or(true)),
            ..KeyClientOptions::default()
        };
        KeyClient::new(vault_url, credential, Some(options)).map_err(|e| Error::Config {
            message: format!("cannot make the Key Vault client for {vault_url}"),
            source: Some(Arc::new(e)),
        })
    }
}

impl AzureKeyVaultProvider {
    /// A builder; see [`AzureKeyVaultProviderBuilder`].
    pub fn builder() -> AzureKeyVaultProviderBuilder {
        AzureKeyVaultProviderBuilder::default()
    }

    /// The configured key.
    pub fn key_id(&self) -> &KeyVaultKeyId {
        &self.key
    }

    fn client(&self, vault_url: &str) -> Result<Arc<KeyClient>> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| Error::config("the Key Vault client cache is poisoned"))?;
        if let Some(c) = clients.get(vault_url) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(self.settings.client(vault_url)?);
        clients.insert(vault_url.to_owned(), Arc::clone(&c));
        Ok(c)
    }
}

#[async_trait]
impl KmsProvider for AzureKeyVaultProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    /// The versioned key id once Key Vault has reported it (or the configured one, if it names a
    /// version), else the configured key id.
    fn master_key_ref(&self) -> String {
        self.resolved
            .read()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| self.key.url())
    }

    async fn wrap_key(&self, key: &DataKey, _context: &EncryptionContext) -> Result<WrappedKey> {
        // No AAD: RSA key wrap has none. The record's AES-GCM envelope binds the context.
        const OP: &str = "wrap";
        let params = KeyOperationParameters {
            algorithm: Some(self.settings.algorithm().sdk()),
            value: Some(key.expose_secret().to_vec()),
            ..KeyOperationParameters::default()
        };
        let options = KeyClientWrapKeyOptions {
            key_version: self.key.version.clone(),
            ..KeyClientWrapKeyOptions::default()
        };
        let result = self
            .client(&self.key.vault_url)?
            .wrap_key(
                &self.key.name,
                params.try_into().map_err(|e| map_azure_error(OP, &e))?,
                Some(options),
            )
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map_azure_error(OP, &e))?;
        let ciphertext = result.result.filter(|c| !c.is_empty()).ok_or_else(|| {
            error::ERRORS.failed_service(
                FailureClass::Broken,
                OP,
                "the wrapKey answer has no value",
            )
        })?;
        let kid = result.kid.ok_or_else(|| {
            error::ERRORS.failed_service(FailureClass::Broken, OP, "the wrapKey answer has no kid")
        })?;
        let id = KeyVaultKeyId::parse(&kid)
            .ok()
            .filter(|id| id.version.is_some() && id.name == self.key.name)
            .ok_or_else(|| {
                error::ERRORS.failed_service(
                    FailureClass::Broken,
                    OP,
                    "the wrapKey answer has no versioned kid",
                )
            })?;
        let master_key_ref = id.url();
        if let Ok(mut r) = self.resolved.write()
            && r.as_deref() != Some(master_key_ref.as_str())
        {
            *r = Some(master_key_ref.clone());
        }
        Ok(WrappedKey::new(PROVIDER_NAME, master_key_ref, ciphertext))
    }

    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        _context: &EncryptionContext,
    ) -> Result<DataKey> {
        const OP: &str = "unwrap";
        wrapped.check_made_by(PROVIDER_NAME, 1)?;
        let id = KeyVaultKeyId::parse(&wrapped.master_key_ref)
            .ok()
            .filter(|id| id.version.is_some())
            .ok_or_else(Error::integrity)?;
        let params = KeyOperationParameters {
            algorithm: Some(self.settings.algorithm().sdk()),
            value: Some(wrapped.ciphertext.clone()),
            ..KeyOperationParameters::default()
        };
        let result = self
            .client(&id.vault_url)?
            .unwrap_key(
                &id.name,
                id.version.as_deref().unwrap_or_default(),
                params.try_into().map_err(|e| map_azure_error(OP, &e))?,
                Some(KeyClientUnwrapKeyOptions::default()),
            )
            .await
            .and_then(|r| r.into_model())
            .map_err(|e| map_azure_error(OP, &e))?;
        let plain = Zeroizing::new(result.result.unwrap_or_default());
        if plain.len() != DATA_KEY_LEN {
            return Err(Error::integrity());
        }
        DataKey::from_zeroizing(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_parse() {
        let id = KeyVaultKeyId::parse("https://v1.vault.azure.net/keys/llm/0123abcd").expect("ok");
        assert_eq!(id.vault_url, "https://v1.vault.azure.net");
        assert_eq!(id.name, "llm");
        assert_eq!(id.version.as_deref(), Some("0123abcd"));
        assert_eq!(id.url(), "https://v1.vault.azure.net/keys/llm/0123abcd");
        let id = KeyVaultKeyId::parse("https://h.managedhsm.azure.net/keys/k/").expect("ok");
        assert_eq!(id.version, None);
        for bad in [
            "llm",
            "http://v.vault.azure.net/keys/k",
            "https://v.vault.azure.net/secrets/k",
            "https://v.vault.azure.net/keys/",
            "https://v.vault.azure.net/keys/k/v/x",
            "https://v.vault.azure.net/keys/k_1",
        ] {
            assert!(KeyVaultKeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_validates() {
        let err = AzureKeyVaultProvider::builder()
            .build()
            .expect_err("no key");
        assert!(err.to_string().contains("with_key_id"), "{err}");
        let b = AzureKeyVaultProvider::builder().with_key_id("https://v.vault.azure.net/keys/k");
        let err = b
            .clone()
            .with_endpoint("127.0.0.1:1")
            .build()
            .expect_err("bad endpoint");
        assert!(matches!(err, Error::Config { .. }));
        let mut bad_alg = b.clone();
        bad_alg.algorithm = Some("RSA1_5".into());
        assert!(bad_alg.build().is_err());
        let p = b.build().expect("valid");
        assert_eq!(p.name(), "azure");
        assert_eq!(p.master_key_ref(), "https://v.vault.azure.net/keys/k");
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let p = AzureKeyVaultProvider::builder()
            .with_key_id("https://v.vault.azure.net/keys/k")
            .with_credential(AzureCredentialKind::ClientSecret {
                tenant_id: "tenant".into(),
                client_id: "client".into(),
                client_secret: String::from("fake-client-secret-0000").into(),
            })
            .build()
            .expect("valid");
        let text = format!("{p:?}");
        assert!(!text.contains("fake-client-secret"), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
    }
}
