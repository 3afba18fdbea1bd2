//! Writing to stdout: tables fitted to the terminal, and a reader that went away (`| head`)
//! taken as the end of the output, not as a failure.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width};
use llm_accounting::{Error, Result};

/// Writes `text` and a newline on stdout. `what` names the output in an error.
pub(crate) fn print(text: &str, what: &'static str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| stdout_error(what, e))
}

/// A failed write to stdout as an [`Error`] (see [`is_broken_pipe`]).
pub(crate) fn stdout_error(what: &'static str, e: std::io::Error) -> Error {
    Error::Io {
        operation: what,
        path: "stdout".to_owned(),
        source: Arc::new(e),
    }
}

/// Whether `error` is a write to a pipe whose reader has gone (`llm-accounting keys audit |
/// head -1`): the output was cut short on purpose, so the command ends quietly with exit 0,
/// as other command-line tools do.
pub(crate) fn is_broken_pipe(error: &Error) -> bool {
    match error {
        Error::Io { source, .. } => source
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe),
        _ => false,
    }
}

/// The width tables must fit: `$COLUMNS` when set (as shells export it), else the terminal's
/// when stdout is one; none (full lines, for `grep` and files) otherwise.
pub(crate) fn width() -> Option<u16> {
    if let Some(cols) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|c| *c > 0)
    {
        return Some(cols);
    }
    if std::io::stdout().is_terminal() {
        return Table::new().width();
    }
    None
}

/// The table as text: columns flush left, two spaces apart, no trailing blanks; fitted to
/// [`width`] when there is one.
///
/// Fitted, the columns are one space apart and never narrower than their header (so that
/// headers stay whole); long cells (times, master-key references) wrap within their column.
pub(crate) fn finish_table(mut table: Table) -> String {
    let width = width();
    let headers: Vec<u16> = table
        .header()
        .map(|h| {
            h.cell_iter()
                .map(|c| u16::try_from(c.content().chars().count()).unwrap_or(u16::MAX))
                .collect()
        })
        .unwrap_or_default();
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if width.is_some() { 1 } else { 2 }));
        if width.is_some()
            && let Some(w) = headers.get(i)
        {
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(*w + 1)));
        }
    }
    if let Some(w) = width {
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(w);
    }
    table.trim_fmt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipes_are_recognised_through_the_chain() {
        let pipe = stdout_error(
            "writing",
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        );
        assert!(is_broken_pipe(&pipe));
        let other = stdout_error("writing", std::io::Error::other("disk full"));
        assert!(!is_broken_pipe(&other));
    }
}
