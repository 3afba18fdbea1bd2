//! Checks of the local files that hold keys: the data directory, the SQLite database and the
//! local master key file.
//!
//! A file created by llm-accounting is private from the start (0600, in a 0700 directory). A
//! file that already exists is checked before it is used, because someone else may have made
//! it, or loosened it since:
//!
//! | path | owner | refused modes | fix |
//! |---|---|---|---|
//! | data directory | the running user, or root | group or world writable | `chmod 700 PATH` |
//! | SQLite database | the running user | group or world writable | `chmod 600 PATH` |
//! | master key file | the running user | any group or world access | `chmod 600 PATH` |
//!
//! A directory owned by root is accepted (a system directory such as `/var/lib/app` made by an
//! administrator): root can replace any file anyway, so trusting it adds no exposure. A *file*
//! owned by another user, root included, is refused: whoever owns it can change it. Every
//! refusal is an [`Error::Config`] naming the path, what is wrong and how to fix it.
//!
//! On other platforms than Unix there are no such modes and owners: the checks pass.

use std::path::Path;
use std::sync::Arc;

use crate::{Error, Result};

/// What a checked path is; each kind has its own rules (see the [module](self) docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrivatePath {
    /// The directory of the default database and master key file.
    DataDirectory,
    /// A SQLite database file.
    Database,
    /// The local provider's master key file.
    MasterKeyFile,
}

impl PrivatePath {
    /// How messages name it.
    fn what(self) -> &'static str {
        match self {
            PrivatePath::DataDirectory => "data directory",
            PrivatePath::Database => "SQLite database",
            PrivatePath::MasterKeyFile => "master key file",
        }
    }

    /// The mode bits that must be clear, and how to say what they allow.
    #[cfg(unix)]
    fn forbidden(self) -> (u32, &'static str) {
        match self {
            PrivatePath::MasterKeyFile => (0o077, "can be read or written by group or others"),
            PrivatePath::DataDirectory | PrivatePath::Database => {
                (0o022, "can be written by group or others")
            }
        }
    }

    /// The `chmod` that fixes a mode.
    #[cfg(unix)]
    fn private_mode(self) -> &'static str {
        match self {
            PrivatePath::DataDirectory => "700",
            PrivatePath::Database | PrivatePath::MasterKeyFile => "600",
        }
    }
}

/// Whether something (a file, a directory, a link, even a dangling one) is at `path`.
///
/// # Errors
///
/// [`Error::Io`] with `operation` when `path` cannot be inspected (other than not found).
pub fn exists(path: &Path, operation: &'static str) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Io {
            operation,
            path: path.display().to_string(),
            source: Arc::new(e),
        }),
    }
}

/// Checks an existing `path` of kind `kind` (following a symbolic link: what is checked is
/// what will be opened).
///
/// # Errors
///
/// [`Error::Config`] when it is owned by another user or its mode gives others access it must
/// not (see the [module](self) docs); [`Error::Io`] when it cannot be inspected (a missing
/// path included: check for existence first).
pub fn check_existing(path: &Path, kind: PrivatePath) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Io {
        operation: "inspecting a file",
        path: path.display().to_string(),
        source: Arc::new(e),
    })?;
    check_metadata(path, kind, &meta)
}

/// Like [`check_existing`], on metadata already read.
#[cfg(unix)]
pub fn check_metadata(path: &Path, kind: PrivatePath, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let what = kind.what();
    let shown = path.display();
    if kind == PrivatePath::DataDirectory && !meta.is_dir() {
        return Err(Error::config(format!("{what} {shown} is not a directory")));
    }
    let me = rustix::process::geteuid().as_raw();
    let owner = meta.uid();
    let owner_ok = owner == me || (kind == PrivatePath::DataDirectory && owner == 0);
    if !owner_ok {
        return Err(Error::config(format!(
            "{what} {shown} is owned by another user (uid {owner}; this process runs as uid \
             {me}): whoever owns it can change it; use a {} of your own, or `chown {me} {shown}`",
            if meta.is_dir() { "directory" } else { "file" }
        )));
    }
    let mode = meta.mode() & 0o7777;
    let (forbidden, allows) = kind.forbidden();
    if mode & forbidden != 0 {
        return Err(Error::config(format!(
            "{what} {shown} {allows} (mode {mode:o}); fix it with `chmod {} {shown}`",
            kind.private_mode()
        )));
    }
    Ok(())
}

/// Like [`check_existing`], on metadata already read (no checks off Unix).
#[cfg(not(unix))]
pub fn check_metadata(_path: &Path, _kind: PrivatePath, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn message(r: Result<()>) -> String {
        match r {
            Err(Error::Config { message, .. }) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn private_files_and_directories_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        chmod(dir.path(), 0o700);
        check_existing(dir.path(), PrivatePath::DataDirectory).expect("0700 directory");
        chmod(dir.path(), 0o755);
        check_existing(dir.path(), PrivatePath::DataDirectory).expect("readable is fine");
        let file = dir.path().join("keys.db");
        std::fs::write(&file, b"").expect("write");
        chmod(&file, 0o600);
        check_existing(&file, PrivatePath::Database).expect("0600 database");
        check_existing(&file, PrivatePath::MasterKeyFile).expect("0600 master key");
        chmod(&file, 0o644);
        check_existing(&file, PrivatePath::Database).expect("a readable database is allowed");
    }

    #[test]
    fn writable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("keys.db");
        std::fs::write(&file, b"").expect("write");
        for mode in [0o620, 0o602, 0o666] {
            chmod(&file, mode);
            let m = message(check_existing(&file, PrivatePath::Database));
            assert!(m.contains("can be written by group or others"), "{m}");
            assert!(
                m.contains(&format!("chmod 600 {}", file.display())),
                "names the fix: {m}"
            );
        }
        chmod(&file, 0o640);
        let m = message(check_existing(&file, PrivatePath::MasterKeyFile));
        assert!(
            m.contains("master key file") && m.contains("read or written"),
            "{m}"
        );
        for mode in [0o770, 0o707, 0o1777] {
            chmod(dir.path(), mode);
            let m = message(check_existing(dir.path(), PrivatePath::DataDirectory));
            assert!(
                m.contains(&format!("chmod 700 {}", dir.path().display())),
                "{m}"
            );
        }
        chmod(dir.path(), 0o700);
    }

    #[test]
    fn a_file_as_data_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"").expect("write");
        chmod(&file, 0o600);
        let m = message(check_existing(&file, PrivatePath::DataDirectory));
        assert!(m.contains("is not a directory"), "{m}");
    }

    #[test]
    fn another_owner_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("keys.db");
        std::fs::write(&file, b"").expect("write");
        chmod(&file, 0o600);
        let me = rustix::process::geteuid().as_raw();
        let other = if me == 65534 { 65533 } else { 65534 };
        if std::os::unix::fs::chown(&file, Some(other), None).is_err() {
            // Not root: a file owned by root is another owner's file.
            let m = message(check_existing(
                Path::new("/etc/passwd"),
                PrivatePath::Database,
            ));
            assert!(m.contains("owned by another user"), "{m}");
            return;
        }
        for kind in [PrivatePath::Database, PrivatePath::MasterKeyFile] {
            let m = message(check_existing(&file, kind));
            assert!(
                m.contains("owned by another user") && m.contains(&format!("uid {other}")),
                "{m}"
            );
        }
        std::os::unix::fs::chown(dir.path(), Some(other), None).expect("chown dir");
        let m = message(check_existing(dir.path(), PrivatePath::DataDirectory));
        assert!(m.contains("owned by another user"), "{m}");
        // Root's directories are trusted.
        std::os::unix::fs::chown(dir.path(), Some(0), None).expect("chown dir");
        check_existing(dir.path(), PrivatePath::DataDirectory).expect("root-owned directory");
    }
}
