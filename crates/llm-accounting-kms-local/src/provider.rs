//! The provider: AES-256-GCM key wrapping under the master keys of a [`MasterKeyFile`].

use std::path::Path;

use async_trait::async_trait;
use llm_accounting_core::envelope::{aead_open, aead_seal};
use llm_accounting_core::{DataKey, EncryptionContext, Error, KmsProvider, Result, WrappedKey};

use crate::master_key_file::{self, MasterKeyFile};
use crate::{LocalKmsConfig, PROVIDER_NAME};

const WRAP_DOMAIN: &[u8] = b"llm-accounting/local-wrap/v1";
const NONCE_LEN: usize = 12;

/// The local provider: AES-256-GCM key wrapping under master keys read from a file.
#[derive(Debug)]
pub struct LocalKmsProvider {
    file: MasterKeyFile,
    /// Master-key versions below this one are retired: not used to unwrap.
    min_version: u32,
}

impl LocalKmsProvider {
    /// Opens the master key file at `path`, creating it with one fresh master key (mode 0600)
    /// if it does not exist.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self> {
        Ok(LocalKmsProvider {
            file: MasterKeyFile::open_or_create(path.as_ref())?,
            min_version: 0,
        })
    }

    /// Opens an existing master key file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(LocalKmsProvider {
            file: MasterKeyFile::open(path.as_ref())?,
            min_version: 0,
        })
    }

    /// The provider over a master key file already opened (see [`MasterKeyFile::open_with`]).
    pub fn from_file(file: MasterKeyFile) -> Self {
        LocalKmsProvider {
            file,
            min_version: 0,
        }
    }

    /// Applies `config`'s `min_master_key_version` (0: none retired; see
    /// [`LocalKmsProvider::with_min_version`]). Its `master_key_file` is the caller's to resolve
    /// and open ([`MasterKeyFile::open_with`]).
    ///
    /// # Errors
    ///
    /// As [`LocalKmsProvider::with_min_version`].
    pub fn with_config(self, config: &LocalKmsConfig) -> Result<Self> {
        match config.min_master_key_version {
            0 => Ok(self),
            version => self.with_min_version(version),
        }
    }

    /// Adds a new master-key version to the file at `path` and makes it the one new keys are
    /// wrapped with. Returns its reference. Keys wrapped earlier stay readable.
    pub fn add_master_key_version(path: impl AsRef<Path>) -> Result<String> {
        MasterKeyFile::add_version(path.as_ref())
    }

    /// Retires every master-key version below `version` (like Vault's
    /// `min_decryption_version`): keys wrapped under them are refused with a clear
    /// [`Error::AccessDenied`] instead of being unwrapped. Rewrap them first
    /// (`SecureKeyManager::rewrap`; with `check_only` it lists what is left).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if that would retire the version new keys are wrapped with.
    pub fn with_min_version(mut self, version: u32) -> Result<Self> {
        let primary = master_key_file::parse_version(self.file.primary().reference());
        if version > primary {
            return Err(Error::config(format!(
                "the minimum master key version v{version} is above the newest one (v{primary}) \
                 in {}",
                self.file.path().display()
            )));
        }
        self.min_version = version;
        Ok(self)
    }

    /// The file the keys were read from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// References of every master-key version in the file, oldest first.
    pub fn master_key_refs(&self) -> Vec<String> {
        self.file
            .keys()
            .iter()
            .map(|k| k.reference().to_owned())
            .collect()
    }
}

fn aad(context: &EncryptionContext) -> Vec<u8> {
    let mut aad = WRAP_DOMAIN.to_vec();
    aad.extend_from_slice(&context.canonical_bytes());
    aad
}

#[async_trait]
impl KmsProvider for LocalKmsProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn master_key_ref(&self) -> String {
        self.file.primary().reference().to_owned()
    }

    fn is_retired(&self, master_key_ref: &str) -> bool {
        master_key_file::parse_version(master_key_ref) < self.min_version
    }

    async fn wrap_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        let master = self.file.primary();
        let (nonce, ct) = aead_seal(master.expose_secret(), &aad(context), key.expose_secret())?;
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + ct.len());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&ct);
        Ok(WrappedKey::new(
            PROVIDER_NAME,
            master.reference(),
            ciphertext,
        ))
    }

    async fn unwrap_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        wrapped.check_made_by(PROVIDER_NAME, NONCE_LEN)?;
        if self.is_retired(&wrapped.master_key_ref) {
            return Err(Error::AccessDenied {
                provider: PROVIDER_NAME.to_owned(),
                operation: "unwrap",
                reason: format!(
                    "master key {} is retired (minimum version v{}); it was not rewrapped \
                     before retirement",
                    wrapped.master_key_ref, self.min_version
                ),
                source: None,
            });
        }
        let Some(master) = self.file.find(&wrapped.master_key_ref) else {
            // Opaque to the caller (wrong key = integrity failure), but say why in the log: the
            // usual cause is pointing at another master key file.
            tracing::warn!(
                master_key = %wrapped.master_key_ref,
                file = %self.file.path().display(),
                "the key was wrapped under a master key that is not in this master key file"
            );
            return Err(Error::integrity());
        };
        let (nonce, ct) = wrapped.ciphertext.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let plain = aead_open(master.expose_secret(), &n, &aad(context), ct)?;
        DataKey::from_zeroizing(plain)
    }
}
