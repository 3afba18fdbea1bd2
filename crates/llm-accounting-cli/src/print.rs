//! Writing to stdout: tables fitted to the terminal, and a reader that went away (`| head`)
//! taken as the end of the output, not as a failure.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The width tables must fit when stdout is a terminal: `$COLUMNS` when set (as shells export
/// it), else the terminal's. Into a pipe or a file: none, whatever `$COLUMNS` says, so that
/// every row stays one whole line for `grep`, `cut` and files.
pub(crate) fn width() -> Option<u16> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|c| *c > 0)
        .or_else(|| Table::new().width())
}

/// Most characters a column keeps whole when fitting: a longer word (a master-key ARN) may
/// still be broken.
const WHOLE_WORD_CHARS: usize = 24;

/// The characters of the longest word (run of non-blank characters) of `text`.
fn longest_word(text: &str) -> usize {
    text.split_whitespace()
        .map(|w| w.chars().count())
        .max()
        .unwrap_or(0)
}

/// The narrowest each column may be in `width` characters (one of them the space after it):
/// its header, and its longest word (up to [`WHOLE_WORD_CHARS`]) unless the words cannot all
/// stay whole. Then the columns with the longest words (times, references) give way first,
/// down to their header, until the table fits; names stay whole. If even the headers do not
/// fit, every word stays whole (the lines are too long either way).
fn least_widths(headers: &[usize], words: &[usize], width: usize) -> Vec<usize> {
    let mut least: Vec<usize> = headers
        .iter()
        .zip(words)
        .map(|(h, w)| (*h).max(*w))
        .collect();
    let total = |l: &[usize]| l.iter().map(|w| w + 1).sum::<usize>();
    if total(headers) > width {
        return least;
    }
    while total(&least) > width {
        let widest = (0..least.len())
            .filter(|&i| least[i] > headers[i])
            .max_by_key(|&i| least[i] - headers[i]);
        let Some(i) = widest else {
            break;
        };
        least[i] = headers[i];
    }
    least
}

/// Whether tables are written as CSV (`--format csv`), set by the command that prints.
static CSV: AtomicBool = AtomicBool::new(false);

/// Makes [`finish_table`] write CSV (`--format csv`) or not.
pub(crate) fn use_csv(on: bool) {
    CSV.store(on, Ordering::Relaxed);
}

/// `table` as CSV (RFC 4180): its header and rows, every field as the table shows it.
fn csv_of(table: &Table) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    let records = table
        .header()
        .into_iter()
        .chain(table.row_iter())
        .map(|row| {
            row.cell_iter()
                .map(|c| c.content())
                .collect::<Vec<String>>()
        });
    for record in records {
        // Writing to memory cannot fail.
        let _ = out.write_record(&record);
    }
    let bytes = out.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim_end().to_owned()
}

/// The table as text: columns flush left, two spaces apart, no trailing blanks; fitted to
/// [`width`] when there is one. As CSV instead after [`use_csv`].
///
/// Fitted, the columns are one space apart and never narrower than their header, nor than
/// their longest word while the table can fit that way ([`least_widths`]): headers and names
/// stay whole, long cells (times, master-key references) wrap within their column.
pub(crate) fn finish_table(mut table: Table) -> String {
    if CSV.load(Ordering::Relaxed) {
        return csv_of(&table);
    }
    let width = width();
    let columns = table.column_count();
    let mut headers: Vec<usize> = vec![0; columns];
    if let Some(header) = table.header() {
        for (i, c) in header.cell_iter().enumerate() {
            if let Some(h) = headers.get_mut(i) {
                *h = c.content().chars().count();
            }
        }
    }
    let mut words: Vec<usize> = vec![0; columns];
    for row in table.row_iter() {
        for (i, c) in row.cell_iter().enumerate() {
            if let Some(w) = words.get_mut(i) {
                *w = (*w).max(longest_word(&c.content()).min(WHOLE_WORD_CHARS));
            }
        }
    }
    let least = width.map(|w| least_widths(&headers, &words, usize::from(w)));
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if width.is_some() { 1 } else { 2 }));
        if let Some(w) = least.as_ref().and_then(|l| l.get(i)) {
            let w = u16::try_from(*w + 1).unwrap_or(u16::MAX);
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
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
    fn long_words_give_way_before_names() {
        // SERVICE, USER, CREATED: "anthropic", "alice", a time.
        let headers = [7, 4, 7];
        let words = [9, 5, 20];
        // Room for every word whole.
        assert_eq!(least_widths(&headers, &words, 40), [9, 5, 20]);
        // Not: the time gives way first, the names stay whole.
        assert_eq!(least_widths(&headers, &words, 30), [9, 5, 7]);
        // Not even the headers fit: nothing gives way.
        assert_eq!(least_widths(&headers, &words, 10), [9, 5, 20]);
    }

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
