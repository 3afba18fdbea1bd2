//! `completions` (clap_complete) and `manual` (clap_mangen): generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use std::path::Path;
use std::sync::Arc;

use llm_accounting::{Error, Result};

use crate::cli::{CompletionsArgs, ManualArgs};
use crate::print;

/// The binary's name, as completions and pages call it.
const NAME: &str = "llm-accounting";

/// `completions SHELL`: the script on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = crate::cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, NAME, &mut script);
    let text = String::from_utf8_lossy(&script);
    print::print(text.trim_end(), "writing the completion script")
}

/// `manual [--dir DIR]`: the main page on stdout, or every page into `DIR`.
pub(crate) fn manual(args: &ManualArgs) -> Result<()> {
    let cmd = crate::cli::command();
    if let Some(dir) = &args.dir {
        return write_pages(cmd, dir);
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| print::stdout_error("rendering the manual page", e))?;
    let text = String::from_utf8_lossy(&page);
    print::print(text.trim_end(), "writing the manual page")
}

/// One page per command into `dir`, which must exist (a mistyped directory is exit 2).
fn write_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::invalid(
            "--dir",
            format!(
                "{} is not an existing directory",
                crate::escape::text(&dir.display().to_string())
            ),
        ));
    }
    clap_mangen::generate_to(cmd, dir).map_err(|e| Error::Io {
        operation: "writing the manual pages",
        path: dir.display().to_string(),
        source: Arc::new(e),
    })
}
