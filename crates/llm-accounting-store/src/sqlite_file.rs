//! The SQLite database file before SQLite opens it: checked if it exists, created private if
//! asked, refused otherwise.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use llm_accounting_core::files::{self, PrivatePath};
use llm_accounting_core::{Error, Result};

fn io_error(operation: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        operation,
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}

/// Makes `path` ready to be opened:
///
/// - it exists: checked ([`files::check_existing`]: owned by this user, not writable by group
///   or others); a symbolic link is followed, and what it points to is checked;
/// - it is a symbolic link to nothing: refused, whether or not `create` is set (creating the
///   file would create it wherever the link points);
/// - it does not exist: created empty with mode 0600 if `create`, else refused; its directory
///   must exist either way.
///
/// # Errors
///
/// [`Error::Config`] for each refusal above, naming the path; [`Error::Io`] when the file
/// cannot be inspected or created.
pub(crate) fn prepare(path: &Path, create: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(target) => files::check_metadata(path, PrivatePath::Database, &target),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(dangling_link(path)),
            Err(e) => Err(io_error("inspecting the database file", path, e)),
        },
        Ok(meta) => files::check_metadata(path, PrivatePath::Database, &meta),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(Error::config(format!(
                    "SQLite database {}: its directory {} does not exist",
                    path.display(),
                    dir.display()
                )));
            }
            if !create {
                return Err(Error::config(format!(
                    "SQLite database {} does not exist, and creating it was not asked for \
                     (create_if_missing): check the path, or ask for it to be created",
                    path.display()
                )));
            }
            create_private(path)
        }
        Err(e) => Err(io_error("inspecting the database file", path, e)),
    }
}

fn dangling_link(path: &Path) -> Error {
    Error::config(format!(
        "SQLite database {} is a symbolic link to a file that does not exist; a database is \
         never created through a link: name the real path instead",
        path.display()
    ))
}

/// Creates the database file readable by its owner only (0600 on Unix). SQLite gives its
/// `-wal` and `-shm` files the same permissions as the database file, so the ciphertexts never
/// sit in a world-readable file whatever the umask.
///
/// `create_new` (`O_CREAT | O_EXCL`) follows no symbolic link: if one appeared since `path`
/// was found missing (or another process created the file), the path is checked as an
/// existing one instead.
fn create_private(path: &Path) -> Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    match open.open(path) {
        Ok(_) => {
            tracing::info!(path = %path.display(), "created a new SQLite database file");
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => prepare(path, false),
        Err(e) => Err(io_error("creating the database file", path, e)),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config_message(r: Result<()>) -> String {
        match r {
            Err(Error::Config { message, .. }) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn missing_file_is_created_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.db");
        let m = config_message(prepare(&path, false));
        assert!(
            m.contains(&path.display().to_string()) && m.contains("does not exist"),
            "{m}"
        );
        assert!(!path.exists(), "nothing was created");
        prepare(&path, true).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        prepare(&path, false).expect("exists now");
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope").join("keys.db");
        for create in [false, true] {
            let m = config_message(prepare(&path, create));
            assert!(m.contains("directory") && m.contains("nope"), "{m}");
        }
    }

    #[test]
    fn a_dangling_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere.db");
        let link = dir.path().join("keys.db");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        for create in [true, false] {
            let m = config_message(prepare(&link, create));
            assert!(m.contains("symbolic link"), "{m}");
        }
        assert!(
            !target.exists(),
            "nothing was created where the link points"
        );
        // A link to an existing private file is checked as that file.
        std::fs::write(&target, b"").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        prepare(&link, false).expect("link to a private file");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let m = config_message(prepare(&link, false));
        assert!(m.contains("written by group or others"), "{m}");
    }

    #[test]
    fn an_existing_file_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.db");
        std::fs::write(&path, b"").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        for create in [false, true] {
            let m = config_message(prepare(&path, create));
            assert!(m.contains(&format!("chmod 600 {}", path.display())), "{m}");
        }
    }
}
