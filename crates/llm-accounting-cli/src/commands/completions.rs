//! `completions` (clap_complete) and `manual` (clap_mangen): generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use std::path::Path;
use std::sync::Arc;

use llm_accounting::{
    Error, KeyFilter, Listed, Overrides, Result, SeaOrmKeyRepository, Settings, inspect_database,
};

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
    match args.shell {
        clap_complete::Shell::Bash => text = bash_services(&bash_case_labels(&text)),
        clap_complete::Shell::Zsh => text = zsh_services(&text),
        clap_complete::Shell::Fish => text = fish_services(&text),
        _ => {}
    }
    print::print(text.trim_end(), "writing the completion script")
}

/// The first argument that makes the binary print the stored service names (see
/// [`services`]); not a subcommand, so no completion or help offers it.
pub(crate) const SERVICES_WORD: &str = "__complete-services";

/// The command the scripts run for `--service` candidates (its errors are thrown away: a
/// broken configuration completes nothing rather than print on the command line).
const SERVICES: &str = "llm-accounting __complete-services 2>/dev/null";

/// bash: `--service VALUE` completes the stored service names (clap_complete offers files).
fn bash_services(script: &str) -> String {
    const FILES: &str = r#"COMPREPLY=($(compgen -f "${cur}"))"#;
    let mut out = String::with_capacity(script.len());
    let mut after_service = false;
    for line in script.split_inclusive('\n') {
        if after_service && line.trim() == FILES {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!(
                "{indent}COMPREPLY=($(compgen -W \"$({SERVICES})\" -- \"${{cur}}\"))\n"
            ));
        } else {
            out.push_str(line);
        }
        after_service = line.trim() == "--service)";
    }
    out
}

/// zsh: the `--service=` specs complete the stored service names (clap_complete: `_default`).
fn zsh_services(script: &str) -> String {
    let action = format!(r#":S:{{compadd -- ${{(f)"$({SERVICES})"}}}}'"#);
    script
        .lines()
        .map(|line| {
            if line.starts_with("'--service=[") && line.contains(":S:_default'") {
                line.replace(":S:_default'", &action)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// fish: `-l service` completes the stored service names, not files.
fn fish_services(script: &str) -> String {
    script
        .lines()
        .map(|line| {
            if line.contains(" -l service ") && line.ends_with(" -r") {
                format!("{line} -f -a \"({SERVICES})\"")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `llm-accounting __complete-services`: every stored service name once, sorted, read from
/// the repository (no audit row, no KMS call) of the configuration the environment and the
/// configuration file name. Prints nothing when the configuration does not load, the
/// database does not exist yet or has pending migrations (completion must not create or
/// migrate a database), or the listing fails.
pub(crate) async fn services() {
    let overrides = Overrides {
        database_url: None,
        provider: None,
        create_if_missing: false,
    };
    let Ok(settings) = Settings::load(None, &overrides) else {
        return;
    };
    let Ok((url, _)) = settings.database_url() else {
        return;
    };
    let mut options = settings.store_options();
    options.create_if_missing = false;
    match inspect_database(&url, &options).await {
        Ok(status) if status.pending.is_empty() => {}
        _ => return,
    }
    let Ok(repo) = SeaOrmKeyRepository::connect(&url, &options).await else {
        return;
    };
    let Ok(rows) = llm_accounting::KeyRepository::list_keys(&repo, &KeyFilter::default()).await
    else {
        return;
    };
    let names: std::collections::BTreeSet<String> = rows
        .into_iter()
        .filter_map(|row| match row {
            Listed::Key(k) => Some(k.identity.service().to_owned()),
            Listed::Broken(_) => None,
        })
        .collect();
    if names.is_empty() {
        return;
    }
    let text: Vec<String> = names.into_iter().collect();
    let _ = print::print(&text.join("\n"), "writing the service names");
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
