//! The provider and its builder.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use llm_accounting_core::{
    DATA_KEY_LEN, DataKey, EncryptionContext, Error, KmsProvider, Result, WrappedKey,
    required_setting,
};
use zeroize::Zeroizing;

use crate::error::{ERRORS, map_sdk_error};
use crate::{AwsKmsConfig, PROVIDER_NAME};

/// Wraps data keys with AWS KMS. Build it with [`AwsKmsProvider::builder`], or from a ready
/// SDK client with [`AwsKmsProvider::from_client`].
///
/// The SDK client is made on first use (loading the aws-config chain is asynchronous), so
/// building the provider neither needs a runtime nor touches the network.
pub struct AwsKmsProvider {
    key_id: String,
    /// The key ARN KMS reported for the configured key, once known.
    resolved: RwLock<Option<String>>,
    client: tokio::sync::OnceCell<Client>,
    settings: AwsKmsProviderBuilder,
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("key_id", &self.key_id)
            .field("resolved_key_arn", &self.resolved_key_arn())
            .field("settings", &self.settings)
            .field("client_ready", &self.client.initialized())
            .finish()
    }
}

/// Settings of an [`AwsKmsProvider`]; validated by [`AwsKmsProviderBuilder::build`].
///
/// Anything not set here comes from the standard aws-config chain: `AWS_REGION` (or the
/// profile), `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_KMS`, and credentials from the environment,
/// `AWS_PROFILE` and `~/.aws`, web identity, or the instance / task role.
#[derive(Clone, Default)]
pub struct AwsKmsProviderBuilder {
    key_id: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    credentials: Option<SharedCredentialsProvider>,
    connect_timeout: Option<Duration>,
}

impl fmt::Debug for AwsKmsProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProviderBuilder")
            .field("key_id", &self.key_id)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[REDACTED]"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl AwsKmsProviderBuilder {
    /// The master key: key id, key ARN, alias name (`alias/...`) or alias ARN.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// The AWS region (instead of `AWS_REGION` or the profile's).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Applies `config`: its region, if it names one.
    pub fn with_config(self, config: &AwsKmsConfig) -> Self {
        match &config.region {
            Some(region) => self.with_region(region),
            None => self,
        }
    }

    /// Sends requests to this endpoint (an emulator, a VPC endpoint) instead of the region's;
    /// wins over `AWS_ENDPOINT_URL`.
    pub fn with_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses these static credentials instead of the aws-config chain (tests, emulators).
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        let creds = Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "llm-accounting-static",
        );
        self.credentials = Some(SharedCredentialsProvider::new(creds));
        self
    }

    /// How long to wait for a TCP + TLS connection (the SDK's default is 3.1 s). The whole call
    /// is bounded by the timeout layer, not here.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Checks the settings and makes the provider. The SDK client itself is made on first use.
    pub fn build(self) -> Result<AwsKmsProvider> {
        let key_id = required_setting(
            self.key_id.as_deref(),
            "the AWS KMS provider needs a master key: call `with_key_id` with a key id, key ARN \
             or alias such as alias/llm-accounting",
        )?;
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::config(format!(
                "the KMS endpoint `{url}` is not an http:// or https:// URL"
            )));
        }
        if matches!(&self.region, Some(r) if r.trim().is_empty()) {
            return Err(Error::config("the AWS region is empty"));
        }
        Ok(AwsKmsProvider {
            key_id,
            resolved: RwLock::new(None),
            client: tokio::sync::OnceCell::new(),
            settings: self,
        })
    }

    /// Loads the aws-config chain with these settings and makes the KMS client.
    async fn client(&self) -> Result<Client> {
        // The region is resolved once, here, before anything else is loaded: left to the
        // loader, each part of the chain that needs a region looks for it again (three IMDS
        // attempts, three warnings, on a machine without a region), and a missing region is
        // then a setup problem reported in one line before any credential is looked up.
        let region = match &self.region {
            Some(r) => Some(Region::new(r.clone())),
            None => {
                aws_config::default_provider::region::DefaultRegionChain::builder()
                    .build()
                    .region()
                    .await
            }
        };
        let Some(region) = region else {
            return Err(Error::config(
                "no AWS region for the KMS provider: set AWS_REGION (or a region in the AWS \
                 profile)",
            ));
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        if let Some(t) = self.connect_timeout {
            loader = loader.timeout_config(TimeoutConfig::builder().connect_timeout(t).build());
        }
        let sdk = loader.load().await;
        let conf = aws_sdk_kms::config::Builder::from(&sdk)
            .retry_config(RetryConfig::disabled())
            .build();
        Ok(Client::from_conf(conf))
    }
}

impl AwsKmsProvider {
    /// A builder; see [`AwsKmsProviderBuilder`].
    pub fn builder() -> AwsKmsProviderBuilder {
        AwsKmsProviderBuilder::default()
    }

    /// A provider using `client` (its region, endpoint and credentials) and the master key
    /// `key_id`. The client's own retries are turned off: retrying is the retry layer's job, and
    /// each call of this provider is then exactly one request.
    pub fn from_client(client: &Client, key_id: impl Into<String>) -> Result<Self> {
        let conf = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        let provider = AwsKmsProvider::builder().with_key_id(key_id).build()?;
        provider
            .client
            .set(Client::from_conf(conf))
            .map_err(|_| Error::config("the KMS client was already set"))?;
        Ok(provider)
    }

    /// The configured master key (key id, ARN or alias), as given.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The ARN KMS reported for the configured key, once a call has been made.
    pub fn resolved_key_arn(&self) -> Option<String> {
        self.resolved.read().ok().and_then(|r| r.clone())
    }

    async fn client(&self) -> Result<&Client> {
        self.client.get_or_try_init(|| self.settings.client()).await
    }

    /// Remembers the key ARN KMS used, and returns it.
    fn note_key_arn(
        &self,
        operation: &'static str,
        call: &'static str,
        arn: Option<String>,
    ) -> Result<String> {
        let arn = arn
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ERRORS.broken(operation, call, "the answer has no KeyId"))?;
        if let Ok(mut r) = self.resolved.write()
            && r.as_deref() != Some(arn.as_str())
        {
            *r = Some(arn.clone());
        }
        Ok(arn)
    }
}

/// The context as the KMS `EncryptionContext` map.
fn kms_context(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .to_map()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn missing(operation: &'static str, call: &'static str, what: &str) -> Error {
    ERRORS.broken(operation, call, format!("the answer has no {what}"))
}

/// A data key from the plaintext KMS returned, wiped when dropped whatever happens.
fn data_key(plaintext: Option<Blob>) -> Result<DataKey> {
    let plain = Zeroizing::new(plaintext.map(Blob::into_inner).unwrap_or_default());
    if plain.len() != DATA_KEY_LEN {
        // Not a key we made (KMS decrypted something else): opaque integrity failure.
        return Err(Error::integrity());
    }
    DataKey::from_zeroizing(plain)
}

#[async_trait]
impl KmsProvider for AwsKmsProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    /// The key ARN once KMS has reported it, else the configured key id.
    fn master_key_ref(&self) -> String {
        self.resolved_key_arn()
            .unwrap_or_else(|| self.key_id.clone())
    }

    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        const OP: &str = "wrap";
        const CALL: &str = "Encrypt";
        let out = self
            .client()
            .await?
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.expose_secret().to_vec()))
            .set_encryption_context(Some(kms_context(context)))
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, CALL, e))?;
        let ciphertext = out
            .ciphertext_blob
            .ok_or_else(|| missing(OP, CALL, "CiphertextBlob"))?
            .into_inner();
        let master_key_ref = self.note_key_arn(OP, CALL, out.key_id)?;
        Ok(WrappedKey::new(PROVIDER_NAME, master_key_ref, ciphertext))
    }

    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        wrapped.check_made_by(PROVIDER_NAME, 1)?;
        let mut request = self
            .client()
            .await?
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(Some(kms_context(context)));
        // Naming the recorded key makes KMS refuse a ciphertext of any other key, and lets
        // IAM policies allow Decrypt on this key only.
        if !wrapped.master_key_ref.is_empty() {
            request = request.key_id(&wrapped.master_key_ref);
        }
        let out = request
            .send()
            .await
            .map_err(|e| map_sdk_error("unwrap", "Decrypt", e))?;
        data_key(out.plaintext)
    }

    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey)> {
        const OP: &str = "generate data key";
        const CALL: &str = "GenerateDataKey";
        let out = self
            .client()
            .await?
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(kms_context(context)))
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, CALL, e))?;
        let key = data_key(out.plaintext).map_err(|_| missing(OP, CALL, "32-byte Plaintext"))?;
        let ciphertext = out
            .ciphertext_blob
            .ok_or_else(|| missing(OP, CALL, "CiphertextBlob"))?
            .into_inner();
        let master_key_ref = self.note_key_arn(OP, CALL, out.key_id)?;
        Ok((
            key,
            WrappedKey::new(PROVIDER_NAME, master_key_ref, ciphertext),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_needs_a_key_id_and_a_sane_endpoint() {
        let err = AwsKmsProvider::builder().build().expect_err("no key");
        assert!(err.to_string().contains("with_key_id"), "{err}");
        let err = AwsKmsProvider::builder()
            .with_key_id("  ")
            .build()
            .expect_err("blank key");
        assert!(matches!(err, Error::Config { .. }));
        let err = AwsKmsProvider::builder()
            .with_key_id("alias/x")
            .with_endpoint_url("localhost:4566")
            .build()
            .expect_err("no scheme");
        assert!(err.to_string().contains("not an http"), "{err}");
        let p = AwsKmsProvider::builder()
            .with_key_id("alias/x")
            .with_endpoint_url("http://127.0.0.1:1")
            .with_region("us-east-1")
            .build()
            .expect("valid");
        assert_eq!(p.name(), "aws");
        assert_eq!(
            p.master_key_ref(),
            "alias/x",
            "before any call: the configured id"
        );
    }

    #[test]
    fn debug_hides_credentials() {
        let b = AwsKmsProvider::builder()
            .with_key_id("alias/x")
            .with_static_credentials("AKIDFAKEEXAMPLE", "fake-secret-access-key-0000");
        let text = format!("{b:?}");
        assert!(!text.contains("fake-secret-access-key"), "{text}");
        assert!(!text.contains("AKIDFAKEEXAMPLE"), "{text}");
        let p = b.build().expect("valid");
        let text = format!("{p:?}");
        assert!(!text.contains("fake-secret-access-key"), "{text}");
        assert!(text.contains("alias/x"), "{text}");
    }

    #[test]
    fn context_map_has_the_documented_keys() {
        let ctx = EncryptionContext::new(
            uuid::Uuid::nil(),
            llm_accounting_core::KeyIdentity::from_parts("openai", Some("alice"), Some("p"))
                .expect("valid"),
            2,
        );
        let m = kms_context(&ctx);
        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["format", "project", "record", "service", "user", "version"]
        );
        assert_eq!(m["service"], "openai");
        assert_eq!(m["user"], "alice");
        assert_eq!(m["version"], "2");
    }
}
