//! The KMS provider trait: wraps and unwraps data keys under a master key.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{DataKey, EncryptionContext, Result};

/// A data key wrapped (encrypted) under a provider's master key, with what is needed to unwrap
/// it again: the provider's name and the master-key reference (key id/ARN, key version URL,
/// CryptoKey name, or local master-key version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The provider that wrapped it (`local`, `aws`, ...).
    pub provider: String,
    /// The master key (and version, where the KMS has them) that wrapped it.
    pub master_key_ref: String,
    /// The wrapped bytes (not secret: useless without the master key).
    pub ciphertext: Vec<u8>,
}

/// A KMS holding master keys. Implementations only wrap and unwrap; retries, timeouts, caching
/// and metrics are layers around a provider.
///
/// Contract (checked by the conformance suite): `unwrap_key` of a `wrap_key` result with the
/// same context gives the same data key; any other context, or any changed byte, gives
/// [`crate::Error::Integrity`]; a KMS that cannot be reached gives
/// [`crate::Error::ProviderUnavailable`], never "no key".
#[async_trait]
pub trait KmsProvider: Send + Sync + Debug {
    /// The provider's stable name, recorded with every ciphertext (`local`, `aws`, `azure`, `gcp`).
    fn name(&self) -> &str;

    /// The master-key reference new keys are wrapped under.
    fn master_key_ref(&self) -> String;

    /// Whether `master_key_ref` names a master key (version) this provider no longer unwraps
    /// with, because it was retired below a minimum decryptable version. Records under it
    /// must be rewrapped before it is retired; `keys rewrap --check` reports them.
    fn is_retired(&self, master_key_ref: &str) -> bool {
        let _ = master_key_ref;
        false
    }

    /// Wraps `key` under the current master key, bound to `context`.
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey>;

    /// Unwraps a key made by [`KmsProvider::wrap_key`] with the same context.
    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey>;

    /// Makes a fresh data key and its wrapped form. The default generates locally and wraps;
    /// KMSs with a `GenerateDataKey` call may do both in one round trip.
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey)> {
        let key = DataKey::generate()?;
        let wrapped = self.wrap_key(&key, context).await?;
        Ok((key, wrapped))
    }
}

#[async_trait]
impl<T: KmsProvider + ?Sized> KmsProvider for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn master_key_ref(&self) -> String {
        (**self).master_key_ref()
    }
    fn is_retired(&self, master_key_ref: &str) -> bool {
        (**self).is_retired(master_key_ref)
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        (**self).wrap_key(key, context).await
    }
    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        (**self).unwrap_key(wrapped, context).await
    }
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey)> {
        (**self).generate_data_key(context).await
    }
}

#[async_trait]
impl<T: KmsProvider + ?Sized> KmsProvider for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn master_key_ref(&self) -> String {
        (**self).master_key_ref()
    }
    fn is_retired(&self, master_key_ref: &str) -> bool {
        (**self).is_retired(master_key_ref)
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        (**self).wrap_key(key, context).await
    }
    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        (**self).unwrap_key(wrapped, context).await
    }
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey)> {
        (**self).generate_data_key(context).await
    }
}
