//! The provider and its builder.

use std::fmt;

use async_trait::async_trait;
use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_kms_v1::client::KeyManagementService;
use llm_accounting_core::{
    DATA_KEY_LEN, DataKey, EncryptionContext, Error, KmsProvider, Result, WrappedKey,
    required_setting,
};
use zeroize::Zeroizing;

use crate::error::{self, map_gax_error};
use crate::{GcpCredentials, GcpKmsConfig, PROVIDER_NAME};

/// Wraps data keys with Google Cloud KMS. Build it with [`GcpKmsProvider::builder`].
///
/// The client is made on first use (it is built asynchronously), so building the provider
/// neither needs a runtime nor touches the network.
pub struct GcpKmsProvider {
    key_name: String,
    client: tokio::sync::OnceCell<KeyManagementService>,
    settings: GcpKmsProviderBuilder,
}

impl fmt::Debug for GcpKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpKmsProvider")
            .field("key_name", &self.key_name)
            .field("settings", &self.settings)
            .field("client_ready", &self.client.initialized())
            .finish()
    }
}

/// Settings of a [`GcpKmsProvider`]; validated by [`GcpKmsProviderBuilder::build`].
#[derive(Clone, Default)]
pub struct GcpKmsProviderBuilder {
    key_name: Option<String>,
    endpoint: Option<String>,
    credentials: Option<Credentials>,
}

impl fmt::Debug for GcpKmsProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpKmsProviderBuilder")
            .field("key_name", &self.key_name)
            .field("endpoint", &self.endpoint)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map_or("default", |_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Whether `name` has the shape `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
fn is_crypto_key_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 8
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keyRings"
        && parts[6] == "cryptoKeys"
        && parts.iter().all(|p| !p.is_empty())
}

impl GcpKmsProviderBuilder {
    /// The master key: `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    pub fn with_key_name(mut self, name: impl Into<String>) -> Self {
        self.key_name = Some(name.into());
        self
    }

    /// Sends requests to this endpoint (an emulator, a private endpoint) instead of
    /// `https://cloudkms.googleapis.com`.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Uses these credentials instead of Application Default Credentials (the default: the file
    /// named by `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file, or the metadata server).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sends no credentials at all (emulators such as drongo).
    pub fn with_anonymous_credentials(self) -> Self {
        self.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
    }

    /// Applies `config`: its credentials (anonymous ones, or Application Default
    /// Credentials: the builder's default).
    pub fn with_config(self, config: &GcpKmsConfig) -> Self {
        match config.credentials {
            GcpCredentials::Default => self,
            GcpCredentials::Anonymous => self.with_anonymous_credentials(),
        }
    }

    /// Checks the settings and makes the provider. The client itself is made on first use.
    pub fn build(self) -> Result<GcpKmsProvider> {
        let key_name = required_setting(
            self.key_name.as_deref(),
            "the Google Cloud KMS provider needs a master key: call `with_key_name` with a \
             CryptoKey name such as projects/P/locations/L/keyRings/R/cryptoKeys/K",
        )?;
        if !is_crypto_key_name(&key_name) {
            return Err(Error::config(format!(
                "`{key_name}` is not a Cloud KMS CryptoKey name: expected \
                 projects/P/locations/L/keyRings/R/cryptoKeys/K (without /cryptoKeyVersions/N: \
                 Cloud KMS picks the version)"
            )));
        }
        if let Some(url) = &self.endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::config(format!(
                "the KMS endpoint `{url}` is not an http:// or https:// URL"
            )));
        }
        Ok(GcpKmsProvider {
            key_name,
            client: tokio::sync::OnceCell::new(),
            settings: self,
        })
    }

    /// Makes the Cloud KMS client with these settings and no client-side retries.
    async fn client(&self) -> Result<KeyManagementService> {
        let mut b = KeyManagementService::builder().with_retry_policy(NeverRetry);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e.clone());
        }
        if let Some(c) = &self.credentials {
            b = b.with_credentials(c.clone());
        }
        b.build().await.map_err(|e| Error::Config {
            message: "cannot make the Google Cloud KMS client (check Application Default \
                      Credentials: GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth \
                      application-default login`)"
                .to_owned(),
            source: Some(std::sync::Arc::new(e)),
        })
    }
}

impl GcpKmsProvider {
    /// A builder; see [`GcpKmsProviderBuilder`].
    pub fn builder() -> GcpKmsProviderBuilder {
        GcpKmsProviderBuilder::default()
    }

    /// The configured `CryptoKey` name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    async fn client(&self) -> Result<&KeyManagementService> {
        self.client.get_or_try_init(|| self.settings.client()).await
    }
}

#[async_trait]
impl KmsProvider for GcpKmsProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    /// The `CryptoKey` name (the version is inside each ciphertext).
    fn master_key_ref(&self) -> String {
        self.key_name.clone()
    }

    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        let out = self
            .client()
            .await?
            .encrypt()
            .set_name(&self.key_name)
            .set_plaintext(key.expose_secret().to_vec())
            .set_additional_authenticated_data(context.canonical_bytes())
            .send()
            .await
            .map_err(|e| map_gax_error("wrap", "Encrypt", &e))?;
        if out.ciphertext.is_empty() {
            return Err(error::ERRORS.broken("wrap", "Encrypt", "the answer has no ciphertext"));
        }
        Ok(WrappedKey::new(
            PROVIDER_NAME,
            self.key_name.clone(),
            out.ciphertext.to_vec(),
        ))
    }

    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        wrapped.check_made_by(PROVIDER_NAME, 1)?;
        if !is_crypto_key_name(&wrapped.master_key_ref) {
            return Err(Error::integrity());
        }
        let out = self
            .client()
            .await?
            .decrypt()
            .set_name(&wrapped.master_key_ref)
            .set_ciphertext(wrapped.ciphertext.clone())
            .set_additional_authenticated_data(context.canonical_bytes())
            .send()
            .await
            .map_err(|e| map_gax_error("unwrap", "Decrypt", &e))?;
        let plain = Zeroizing::new(out.plaintext.to_vec());
        drop(out);
        if plain.len() != DATA_KEY_LEN {
            // Not a key we made: opaque integrity failure.
            return Err(Error::integrity());
        }
        DataKey::from_zeroizing(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

    #[test]
    fn build_needs_a_crypto_key_name_and_a_sane_endpoint() {
        let err = GcpKmsProvider::builder().build().expect_err("no key");
        assert!(err.to_string().contains("with_key_name"), "{err}");
        for bad in [
            "k",
            "projects/p/locations/global/keyRings/r",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects//locations/global/keyRings/r/cryptoKeys/k",
        ] {
            let err = GcpKmsProvider::builder()
                .with_key_name(bad)
                .build()
                .expect_err(bad);
            assert!(matches!(err, Error::Config { .. }), "{bad}: {err}");
        }
        let err = GcpKmsProvider::builder()
            .with_key_name(KEY)
            .with_endpoint("localhost:8080")
            .build()
            .expect_err("no scheme");
        assert!(err.to_string().contains("not an http"), "{err}");
        let p = GcpKmsProvider::builder()
            .with_key_name(format!(" {KEY} "))
            .with_endpoint("http://127.0.0.1:1")
            .build()
            .expect("valid");
        assert_eq!(p.name(), "gcp");
        assert_eq!(p.master_key_ref(), KEY);
    }

    #[test]
    fn debug_hides_credentials() {
        let p = GcpKmsProvider::builder()
            .with_key_name(KEY)
            .with_anonymous_credentials()
            .build()
            .expect("valid");
        let text = format!("{p:?}");
        assert!(text.contains("[REDACTED]") && text.contains(KEY), "{text}");
        assert!(!text.contains("Anonymous"), "{text}");
    }
}
