//! The self-describing ciphertext of one key version, and sealing/opening it.
//!
//! Layout of format 1 (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `LAK` + format version (1) |
//! | 1 | algorithm (1 = AES-256-GCM, 96-bit nonce, 128-bit tag) |
//! | 1 + n | provider name |
//! | 2 + n | master-key reference |
//! | 4 | key version |
//! | 12 | nonce |
//! | 2 + n | wrapped data key |
//! | 4 + n | ciphertext with tag |
//!
//! The sealed API key's associated data is the canonical [`EncryptionContext`]; the header is
//! not in it because a master-key rewrap changes the provider fields without re-encrypting the
//! key. Those fields are protected by the KMS instead: a data key unwraps only under the master
//! key and context it was wrapped with. Any malformed envelope is an [`Error::Integrity`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::{ApiKey, DataKey, EncryptionContext, Error, KmsProvider, Result, WrappedKey};

const MAGIC: &[u8; 3] = b"LAK";
/// Algorithm id of AES-256-GCM with a random 96-bit nonce.
pub const ALG_AES_256_GCM: u8 = 1;
const NONCE_LEN: usize = 12;

/// One sealed key version: header, nonce, wrapped data key and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope format version.
    pub format: u8,
    /// AEAD algorithm id.
    pub algorithm: u8,
    /// Key version this envelope belongs to (also in the context).
    pub key_version: u32,
    /// The wrapped data key, with provider and master-key reference.
    pub wrapped: WrappedKey,
    /// AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// AES-GCM ciphertext followed by the tag.
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// Encodes to bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let w = &self.wrapped;
        let too_long = |what: &str| Error::invalid("envelope", format!("{what} is too long"));
        let provider_len = u8::try_from(w.provider.len()).map_err(|_| too_long("provider name"))?;
        let mk_len =
            u16::try_from(w.master_key_ref.len()).map_err(|_| too_long("master key reference"))?;
        let wk_len = u16::try_from(w.ciphertext.len()).map_err(|_| too_long("wrapped key"))?;
        let ct_len = u32::try_from(self.ciphertext.len()).map_err(|_| too_long("ciphertext"))?;
        let mut out = Vec::with_capacity(
            4 + 1
                + 1
                + w.provider.len()
                + 2
                + w.master_key_ref.len()
                + 4
                + NONCE_LEN
                + 2
                + w.ciphertext.len()
                + 4
                + self.ciphertext.len(),
        );
        out.extend_from_slice(MAGIC);
        out.push(self.format);
        out.push(self.algorithm);
        out.push(provider_len);
        out.extend_from_slice(w.provider.as_bytes());
        out.extend_from_slice(&mk_len.to_be_bytes());
        out.extend_from_slice(w.master_key_ref.as_bytes());
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&wk_len.to_be_bytes());
        out.extend_from_slice(&w.ciphertext);
        out.extend_from_slice(&ct_len.to_be_bytes());
        out.extend_from_slice(&self.ciphertext);
        Ok(out)
    }

    /// Decodes bytes made by [`Envelope::to_bytes`]. Anything else (wrong magic, unknown format
    /// or algorithm, truncation, trailing bytes, non-UTF-8 names) is [`Error::Integrity`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader(bytes);
        if r.take(3)? != MAGIC {
            return Err(Error::integrity());
        }
        let format = r.u8()?;
        let algorithm = r.u8()?;
        if format != crate::FORMAT_VERSION || algorithm != ALG_AES_256_GCM {
            return Err(Error::integrity());
        }
        let n = r.u8()? as usize;
        let provider = r.string(n)?;
        let n = r.u16()? as usize;
        let master_key_ref = r.string(n)?;
        let key_version = r.u32()?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(r.take(NONCE_LEN)?);
        let n = r.u16()? as usize;
        let wrapped = r.take(n)?.to_vec();
        let n = r.u32()? as usize;
        let ciphertext = r.take(n)?.to_vec();
        if !r.0.is_empty() {
            return Err(Error::integrity());
        }
        Ok(Envelope {
            format,
            algorithm,
            key_version,
            wrapped: WrappedKey {
                provider,
                master_key_ref,
                ciphertext: wrapped,
            },
            nonce,
            ciphertext,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::integrity());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, n: usize) -> Result<String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::integrity())
    }
}

/// Encrypts `plaintext` with AES-256-GCM under `key`, returning (nonce, ciphertext+tag).
pub fn aead_seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    crate::secret::random_bytes(&mut nonce)?;
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::invalid("plaintext", "too long to encrypt"))?;
    Ok((nonce, ct))
}

/// Decrypts what [`aead_seal`] made. Any failure is [`Error::Integrity`].
pub fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::integrity())
}

/// Seals `key` for `context`: a fresh data key from `provider`, AES-256-GCM with the canonical
/// context as associated data, the data key wrapped under the same context.
pub async fn seal(
    provider: &dyn KmsProvider,
    context: &EncryptionContext,
    key: &ApiKey,
) -> Result<Envelope> {
    let (dek, wrapped) = provider.generate_data_key(context).await?;
    let (nonce, ciphertext) = aead_seal(
        dek.expose_secret(),
        &context.canonical_bytes(),
        key.expose_secret().as_bytes(),
    )?;
    Ok(Envelope {
        format: context.format(),
        algorithm: ALG_AES_256_GCM,
        key_version: context.version(),
        wrapped,
        nonce,
        ciphertext,
    })
}

/// Opens an envelope sealed for `context`. The envelope's version must be the context's; the
/// data key is unwrapped by `provider` under the same context.
pub async fn open(
    provider: &dyn KmsProvider,
    context: &EncryptionContext,
    envelope: &Envelope,
) -> Result<ApiKey> {
    if envelope.key_version != context.version() || envelope.format != context.format() {
        return Err(Error::integrity());
    }
    let dek = provider.unwrap_key(&envelope.wrapped, context).await?;
    open_with_key(&dek, context, envelope)
}

/// Opens an envelope with an already unwrapped data key.
pub fn open_with_key(
    dek: &DataKey,
    context: &EncryptionContext,
    envelope: &Envelope,
) -> Result<ApiKey> {
    let plain = aead_open(
        dek.expose_secret(),
        &envelope.nonce,
        &context.canonical_bytes(),
        &envelope.ciphertext,
    )?;
    // `plain` is zeroized when dropped; the String below is moved into a zeroizing ApiKey.
    let text = std::str::from_utf8(&plain).map_err(|_| Error::integrity())?;
    Ok(ApiKey::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            format: 1,
            algorithm: ALG_AES_256_GCM,
            key_version: 7,
            wrapped: WrappedKey {
                provider: "local".into(),
                master_key_ref: "v1:0011223344556677".into(),
                ciphertext: vec![9; 60],
            },
            nonce: [3; 12],
            ciphertext: vec![5; 40],
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let bytes = e.to_bytes().expect("encode");
        assert_eq!(Envelope::from_bytes(&bytes).expect("decode"), e);
    }

    #[test]
    fn truncation_and_trailing_bytes_are_integrity_errors() {
        let bytes = sample().to_bytes().expect("encode");
        for n in 0..bytes.len() {
            assert!(matches!(
                Envelope::from_bytes(&bytes[..n]),
                Err(Error::Integrity { .. })
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Envelope::from_bytes(&longer),
            Err(Error::Integrity { .. })
        ));
    }

    #[test]
    fn aead_rejects_wrong_aad() {
        let key = [7u8; 32];
        let (n, ct) = aead_seal(&key, b"ctx-a", b"secret").expect("seal");
        assert_eq!(
            &aead_open(&key, &n, b"ctx-a", &ct).expect("open")[..],
            b"secret"
        );
        assert!(aead_open(&key, &n, b"ctx-b", &ct).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Envelope::from_bytes(&bytes);
        }

        #[test]
        fn decoding_mutated_envelopes_never_panics(idx in 0usize..200, val in any::<u8>()) {
            let mut bytes = sample().to_bytes().expect("encode");
            let i = idx % bytes.len();
            bytes[i] = val;
            let _ = Envelope::from_bytes(&bytes);
        }
    }
}
