//! A scripted provider for the layers' tests.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::{DataKey, EncryptionContext, Error, KeyIdentity, KmsProvider, Result, WrappedKey};

/// What one call to the fake does.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Ok,
    /// Retryable unavailable.
    Down,
    /// Non-retryable unavailable.
    Broken,
    Denied,
    Integrity,
    /// Takes this long, then succeeds.
    Slow(Duration),
}

/// A provider that follows a script, one step per call (then succeeds), counting calls.
#[derive(Debug)]
pub(super) struct Fake {
    pub(super) script: Mutex<VecDeque<Step>>,
    pub(super) calls: AtomicU32,
}

impl Fake {
    pub(super) fn new(steps: &[Step]) -> Arc<Self> {
        Arc::new(Fake {
            script: Mutex::new(steps.iter().copied().collect()),
            calls: AtomicU32::new(0),
        })
    }

    pub(super) fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn step(&self, operation: &'static str) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = self
            .script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or(Step::Ok);
        let unavailable = |retryable| Error::ProviderUnavailable {
            provider: "fake".into(),
            operation,
            retryable,
            source: Some(Arc::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        };
        match step {
            Step::Ok => Ok(()),
            Step::Down => Err(unavailable(true)),
            Step::Broken => Err(unavailable(false)),
            Step::Denied => Err(Error::AccessDenied {
                provider: "fake".into(),
                operation,
                reason: "the master key is disabled".into(),
                source: None,
            }),
            Step::Integrity => Err(Error::integrity()),
            Step::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl KmsProvider for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn master_key_ref(&self) -> String {
        "fake-mk".into()
    }
    async fn wrap_key(&self, _key: &DataKey, _c: &EncryptionContext) -> Result<WrappedKey> {
        self.step("wrap").await?;
        Ok(WrappedKey {
            provider: "fake".into(),
            master_key_ref: "fake-mk".into(),
            ciphertext: vec![1, 2, 3],
        })
    }
    async fn unwrap_key(&self, _w: &WrappedKey, _c: &EncryptionContext) -> Result<DataKey> {
        self.step("unwrap").await?;
        DataKey::from_slice(&[7u8; 32])
    }
}

pub(super) fn ctx() -> EncryptionContext {
    EncryptionContext::new(Uuid::nil(), KeyIdentity::new("openai").expect("valid"), 1)
}

pub(super) fn wrapped() -> WrappedKey {
    WrappedKey {
        provider: "fake".into(),
        master_key_ref: "fake-mk".into(),
        ciphertext: vec![1, 2, 3],
    }
}
