//! `LLM_ACCOUNTING_*` variables that nothing reads: reported, with the nearest valid name.

use super::super::env::unknown_env_vars_in;
use super::super::*;

fn unknown(names: &[&str]) -> Vec<UnknownEnvVar> {
    unknown_env_vars_in(names.iter().map(|n| (*n).to_owned()))
}

#[test]
fn a_typo_is_reported_with_the_nearest_name() {
    let found = unknown(&["LLM_ACCOUNTING_DATABSE_URL", "PATH"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, "LLM_ACCOUNTING_DATABSE_URL");
    assert_eq!(found[0].suggestion, Some("LLM_ACCOUNTING_DATABASE_URL"));
    assert_eq!(
        found[0].to_string(),
        "LLM_ACCOUNTING_DATABSE_URL is set but no setting reads it (did you mean \
         LLM_ACCOUNTING_DATABASE_URL?)"
    );
    let found = unknown(&["LLM_ACCOUNTING_CONFG"]);
    assert_eq!(found[0].suggestion, Some(CONFIG_FILE_ENV));
}

#[test]
fn a_name_far_from_every_variable_gets_no_suggestion() {
    let found = unknown(&["LLM_ACCOUNTING_SOMETHING_ELSE_ENTIRELY"]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].suggestion, None);
}

#[test]
fn settings_and_the_projects_other_variables_are_not_reported() {
    let mut names: Vec<&str> = ENV_VARS.iter().map(|(v, _)| *v).collect();
    names.extend(OTHER_ENV_VARS);
    names.extend([
        "LLM_ACCOUNTING_TEST_POSTGRES_URL",
        "LLM_ACCOUNTING_BENCH_WORKER_DB",
        "LLM_ACCOUNTINGX",
        "OPENAI_API_KEY",
    ]);
    assert_eq!(unknown(&names), Vec::new());
}
