//! The operator's anchor, kept automatically: after every key change the manager writes the
//! audit trail's head (`SEQ:MAC`, as `keys audit --head` prints it) to a file outside the
//! database, and the first time a manager looks at the store it checks that the trail still
//! holds that record, with that MAC, recomputed under the store's key. A database put back
//! from an older copy (a whole-store rollback, which no row inside the database can reveal),
//! a trail cut short or replaced, and a sealed store made to look unsealed are refused with
//! the integrity error.
//!
//! The file is written atomically (a temporary file renamed over it), mode 0600, and only
//! ever moves forward; several processes on one machine may share it. Anyone who can write
//! the file can move the anchor: keep it where the database's writers cannot (another
//! machine's mount, a directory of the operator's).
//!
//! This module also holds the other evidence that a store was sealed, which a database writer
//! cannot erase by removing the state key: the keyed rows of its audit trail.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::audit::{AuditChain, AuditFilter, AuditHead, record_hash};
use crate::seal::StateKeys;
use crate::{Error, Result, SecureKeyManager};

/// Largest anchor file read (a head is about 90 bytes).
const MAX_ANCHOR_BYTES: u64 = 4096;

/// Where the anchor is kept, and whether this manager checked it.
#[derive(Debug)]
pub(super) struct Anchor {
    path: PathBuf,
    checked: tokio::sync::OnceCell<()>,
    /// One writer of the file at a time in this process.
    writing: tokio::sync::Mutex<()>,
}

impl Anchor {
    pub(super) fn new(path: PathBuf) -> Self {
        Anchor {
            path,
            checked: tokio::sync::OnceCell::new(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The head kept in the file; `None` before the first change wrote it.
    fn read(&self) -> Result<Option<AuditHead>> {
        read_head(&self.path)
    }

    /// Writes `head` unless the file holds this head or a later one.
    fn advance(&self, head: &AuditHead) -> Result<()> {
        if self.read()?.is_some_and(|kept| kept.seq >= head.seq) {
            return Ok(());
        }
        write_atomically(&self.path, format!("{head}\n").as_bytes())
    }
}

fn anchor_error(path: &Path, what: &str, e: &std::io::Error) -> Error {
    Error::config(format!("audit anchor file {}: {what}: {e}", path.display()))
}

/// Reads the head in the anchor file at `path` (a regular file of at most 4 KiB holding
/// `SEQ:MAC`); `None` when there is no file.
fn read_head(path: &Path) -> Result<Option<AuditHead>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anchor_error(path, "cannot read it", &e)),
    };
    if !meta.is_file() || meta.len() > MAX_ANCHOR_BYTES {
        return Err(Error::config(format!(
            "audit anchor file {}: not a regular file of at most {MAX_ANCHOR_BYTES} bytes",
            path.display()
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| anchor_error(path, "cannot read it", &e))?;
    let head = text.lines().next().unwrap_or_default();
    head.parse::<AuditHead>().map(Some).map_err(|_| {
        Error::config(format!(
            "audit anchor file {}: it does not hold an audit head (SEQ:MAC)",
            path.display()
        ))
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory (mode 0600,
/// synced), renamed over it: a reader sees the old content or the new, never a part.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .map_or_else(|| "anchor".into(), |n| n.to_string_lossy().into_owned());
    let tmp_name = format!(".{name}.{}.tmp", std::process::id());
    let tmp = dir.map_or_else(|| PathBuf::from(&tmp_name), |d| d.join(&tmp_name));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anchor_error(path, "cannot write it", &e));
    }
    Ok(())
}

impl SecureKeyManager {
    /// Checks, once per manager, that the audit trail still holds the anchored head: the
    /// record at its position exists, has its MAC, and that MAC is the record's own under the
    /// store's audit key (`keys`: `None` for a store without a state key, whose anchored
    /// record must then be a plain one).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when the trail no longer holds the anchored head; the errors of
    /// reading the file and the trail.
    pub(super) async fn check_anchor(&self, keys: Option<&StateKeys>) -> Result<()> {
        let Some(anchor) = &self.inner.anchor else {
            return Ok(());
        };
        anchor
            .checked
            .get_or_try_init(|| async {
                let Some(head) = anchor.read()? else {
                    return Ok(());
                };
                if head.seq == 0 {
                    return Ok(());
                }
                let Some(audit) = &self.inner.audit else {
                    return Ok(());
                };
                let found = audit.log().record_at(head.seq).await?;
                let chain =
                    keys.map_or_else(AuditChain::plain, |k| AuditChain::keyed(k.audit_key()));
                let file = anchor.path.display().to_string();
                let problem = match found {
                    None => Some(format!(
                        "the audit trail no longer holds record {} anchored in {file}: the \
                         database was put back from an older copy, or its trail was cut",
                        head.seq
                    )),
                    Some(r)
                        if r.hash != head.mac
                            || chain.hash(r.seq, &r.prev_hash, &r.event) != r.hash =>
                    {
                        Some(format!(
                            "record {} of the audit trail is not the one anchored in {file}: the \
                             database was put back from another copy, its trail was replaced, \
                             or its state key was removed",
                            head.seq
                        ))
                    }
                    Some(_) => None,
                };
                match problem {
                    None => Ok(()),
                    Some(problem) => {
                        tracing::debug!(anchor = %file, head = %head, "{problem}");
                        Err(Error::Integrity {
                            identity: Some(format!(
                                "this store ({problem}; if the database was started over on \
                                 purpose, remove the anchor file)"
                            )),
                        })
                    }
                }
            })
            .await
            .map(|_| ())
    }

    /// Writes the audit trail's head to the anchor file after a key change (if one is
    /// configured). A failure is logged, not returned: the change itself committed.
    pub(super) async fn advance_anchor(&self) {
        let (Some(anchor), Some(audit)) = (&self.inner.anchor, &self.inner.audit) else {
            return;
        };
        let result = async {
            if !audit.same_transaction() {
                // The change's own row may still be waiting to be written.
                audit.flush().await?;
            }
            let _turn = anchor.writing.lock().await;
            let Some(last) = audit.log().last().await? else {
                return Ok(());
            };
            anchor.advance(&AuditHead {
                seq: last.seq,
                mac: last.hash,
            })
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not write the audit anchor file");
        }
    }

    /// Evidence, which a database writer cannot erase by removing the state key, that this
    /// store was sealed: a row of its audit trail linked under a state key (not plain
    /// SHA-256), or a row recording a seal. Read once per manager; only asked of a store that
    /// holds keys but no state key.
    pub(super) async fn sealed_before(&self) -> Result<Option<String>> {
        let Some(audit) = &self.inner.audit else {
            return Ok(None);
        };
        self.inner
            .state
            .sealed_before
            .get_or_try_init(|| async {
                let records = audit.log().records(&AuditFilter::default()).await?;
                Ok(records.iter().find_map(|r| {
                    if r.event.operation == "seal" && r.event.outcome == "ok" {
                        Some(format!("record {} of its audit trail is a seal", r.seq))
                    } else if record_hash(r.seq, &r.prev_hash, &r.event) != r.hash {
                        Some(format!(
                            "record {} of its audit trail is linked under a state key, or was \
                             edited",
                            r.seq
                        ))
                    } else {
                        None
                    }
                }))
            })
            .await
            .cloned()
    }
}
