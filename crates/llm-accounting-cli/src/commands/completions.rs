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
    let mut text = String::from_utf8_lossy(&script).into_owned();
    if args.shell == clap_complete::Shell::Bash {
        text = bash_case_labels(&text);
    }
    print::print(text.trim_end(), "writing the completion script")
}

/// The separator clap_complete's bash generator puts between command names in its state
/// (`llm__accounting__subcmd__keys`).
const BASH_SEP: &str = "__subcmd__";

/// Repairs clap_complete's bash script for a binary name with a hyphen (clap-rs/clap#6421,
/// still in clap_complete 4.6.12): the loop over the words spells the state
/// `llm__accounting__subcmd__keys` (the name's `-` as `__`), the case labels that use it
/// `llm__subcmd__accounting__subcmd__keys` (the `-` as the separator), so no label ever matched
/// and nothing completed after the first word. The labels are rewritten the loop's way; once
/// clap_complete spells both alike the wrong form is absent and this changes nothing.
fn bash_case_labels(script: &str) -> String {
    if !NAME.contains('-') {
        return script.to_owned();
    }
    let wrong = format!("{}{BASH_SEP}", NAME.replace('-', BASH_SEP));
    let right = format!("{}{BASH_SEP}", NAME.replace('-', "__"));
    script.replace(&wrong, &right)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_case_labels_are_spelled_like_the_state() {
        let script = "cmd=\"llm__accounting__subcmd__keys\"\n        llm__subcmd__accounting__subcmd__keys)\n        llm__subcmd__accounting__subcmd__keys__subcmd__get)\n        llm__accounting)";
        assert_eq!(
            bash_case_labels(script),
            "cmd=\"llm__accounting__subcmd__keys\"\n        llm__accounting__subcmd__keys)\n        llm__accounting__subcmd__keys__subcmd__get)\n        llm__accounting)"
        );
        // Already right (a fixed clap_complete): unchanged.
        let fixed = bash_case_labels(script);
        assert_eq!(bash_case_labels(&fixed), fixed);
    }
}
