//! Output formats of the commands that print data, shared by the parser (`cli.rs`) and the
//! commands that print (`commands/*`), which depend on this module rather than on each other.

use clap::ValueEnum;

/// Output format of the commands that print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// An aligned table for people (fitted to the terminal's width, or to $COLUMNS).
    Table,
    /// JSON for programs (shapes documented in the README and kept stable).
    Json,
    /// Comma-separated values (RFC 4180) for spreadsheets: the table's columns with a header
    /// row, one record per row, nothing fitted or cut.
    Csv,
}
