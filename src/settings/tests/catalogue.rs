//! The catalogue of settings: every setting has one variable, named by the rule, listed in the
//! README; the embedded defaults and the example files load.

use config::{Map, Value, ValueKind};

use super::super::*;
use super::load;

fn leaves(table: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match &value.kind {
            ValueKind::Table(t) => leaves(t, &path, out),
            _ => out.push(path),
        }
    }
}

#[test]
fn default_is_the_embedded_defaults() {
    let loaded = load(&[], None, &Overrides::default()).expect("defaults");
    assert_eq!(Settings::default(), loaded);
    Settings::default().validate().expect("valid");
}

#[test]
fn every_setting_has_exactly_one_variable() {
    let mut settings = Vec::new();
    leaves(&defaults_table().expect("defaults"), "", &mut settings);
    // The upstreams are a table per service, each field with the variable of its service.
    settings.retain(|s| {
        let Some(rest) = s.strip_prefix("gateway.upstreams.") else {
            return true;
        };
        let (service, field) = rest.split_once('.').expect("service.field");
        let var = format!(
            "{UPSTREAM_ENV_PREFIX}{}_{}",
            service.to_uppercase(),
            field.to_uppercase()
        );
        assert_eq!(env::upstream_setting_of(&var).as_deref(), Some(s.as_str()));
        false
    });
    settings.sort();
    let mut listed: Vec<String> = ENV_VARS.iter().map(|(_, s)| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(settings, listed, "ENV_VARS and config/default.toml differ");
    let mut vars: Vec<&str> = ENV_VARS.iter().map(|(v, _)| *v).collect();
    vars.sort_unstable();
    vars.dedup();
    assert_eq!(vars.len(), ENV_VARS.len(), "a variable sets two settings");
    assert!(!vars.contains(&CONFIG_FILE_ENV));
}

#[test]
fn new_variables_follow_the_naming_rule() {
    // The names that existed before the rule; this list must not grow.
    const OLDER_NAMES: &[&str] = &[
        "LLM_ACCOUNTING_USER",
        "LLM_ACCOUNTING_PROJECT",
        "LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE",
        "LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION",
        "LLM_ACCOUNTING_AZURE_CREDENTIALS",
        "LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM",
        "LLM_ACCOUNTING_GCP_CREDENTIALS",
        "LLM_ACCOUNTING_CACHE_REFRESH_MS",
        "LLM_ACCOUNTING_DB_MAX_CONNECTIONS",
        "LLM_ACCOUNTING_DB_CONNECT_TIMEOUT_SECS",
        "LLM_ACCOUNTING_DB_BUSY_TIMEOUT_SECS",
        "LLM_ACCOUNTING_DATABASE_SCHEMA",
        "LLM_ACCOUNTING_PREVIOUS_GRACE_SECS",
    ];
    for (var, setting) in ENV_VARS {
        let rule = format!(
            "LLM_ACCOUNTING_{}",
            setting.to_ascii_uppercase().replace('.', "_")
        );
        if OLDER_NAMES.contains(var) {
            assert_ne!(
                *var, rule,
                "{var} follows the rule: drop it from OLDER_NAMES"
            );
        } else {
            assert_eq!(*var, rule, "the variable of {setting}");
        }
    }
    assert_eq!(
        env_var_of("store.last_used_interval_secs"),
        "LLM_ACCOUNTING_STORE_LAST_USED_INTERVAL_SECS"
    );
    assert_eq!(env_var_of("kms.key_id"), "LLM_ACCOUNTING_KMS_KEY_ID");
}

#[test]
fn the_readme_lists_every_variable_with_its_setting() {
    let readme = include_str!("../../../README.md");
    for (var, setting) in ENV_VARS {
        let row = format!("| `{var}` | `{setting}`");
        assert!(
            readme.lines().any(|l| l.starts_with(&row)),
            "README.md's configuration table has no row {row}"
        );
    }
}

#[test]
fn the_example_files_load() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(dir).expect("config/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".example.toml") {
            continue;
        }
        let s = load(&[], Some(&path), &Overrides::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            name.strip_suffix(".example.toml"),
            Some(s.kms.provider.as_str()),
            "one example per provider, named after it"
        );
        loaded.push(s.kms.provider);
    }
    loaded.sort_by_key(|k| k.as_str());
    let mut all = KmsProviderKind::ALL.to_vec();
    all.sort_by_key(|k| k.as_str());
    assert_eq!(loaded, all);
}

#[test]
fn upstreams_come_from_the_file_and_from_variables_of_any_service() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[gateway.upstreams.mistral]\nbase_url = \"https://api.mistral.ai/v1\"\n",
    )
    .expect("write");
    let s = load(
        &[
            ("LLM_ACCOUNTING_GATEWAY_UPSTREAMS_MISTRAL_API", "openai"),
            (
                "LLM_ACCOUNTING_GATEWAY_UPSTREAMS_OPENAI_BASE_URL",
                "http://127.0.0.1:9/v1",
            ),
        ],
        Some(&file),
        &Overrides::default(),
    )
    .expect("load");
    assert_eq!(
        s.gateway.upstreams["mistral"].base_url,
        "https://api.mistral.ai/v1"
    );
    assert_eq!(s.gateway.upstreams["mistral"].api, UpstreamApi::OpenAi);
    assert_eq!(
        s.gateway.upstreams["openai"].base_url,
        "http://127.0.0.1:9/v1"
    );
    assert_eq!(s.gateway.upstreams["anthropic"].api, UpstreamApi::Anthropic);

    // A field an upstream does not have is named, with the file.
    std::fs::write(&file, "[gateway.upstreams.groq]\nbase = \"x\"\n").expect("write");
    let e = load(&[], Some(&file), &Overrides::default()).expect_err("unknown field");
    assert!(e.to_string().contains("gateway.upstreams.groq.base"), "{e}");
    // A bad API name is named with its variable.
    let e = load(
        &[("LLM_ACCOUNTING_GATEWAY_UPSTREAMS_OPENAI_API", "soap")],
        None,
        &Overrides::default(),
    )
    .expect_err("bad api");
    assert!(
        e.to_string()
            .contains("LLM_ACCOUNTING_GATEWAY_UPSTREAMS_OPENAI_API"),
        "{e}"
    );
    // The upstream variables are no typos; a near miss of one is.
    let unknown = env::unknown_env_vars_in([
        "LLM_ACCOUNTING_GATEWAY_UPSTREAMS_GROQ_BASE_URL".to_owned(),
        "LLM_ACCOUNTING_GATEWAY_LISTN".to_owned(),
    ]);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].suggestion, Some("LLM_ACCOUNTING_GATEWAY_LISTEN"));
}
