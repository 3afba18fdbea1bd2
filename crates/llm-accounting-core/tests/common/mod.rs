//! What the manager's test files share: an AES-GCM test provider that counts its calls and
//! can be told to fail, names and keys, and a manager over the in-memory repository.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use llm_accounting_core::envelope::{aead_open, aead_seal};
use llm_accounting_core::{
    ApiKey, DataKey, EncryptionContext, Error, KeyIdentity, KmsProvider, ManagerOptions,
    MemoryKeyRepository, Result, SecureKeyManager, WrappedKey,
};

/// Wraps with AES-256-GCM under a fixed key, counting calls; can be told to fail.
#[derive(Debug)]
pub(crate) struct TestProvider {
    pub(crate) name: &'static str,
    pub(crate) key: [u8; 32],
    pub(crate) wraps: AtomicUsize,
    pub(crate) unwraps: AtomicUsize,
    pub(crate) fail: AtomicBool,
}

impl TestProvider {
    pub(crate) fn new(name: &'static str, seed: u8) -> Arc<Self> {
        Arc::new(TestProvider {
            name,
            key: [seed; 32],
            wraps: AtomicUsize::new(0),
            unwraps: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        })
    }
    fn unavailable(&self, operation: &'static str) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::ProviderUnavailable {
                provider: self.name.into(),
                operation,
                retryable: true,
                source: None,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl KmsProvider for TestProvider {
    fn name(&self) -> &str {
        self.name
    }
    fn master_key_ref(&self) -> String {
        "test-mk".into()
    }
    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        self.unavailable("wrap")?;
        self.wraps.fetch_add(1, Ordering::SeqCst);
        let (nonce, ct) = aead_seal(&self.key, &context.canonical_bytes(), key.expose_secret())?;
        Ok(WrappedKey {
            provider: self.name.into(),
            master_key_ref: self.master_key_ref(),
            ciphertext: [nonce.as_slice(), &ct].concat(),
        })
    }
    async fn unwrap_key(&self, w: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        self.unavailable("unwrap")?;
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        // Slow enough that concurrent callers overlap.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if w.ciphertext.len() < 12 {
            return Err(Error::integrity());
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&w.ciphertext[..12]);
        DataKey::from_zeroizing(aead_open(
            &self.key,
            &nonce,
            &context.canonical_bytes(),
            &w.ciphertext[12..],
        )?)
    }
}

/// The identity of `service` and `user`, no project.
pub(crate) fn id(service: &str, user: Option<&str>) -> KeyIdentity {
    KeyIdentity::from_parts(service, user, None).expect("valid identity")
}

/// An API key of `s`.
pub(crate) fn key(s: &str) -> ApiKey {
    ApiKey::new(s.to_owned())
}

/// A manager over a fresh in-memory repository and a test provider.
pub(crate) struct Fixture {
    pub(crate) provider: Arc<TestProvider>,
    pub(crate) repo: Arc<MemoryKeyRepository>,
    pub(crate) manager: SecureKeyManager,
}

/// A [`Fixture`] with `options`.
pub(crate) fn fixture(options: ManagerOptions) -> Fixture {
    let provider = TestProvider::new("test", 7);
    let repo = Arc::new(MemoryKeyRepository::new());
    let manager = SecureKeyManager::builder(provider.clone(), repo.clone())
        .options(options)
        .build();
    Fixture {
        provider,
        repo,
        manager,
    }
}
