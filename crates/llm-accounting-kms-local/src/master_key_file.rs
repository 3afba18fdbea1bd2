//! The master key file: reading, creating (0600, atomically) and adding versions.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use llm_accounting_core::files::PrivatePath;
use llm_accounting_core::{Error, Result, random_bytes};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

const HEADER: &str = "\
# llm-accounting local master key file. KEEP SECRET: with this file and the database anyone can
# read every stored API key. Do not edit by hand. One master key per line, `v<N> <base64>`;
# the last line wraps new keys, earlier lines still unwrap what they wrapped.
";

/// One master-key version: its reference (`v<N>:<fingerprint>`) and 32 secret bytes.
pub struct MasterKey {
    reference: String,
    key: Box<[u8; 32]>,
}

impl MasterKey {
    fn new(version: u32, key: Box<[u8; 32]>) -> Self {
        // The fingerprint names the key so that a different file is recognised as such; it is a
        // truncated domain-separated hash and reveals nothing usable about the key.
        let mut h = Sha256::new();
        h.update(b"llm-accounting/local-master-key-fingerprint/v1");
        h.update(key.as_slice());
        let fp: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        MasterKey {
            reference: format!("v{version}:{fp}"),
            key,
        }
    }

    /// The reference recorded with wrapped keys, e.g. `v2:1f2e3d4c5b6a7988`.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.key
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, [REDACTED])", self.reference)
    }
}

/// The parsed contents of a master key file.
#[derive(Debug)]
pub struct MasterKeyFile {
    path: PathBuf,
    keys: Vec<MasterKey>,
}

fn io_err(operation: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        operation,
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}

fn bad_file(path: &Path, what: &str) -> Error {
    Error::config(format!(
        "master key file {} is not valid: {what}",
        path.display()
    ))
}

impl MasterKeyFile {
    /// Opens `path`, creating it with one fresh key if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::open(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_new(path)?;
                tracing::info!(path = %path.display(), "created a new local master key file");
                Self::open(path)
            }
            Err(e) => Err(io_err("reading master key file", path, e)),
        }
    }

    /// Opens an existing file, refusing it if group or others may read or write it, or if
    /// another user owns it.
    ///
    /// A missing file is an [`Error::Config`] naming it.
    pub fn open(path: &Path) -> Result<Self> {
        if let Err(e) = fs::symlink_metadata(path)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            return Err(Error::config(format!(
                "master key file {} does not exist",
                path.display()
            )));
        }
        check_permissions(path)?;
        let text = Zeroizing::new(
            fs::read_to_string(path).map_err(|e| io_err("reading master key file", path, e))?,
        );
        let keys = parse(path, &text)?;
        Ok(MasterKeyFile {
            path: path.to_owned(),
            keys,
        })
    }

    /// Appends a fresh key version to `path` (rewriting it atomically) and returns its reference.
    pub fn add_version(path: &Path) -> Result<String> {
        let current = Self::open(path)?;
        let next = current
            .keys
            .iter()
            .map(|k| parse_version(&k.reference))
            .max()
            .unwrap_or(0)
            + 1;
        let mut entries: Vec<(u32, &[u8; 32])> = current
            .keys
            .iter()
            .map(|k| (parse_version(&k.reference), k.expose_secret()))
            .collect();
        let fresh = fresh_key()?;
        entries.push((next, &fresh));
        let text = render(&entries);
        write_atomically(path, &text, true)?;
        Ok(MasterKey::new(next, fresh).reference.clone())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every version, oldest first.
    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// The version new keys are wrapped with (the last).
    pub fn primary(&self) -> &MasterKey {
        // `parse` guarantees at least one key.
        &self.keys[self.keys.len() - 1]
    }

    /// The version with this reference.
    pub fn find(&self, reference: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.reference == reference)
    }
}

/// The version number in a reference `v<N>:<fingerprint>` (0 if there is none).
pub(crate) fn parse_version(reference: &str) -> u32 {
    reference
        .strip_prefix('v')
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn fresh_key() -> Result<Box<[u8; 32]>> {
    let mut k = Box::new([0u8; 32]);
    random_bytes(k.as_mut_slice())?;
    Ok(k)
}

fn render(entries: &[(u32, &[u8; 32])]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::from(HEADER));
    for (version, key) in entries {
        let b64 = Zeroizing::new(STANDARD.encode(key.as_slice()));
        text.push_str(&format!("v{version} {}\n", b64.as_str()));
    }
    text
}

fn parse(path: &Path, text: &str) -> Result<Vec<MasterKey>> {
    let mut keys: Vec<MasterKey> = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(tag), Some(b64), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad_file(path, &format!("line {} is malformed", lineno + 1)));
        };
        let version: u32 = tag
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| bad_file(path, &format!("line {} has no version", lineno + 1)))?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(b64)
                .map_err(|_| bad_file(path, &format!("line {} is not base64", lineno + 1)))?,
        );
        if bytes.len() != 32 {
            return Err(bad_file(
                path,
                &format!("line {} is not a 256-bit key", lineno + 1),
            ));
        }
        if keys.iter().any(|k| parse_version(&k.reference) == version) {
            return Err(bad_file(path, &format!("version v{version} appears twice")));
        }
        let mut key = Box::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        keys.push(MasterKey::new(version, key));
    }
    if keys.is_empty() {
        return Err(bad_file(path, "it holds no key"));
    }
    Ok(keys)
}

fn create_new(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let key = fresh_key()?;
    let text = render(&[(1, &key)]);
    write_atomically(path, &text, false)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err("creating directory", dir, e))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_err("creating directory", dir, e))
}

/// Writes `text` to a fresh 0600 temporary file beside `path`, then moves it into place:
/// replacing `path` if `replace`, else only if `path` still does not exist (a second process
/// creating the file at the same moment loses the race and reads the winner's file).
fn write_atomically(path: &Path, text: &str, replace: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("master.key"),
        uuid_like()?
    ));
    let result = (|| {
        let mut f = open_private(&tmp)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err("writing master key file", &tmp, e))?;
        if replace {
            fs::rename(&tmp, path).map_err(|e| io_err("replacing master key file", path, e))
        } else {
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(io_err("creating master key file", path, e)),
            }
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn uuid_like() -> Result<String> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(unix)]
fn open_private(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("creating master key file", path, e))
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err("creating master key file", path, e))
}

/// Refuses a file that group or others may read or write, or that another user owns.
fn check_permissions(path: &Path) -> Result<()> {
    llm_accounting_core::files::check_existing(path, PrivatePath::MasterKeyFile)
}
