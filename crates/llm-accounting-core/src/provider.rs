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

impl WrappedKey {
    /// A data key wrapped by `provider` under `master_key_ref`.
    pub fn new(provider: &str, master_key_ref: impl Into<String>, ciphertext: Vec<u8>) -> Self {
        WrappedKey {
            provider: provider.to_owned(),
            master_key_ref: master_key_ref.into(),
            ciphertext,
        }
    }

    /// Checks that this key names `provider` and holds at least `min_len` bytes, before a
    /// provider tries to unwrap it: anything else was not made by that provider, and is the
    /// integrity error.
    pub fn check_made_by(&self, provider: &str, min_len: usize) -> Result<()> {
        if self.provider != provider || self.ciphertext.len() < min_len.max(1) {
            return Err(crate::Error::integrity());
        }
        Ok(())
    }
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
    /// must be rewrapped before it is retired; a rewrap with `check_only` counts them.
    fn is_retired(&self, master_key_ref: &str) -> bool {
        let _ = master_key_ref;
        false
    }

    /// Whether this provider unwraps data keys whose [`WrappedKey::provider`] is `provider`:
    /// its own name; a layer that wraps in more than one way (branch keys) also answers to
    /// the other names it writes.
    fn handles(&self, provider: &str) -> bool {
        provider == self.name()
    }

    /// Whether `wrapped`, the data key of `context`, is already where this provider would
    /// wrap it now, so that a rewrap leaves it alone: by default, under this provider's
    /// current master key. The branch layer also checks the branch and its version.
    async fn is_current(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<bool> {
        let _ = context;
        Ok(wrapped.provider == self.name() && wrapped.master_key_ref == self.master_key_ref())
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

/// The calls of a [`KmsProvider`] that reach the KMS, for layers that act around each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KmsCall {
    /// [`KmsProvider::wrap_key`].
    Wrap,
    /// [`KmsProvider::unwrap_key`].
    Unwrap,
    /// [`KmsProvider::generate_data_key`].
    GenerateDataKey,
}

impl KmsCall {
    /// The operation's name in errors and logs.
    pub(crate) fn operation(self) -> &'static str {
        match self {
            KmsCall::Wrap => "wrap",
            KmsCall::Unwrap => "unwrap",
            KmsCall::GenerateDataKey => "generate data key",
        }
    }
}

/// Implements [`KmsProvider`] for a wrapper by forwarding every method to an inner provider:
/// the one mechanism behind the `Arc`/`Box` impls and every layer, so that no method (a
/// defaulted one included) can be left out: the impl denies `clippy::missing_trait_methods`.
///
/// - `forward_kms_provider!(impl [T: KmsProvider + ?Sized] for Arc<T>, inner: |s| &**s);`
///   forwards each call unchanged;
/// - `..., around: method` passes each call that reaches the KMS through
///   `self.method(KmsCall, || inner_call)`, an async method that may call the closure once
///   (timeout, metrics) or several times (retry). Name, master-key reference, retirement,
///   the names handled and currency are always the inner provider's.
macro_rules! forward_kms_provider {
    (impl [$($generics:tt)*] for $ty:ty, inner: |$s:ident| $inner:expr) => {
        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($generics)*> $crate::KmsProvider for $ty {
            fn name(&self) -> &str {
                let $s = self;
                $inner.name()
            }
            fn master_key_ref(&self) -> String {
                let $s = self;
                $inner.master_key_ref()
            }
            fn is_retired(&self, master_key_ref: &str) -> bool {
                let $s = self;
                $inner.is_retired(master_key_ref)
            }
            fn handles(&self, provider: &str) -> bool {
                let $s = self;
                $inner.handles(provider)
            }
            async fn is_current(
                &self,
                wrapped: &$crate::WrappedKey,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<bool> {
                let $s = self;
                $inner.is_current(wrapped, context).await
            }
            async fn wrap_key(
                &self,
                key: &$crate::DataKey,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<$crate::WrappedKey> {
                let $s = self;
                $inner.wrap_key(key, context).await
            }
            async fn unwrap_key(
                &self,
                wrapped: &$crate::WrappedKey,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<$crate::DataKey> {
                let $s = self;
                $inner.unwrap_key(wrapped, context).await
            }
            async fn generate_data_key(
                &self,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<($crate::DataKey, $crate::WrappedKey)> {
                let $s = self;
                $inner.generate_data_key(context).await
            }
        }
    };
    (impl [$($generics:tt)*] for $ty:ty, inner: |$s:ident| $inner:expr, around: $around:ident) => {
        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($generics)*> $crate::KmsProvider for $ty {
            fn name(&self) -> &str {
                let $s = self;
                $inner.name()
            }
            fn master_key_ref(&self) -> String {
                let $s = self;
                $inner.master_key_ref()
            }
            fn is_retired(&self, master_key_ref: &str) -> bool {
                let $s = self;
                $inner.is_retired(master_key_ref)
            }
            fn handles(&self, provider: &str) -> bool {
                let $s = self;
                $inner.handles(provider)
            }
            async fn is_current(
                &self,
                wrapped: &$crate::WrappedKey,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<bool> {
                let $s = self;
                $inner.is_current(wrapped, context).await
            }
            async fn wrap_key(
                &self,
                key: &$crate::DataKey,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<$crate::WrappedKey> {
                self.$around($crate::provider::KmsCall::Wrap, || {
                    let $s = self;
                    $inner.wrap_key(key, context)
                })
                .await
            }
            async fn unwrap_key(
                &self,
                wrapped: &$crate::WrappedKey,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<$crate::DataKey> {
                self.$around($crate::provider::KmsCall::Unwrap, || {
                    let $s = self;
                    $inner.unwrap_key(wrapped, context)
                })
                .await
            }
            async fn generate_data_key(
                &self,
                context: &$crate::EncryptionContext,
            ) -> $crate::Result<($crate::DataKey, $crate::WrappedKey)> {
                self.$around($crate::provider::KmsCall::GenerateDataKey, || {
                    let $s = self;
                    $inner.generate_data_key(context)
                })
                .await
            }
        }
    };
}

pub(crate) use forward_kms_provider;

forward_kms_provider!(impl [T: KmsProvider + ?Sized] for Arc<T>, inner: |s| (**s));
forward_kms_provider!(impl [T: KmsProvider + ?Sized] for Box<T>, inner: |s| (**s));
