//! Writing an output file whole or not at all (`inject -o`, `usage report -o`).

use std::io::Write;
use std::path::Path;

use llm_accounting::{Error, Result};

/// Writes `bytes` to a new file at `path` with `mode` (Unix). With `replace`, through a
/// temporary file renamed over `path` (a reader sees the old file or the new one); without,
/// the file must not exist. A failed write leaves no partial file; `operation` names the
/// write in the error.
pub(crate) fn write(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    replace: bool,
    operation: &'static str,
) -> Result<()> {
    let shown = crate::escape::text(&path.display().to_string()).into_owned();
    let fail = |e: std::io::Error| Error::Io {
        operation,
        path: shown.clone(),
        source: std::sync::Arc::new(e),
    };
    let target = if replace {
        let name = path
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    } else {
        path.to_path_buf()
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&target).map_err(fail)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| {
            if replace {
                std::fs::rename(&target, path)
            } else {
                Ok(())
            }
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&target);
        return Err(fail(e));
    }
    Ok(())
}
