//! Tests of loading settings.

use super::*;
use std::collections::HashMap;

use config::{Map, Value, ValueKind};

mod catalogue;
mod unknown_vars;

fn load(env: &[(&str, &str)], file: Option<&Path>, o: &Overrides) -> Result<Settings> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_with(file, o, |k| env.get(k).cloned())
}

#[test]
fn defaults_need_no_configuration() {
    let s = load(&[], None, &Overrides::default()).expect("defaults");
    assert_eq!(s.kms.provider, "local");
    assert_eq!(s.database_url, None);
    assert_eq!(s.cache.ttl_secs, 3600);
    let (url, default) = s.database_url().expect("url");
    assert!(
        default && url.starts_with("sqlite://") && url.ends_with("keys.db"),
        "{url}"
    );
}

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "database_url = \"sqlite://from-file.db\"\n[kms]\nprovider = \"aws\"\n[cache]\nttl_secs = 5\n",
    )
    .expect("write");
    let s = load(&[], Some(&file), &Overrides::default()).expect("file");
    assert_eq!(s.database_url.as_deref(), Some("sqlite://from-file.db"));
    assert_eq!(s.cache.ttl_secs, 5);
    let env = [
        ("LLM_ACCOUNTING_DATABASE_URL", "sqlite://from-env.db"),
        ("LLM_ACCOUNTING_KMS_KEY_ID", "alias/llm"),
        ("LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE", "/tmp/mk"),
    ];
    let s = load(&env, Some(&file), &Overrides::default()).expect("env");
    assert_eq!(s.database_url.as_deref(), Some("sqlite://from-env.db"));
    assert_eq!(s.kms.key_id.as_deref(), Some("alias/llm"));
    assert_eq!(s.kms.provider, "aws");
    assert_eq!(
        s.kms.local.master_key_file.as_deref(),
        Some(Path::new("/tmp/mk"))
    );
    let o = Overrides {
        database_url: Some("sqlite://from-flag.db".into()),
        provider: Some("local".into()),
        ..Overrides::default()
    };
    let s = load(&env, Some(&file), &o).expect("flags");
    assert_eq!(s.database_url.as_deref(), Some("sqlite://from-flag.db"));
    assert_eq!(s.kms.provider, "local");
    assert_eq!(s.cache.ttl_secs, 5, "untouched file values survive");
}

#[test]
fn config_file_from_env_and_bad_values() {
    let err = load(
        &[("LLM_ACCOUNTING_KMS_PROVIDER", "vault")],
        None,
        &Overrides::default(),
    )
    .expect_err("unknown provider");
    assert!(
        err.to_string().contains("unknown provider `vault`"),
        "{err}"
    );
    let err = load(
        &[("LLM_ACCOUNTING_CACHE_TTL_SECS", "soon")],
        None,
        &Overrides::default(),
    )
    .expect_err("bad number");
    assert!(matches!(err, Error::Config { .. }), "{err}");
    let err = load(
        &[("LLM_ACCOUNTING_CONFIG", "/nonexistent/x.toml")],
        None,
        &Overrides::default(),
    )
    .expect_err("missing file");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn kms_resilience_settings() {
    let s = load(&[], None, &Overrides::default()).expect("defaults");
    let o = s.layer_options();
    assert_eq!(o.retry, RetryPolicy::default(), "defaults match the core's");
    assert_eq!(o.timeout, Some(Duration::from_secs(5)));
    let env = [
        ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "5"),
        ("LLM_ACCOUNTING_KMS_MAX_RETRY_TIME_MS", "1500"),
        ("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "250"),
        ("LLM_ACCOUNTING_KMS_INITIAL_BACKOFF_MS", "20"),
        ("LLM_ACCOUNTING_KMS_MAX_BACKOFF_MS", "400"),
    ];
    let o = load(&env, None, &Overrides::default())
        .expect("env")
        .layer_options();
    assert_eq!(o.retry.max_attempts, 5);
    assert_eq!(o.retry.max_elapsed, Duration::from_millis(1500));
    assert_eq!(o.retry.initial_backoff, Duration::from_millis(20));
    assert_eq!(o.retry.max_backoff, Duration::from_millis(400));
    assert_eq!(o.timeout, Some(Duration::from_millis(250)));
    for (var, value) in [
        ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "0"),
        ("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "0"),
        ("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "many"),
    ] {
        let err = load(&[(var, value)], None, &Overrides::default()).expect_err(var);
        assert!(matches!(err, Error::Config { .. }), "{var}={value}: {err}");
    }
    for (var, _) in env {
        assert!(ENV_VARS.iter().any(|(v, _)| *v == var), "{var} is listed");
    }
}

#[test]
fn branch_key_settings() {
    let s = load(&[], None, &Overrides::default()).expect("defaults");
    assert_eq!(s.kms.hierarchy, KmsHierarchy::Off);
    assert_eq!(s.kms.branch_key_ttl_secs, 600);
    let env = [
        ("LLM_ACCOUNTING_KMS_HIERARCHY", "Service"),
        ("LLM_ACCOUNTING_KMS_BRANCH_KEY_TTL_SECS", "30"),
    ];
    let s = load(&env, None, &Overrides::default()).expect("env");
    assert_eq!(s.kms.hierarchy, KmsHierarchy::Service);
    assert_eq!(
        s.kms.hierarchy.to_core(),
        llm_accounting_core::branch::Hierarchy::Service
    );
    assert_eq!(s.kms.branch_key_ttl_secs, 30);
    let (_dir, path) = file("[kms]\nhierarchy = \"project\"\n");
    let s = load(&[], Some(&path), &Overrides::default()).expect("file");
    assert_eq!(s.kms.hierarchy, KmsHierarchy::Project);
}

#[test]
fn audit_settings_map_onto_the_trail() {
    let defaults = load(&[], None, &Overrides::default()).expect("defaults");
    assert_eq!(
        defaults.audit_options(),
        AuditOptions {
            // The one difference: the facade knows the trail is in the key database.
            same_transaction: true,
            ..AuditOptions::default()
        },
        "the embedded defaults are the library's"
    );
    let env = [
        ("LLM_ACCOUNTING_AUDIT_FAIL_CLOSED", "true"),
        ("LLM_ACCOUNTING_AUDIT_MAX_PENDING", "500"),
        ("LLM_ACCOUNTING_AUDIT_AGGREGATE_INTERVAL_MS", "250"),
        ("LLM_ACCOUNTING_AUDIT_EVERY_HIT", "true"),
    ];
    let o = load(&env, None, &Overrides::default())
        .expect("env")
        .audit_options();
    assert_eq!(
        o,
        AuditOptions {
            fail_closed: true,
            max_pending: 500,
            aggregate_interval: Duration::from_millis(250),
            every_hit: true,
            same_transaction: true,
        }
    );
    // The trail in another database: intent rows instead of one transaction.
    let separate = load(
        &[("LLM_ACCOUNTING_AUDIT_DATABASE_URL", "sqlite:///tmp/x.db")],
        None,
        &Overrides::default(),
    )
    .expect("env")
    .audit_options();
    assert!(!separate.same_transaction);
    for (var, value) in [
        ("LLM_ACCOUNTING_AUDIT_MAX_PENDING", "0"),
        ("LLM_ACCOUNTING_AUDIT_MAX_PENDING", "-1"),
        ("LLM_ACCOUNTING_AUDIT_AGGREGATE_INTERVAL_MS", "0"),
        ("LLM_ACCOUNTING_AUDIT_EVERY_HIT", "sometimes"),
    ] {
        let err = load(&[(var, value)], None, &Overrides::default()).expect_err(var);
        assert!(matches!(err, Error::Config { .. }), "{var}={value}: {err}");
        assert!(err.to_string().contains(var), "{var}={value}: {err}");
    }
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// Dotted paths of every leaf of `table`.
#[test]
fn providers_are_an_enum_named_as_before() {
    assert_eq!(PROVIDER_NAMES, &["local", "aws", "azure", "gcp"]);
    for (kind, name) in KmsProviderKind::ALL.iter().zip(PROVIDER_NAMES) {
        assert_eq!(kind.as_str(), *name);
        assert_eq!(name.parse::<KmsProviderKind>().expect(name), *kind);
        assert_eq!(kind.to_string(), *name);
        assert_eq!(kind.feature(), format!("kms-{name}"));
    }
    assert!(KmsProviderKind::Local == "local" && KmsProviderKind::Gcp != "aws");
    let err = "vault".parse::<KmsProviderKind>().expect_err("unknown");
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("unknown provider `vault`; expected one of: local, aws, azure, gcp"),
        "{err}"
    );
    assert!(
        "".parse::<KmsProviderKind>().is_err(),
        "no default provider"
    );
}

#[test]
fn every_settings_struct_denies_unknown_fields() {
    // Straight through serde, without the file check of `load_with`: each section.
    let mut sections = vec![String::new()];
    fn tables(t: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            if let ValueKind::Table(inner) = &v.kind {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(path.clone());
                tables(inner, &path, out);
            }
        }
    }
    tables(&defaults_table().expect("defaults"), "", &mut sections);
    assert!(sections.len() >= 10, "{sections:?}");
    for section in sections {
        // A map of services (each upstream is checked as its own section below it).
        if section == "gateway.upstreams" {
            continue;
        }
        let key = if section.is_empty() {
            "unheard_of".to_owned()
        } else {
            format!("{section}.unheard_of")
        };
        let err = Config::builder()
            .add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml))
            .set_override(key.as_str(), "1")
            .and_then(|b| b.build())
            .and_then(|c| c.try_deserialize::<Settings>())
            .expect_err(&key);
        assert!(
            err.to_string().contains("unknown field `unheard_of`"),
            "{key}: {err}"
        );
    }
}

#[test]
fn unknown_keys_in_a_file_are_errors_naming_them_and_the_file() {
    for (text, named) in [
        ("[kms]\nprovder = \"aws\"\n", "`kms.provder`"),
        ("[audit]\nfail_close = true\n", "`audit.fail_close`"),
        ("databse_url = \"sqlite://x.db\"\n", "`databse_url`"),
        (
            "[kms.azure]\ncredential = \"default\"\n",
            "`kms.azure.credential`",
        ),
        ("[kms.aws]\nprofile = \"dev\"\n", "`kms.aws.profile`"),
        ("[local]\nmaster_key = \"/k\"\n", "`local.master_key`"),
        (
            "[kms.local]\nmaster_key = \"/k\"\n",
            "`kms.local.master_key`",
        ),
        ("[metrics]\nenabled = true\n", "`metrics`"),
    ] {
        let (_dir, path) = file(text);
        let err = load(&[], Some(&path), &Overrides::default()).expect_err(text);
        let msg = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{msg}");
        assert!(msg.contains(named), "{text}: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    let (_dir, path) = file("[kms]\nprovder = \"aws\"\n");
    let msg = load(&[], Some(&path), &Overrides::default())
        .expect_err("typo")
        .to_string();
    assert!(
        msg.contains("expected one of:") && msg.contains("provider"),
        "{msg}"
    );
    // All of them at once, not only the first.
    let (_dir, path) = file("[audit]\nfail_close = true\n[kms]\nprovder = \"aws\"\n");
    let msg = load(&[], Some(&path), &Overrides::default())
        .expect_err("two typos")
        .to_string();
    assert!(
        msg.contains("`audit.fail_close`") && msg.contains("`kms.provder`"),
        "{msg}"
    );
}

#[test]
fn the_older_local_section_is_read_as_kms_local() {
    let (_dir, path) = file("[local]\nmaster_key_file = \"/old\"\nmin_master_key_version = 2\n");
    let s = load(&[], Some(&path), &Overrides::default()).expect("older file");
    assert_eq!(
        s.kms.local.master_key_file.as_deref(),
        Some(Path::new("/old"))
    );
    assert_eq!(s.kms.local.min_master_key_version, 2);
    assert_eq!(s.master_key_file().expect("path").0, PathBuf::from("/old"));

    // The variables still win over the file, whichever name it uses.
    let env = [("LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE", "/env")];
    let s = load(&env, Some(&path), &Overrides::default()).expect("env wins");
    assert_eq!(
        s.kms.local.master_key_file.as_deref(),
        Some(Path::new("/env"))
    );
    assert_eq!(s.kms.local.min_master_key_version, 2);

    // Both names in one file: fine when they agree or set different settings.
    let (_dir, path) = file(
        "[local]\nmaster_key_file = \"/same\"\n\
         [kms.local]\nmaster_key_file = \"/same\"\nmin_master_key_version = 3\n",
    );
    let s = load(&[], Some(&path), &Overrides::default()).expect("agreeing");
    assert_eq!(
        s.kms.local.master_key_file.as_deref(),
        Some(Path::new("/same"))
    );
    assert_eq!(s.kms.local.min_master_key_version, 3);

    // ... an error naming both when they disagree.
    let (_dir, path) =
        file("[local]\nmaster_key_file = \"/a\"\n[kms.local]\nmaster_key_file = \"/b\"\n");
    let msg = load(&[], Some(&path), &Overrides::default())
        .expect_err("disagreeing")
        .to_string();
    assert!(
        msg.contains("local.master_key_file")
            && msg.contains("kms.local.master_key_file")
            && msg.contains(&path.display().to_string()),
        "{msg}"
    );

    let (_dir, path) = file("local = \"/k\"\n");
    let msg = load(&[], Some(&path), &Overrides::default())
        .expect_err("not a section")
        .to_string();
    assert!(msg.contains("`local`"), "{msg}");
}

#[test]
fn provider_sections_come_from_files_and_their_variables() {
    let (_dir, path) = file(
        "[kms.aws]\nregion = \"eu-west-1\"\n\
         [kms.azure]\ncredentials = \"client-secret\"\nwrap_algorithm = \"a256kw\"\n\
         [kms.gcp]\ncredentials = \"anonymous\"\n",
    );
    let s = load(&[], Some(&path), &Overrides::default()).expect("file");
    assert_eq!(s.kms.aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(s.kms.azure.credentials, AzureCredentials::ClientSecret);
    assert_eq!(s.kms.azure.wrap_algorithm, AzureKeyWrap::A256Kw);
    assert_eq!(s.kms.gcp.credentials, GcpCredentials::Anonymous);

    let env = [
        ("LLM_ACCOUNTING_KMS_AWS_REGION", "us-east-2"),
        ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "Managed-Identity"),
        ("LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM", "RSA-OAEP-256"),
        // Blank means "not set", as it always did: the default.
        ("LLM_ACCOUNTING_GCP_CREDENTIALS", " "),
    ];
    let s = load(&env, Some(&path), &Overrides::default()).expect("env");
    assert_eq!(s.kms.aws.region.as_deref(), Some("us-east-2"));
    assert_eq!(s.kms.azure.credentials, AzureCredentials::ManagedIdentity);
    assert_eq!(s.kms.azure.wrap_algorithm, AzureKeyWrap::RsaOaep256);
    assert_eq!(s.kms.gcp.credentials, GcpCredentials::Default);

    let s = load(
        &[("LLM_ACCOUNTING_STORE_LAST_USED_INTERVAL_SECS", "7")],
        None,
        &Overrides::default(),
    )
    .expect("new variable");
    assert_eq!(
        s.manager_options().last_used_interval,
        Duration::from_secs(7)
    );
}

#[test]
fn bad_values_name_the_variable_flag_or_file_they_came_from() {
    /// Variables, and what the error must mention.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            &[("LLM_ACCOUNTING_CACHE_TTL_SECS", "soon")],
            &["cache.ttl_secs", "LLM_ACCOUNTING_CACHE_TTL_SECS", "soon"],
        ),
        (
            &[("LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM", "RSA1_5")],
            &[
                "kms.azure.wrap_algorithm",
                "LLM_ACCOUNTING_AZURE_WRAP_ALGORITHM",
                "unknown Azure wrap algorithm `RSA1_5`",
            ],
        ),
        (
            &[("LLM_ACCOUNTING_GCP_CREDENTIALS", "service-account")],
            &["kms.gcp.credentials", "LLM_ACCOUNTING_GCP_CREDENTIALS"],
        ),
        (
            &[("LLM_ACCOUNTING_AZURE_CREDENTIALS", "certificate")],
            &["kms.azure.credentials", "LLM_ACCOUNTING_AZURE_CREDENTIALS"],
        ),
        (
            &[("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "0")],
            &["kms.max_attempts", "LLM_ACCOUNTING_KMS_MAX_ATTEMPTS"],
        ),
        (
            &[("LLM_ACCOUNTING_KMS_HIERARCHY", "team")],
            &[
                "kms.hierarchy",
                "LLM_ACCOUNTING_KMS_HIERARCHY",
                "unknown KMS hierarchy `team`; expected one of: off, store, service, project, user",
            ],
        ),
        (
            &[("LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION", "-1")],
            &[
                "kms.local.min_master_key_version",
                "LLM_ACCOUNTING_LOCAL_MIN_MASTER_KEY_VERSION",
            ],
        ),
    ];
    for (env, expect) in cases {
        let err = load(env, None, &Overrides::default()).expect_err(expect[0]);
        assert!(matches!(err, Error::Config { .. }), "{err}");
        for e in *expect {
            assert!(err.to_string().contains(e), "{err} should mention {e}");
        }
    }

    let o = Overrides {
        provider: Some("vault".into()),
        ..Overrides::default()
    };
    let msg = load(&[], None, &o).expect_err("flag").to_string();
    assert!(
        msg.contains("kms.provider") && msg.contains("--provider"),
        "{msg}"
    );

    let (_dir, path) = file("[cache]\nttl_secs = \"soon\"\n[store]\nmax_connections = 0\n");
    let msg = load(&[], Some(&path), &Overrides::default())
        .expect_err("file")
        .to_string();
    assert!(
        msg.contains("cache.ttl_secs") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    let (_dir, path) = file("[store]\nmax_connections = 0\n");
    let msg = load(&[], Some(&path), &Overrides::default())
        .expect_err("file")
        .to_string();
    assert!(
        msg.contains("store.max_connections") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    // The variable wins over the file, and is the one named.
    let msg = load(
        &[("LLM_ACCOUNTING_DB_MAX_CONNECTIONS", "0")],
        Some(&path),
        &Overrides::default(),
    )
    .expect_err("env")
    .to_string();
    assert!(msg.contains("LLM_ACCOUNTING_DB_MAX_CONNECTIONS"), "{msg}");
}

#[test]
fn debug_redacts_database_passwords() {
    const KEYS: &str = "postgres://app:FAKE-pw-db-31@db.internal/keys";
    const AUDIT: &str = "mysql://audit:FAKE-pw-audit-32@db.internal/audit";
    let vars = [
        ("LLM_ACCOUNTING_DATABASE_URL", KEYS),
        ("LLM_ACCOUNTING_AUDIT_DATABASE_URL", AUDIT),
    ];
    let s = load(&vars, None, &Overrides::default()).expect("settings");
    let o = Overrides {
        database_url: Some(KEYS.into()),
        ..Overrides::default()
    };
    for text in [format!("{s:?}"), format!("{s:#?}"), format!("{o:?}")] {
        assert!(!text.contains("FAKE-pw"), "{text}");
        assert!(
            text.contains("postgres://app:[REDACTED]@db.internal/keys"),
            "{text}"
        );
    }
    let debug = format!("{s:?}");
    assert!(
        debug.contains("mysql://audit:[REDACTED]@db.internal/audit"),
        "{debug}"
    );
    // Every other setting still shows.
    assert!(
        debug.contains("max_connections: 8") && debug.contains("Local"),
        "{debug}"
    );
}

#[test]
fn create_if_missing_from_the_variable_or_the_flag() {
    let none = Overrides::default();
    assert!(!load(&[], None, &none).expect("defaults").create_if_missing);
    let s = load(&[("LLM_ACCOUNTING_CREATE_IF_MISSING", "true")], None, &none).expect("var");
    assert!(s.create_if_missing && s.store_options().create_if_missing);
    let flag = Overrides {
        create_if_missing: true,
        ..Overrides::default()
    };
    assert!(load(&[], None, &flag).expect("flag").create_if_missing);
    let err = load(
        &[("LLM_ACCOUNTING_CREATE_IF_MISSING", "maybe")],
        None,
        &none,
    )
    .expect_err("not a boolean");
    let text = err.to_string();
    assert!(text.contains("LLM_ACCOUNTING_CREATE_IF_MISSING"), "{text}");
}

#[test]
fn accounting_settings_from_variables_and_files() {
    let defaults = load(&[], None, &Overrides::default()).expect("defaults");
    assert_eq!(defaults.accounting.enforcement, Enforcement::Strict);
    assert_eq!(defaults.accounting.database_url, None);
    let env = [
        ("LLM_ACCOUNTING_ACCOUNTING_ENFORCEMENT", "local"),
        ("LLM_ACCOUNTING_ACCOUNTING_SYNC_MS", "250"),
        (
            "LLM_ACCOUNTING_ACCOUNTING_DATABASE_URL",
            "postgres://u:hunter2@db/acct",
        ),
    ];
    let s = load(&env, None, &Overrides::default()).expect("variables");
    assert_eq!(s.accounting.enforcement, Enforcement::Local);
    assert_eq!(s.accounting.sync_ms, 250);
    assert_eq!(
        s.accounting.database_url.as_deref(),
        Some("postgres://u:hunter2@db/acct")
    );
    assert!(
        !format!("{s:?}").contains("hunter2"),
        "the password is redacted"
    );

    let e = load(
        &[("LLM_ACCOUNTING_ACCOUNTING_ENFORCEMENT", "lenient")],
        None,
        &Overrides::default(),
    )
    .expect_err("unknown enforcement");
    assert!(e.to_string().contains("lenient"), "{e}");
    let e = load(
        &[("LLM_ACCOUNTING_ACCOUNTING_SYNC_MS", "0")],
        None,
        &Overrides::default(),
    )
    .expect_err("zero interval");
    assert!(e.to_string().contains("accounting.sync_ms"), "{e}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[accounting]\nenforcment = \"local\"\n").expect("write");
    let e = load(&[], Some(&file), &Overrides::default()).expect_err("misspelt key");
    assert!(e.to_string().contains("enforcment"), "{e}");
}

#[test]
fn the_redis_engine_needs_a_url_and_never_shows_its_password() {
    let none = Overrides::default();
    let defaults = load(&[], None, &none).expect("defaults");
    assert_eq!(defaults.accounting.engine, AccountingEngine::Database);
    assert_eq!(defaults.accounting.redis_fallback, RedisFallback::None);
    const URL: &str = "redis://app:FAKE-pw-redis-33@cache.internal:6379/2";
    let vars = [
        ("LLM_ACCOUNTING_ACCOUNTING_ENGINE", "Redis"),
        ("LLM_ACCOUNTING_ACCOUNTING_REDIS_URL", URL),
        ("LLM_ACCOUNTING_ACCOUNTING_REDIS_FALLBACK", "database"),
    ];
    let s = load(&vars, None, &none).expect("redis");
    assert_eq!(s.accounting.engine, AccountingEngine::Redis);
    assert_eq!(s.accounting.redis_url.as_deref(), Some(URL));
    assert_eq!(s.accounting.redis_fallback, RedisFallback::Database);
    for text in [format!("{s:?}"), format!("{s:#?}")] {
        assert!(!text.contains("FAKE-pw"), "{text}");
        assert!(
            text.contains("redis://app:[REDACTED]@cache.internal:6379/2"),
            "{text}"
        );
    }
    // A URL is required, and named with its variable.
    let err = load(&vars[..1], None, &none).expect_err("no URL");
    let text = err.to_string();
    assert!(
        text.contains("accounting.redis_url")
            && text.contains("LLM_ACCOUNTING_ACCOUNTING_REDIS_URL"),
        "{text}"
    );
    // An unknown engine or fallback lists the known ones.
    let err = load(
        &[("LLM_ACCOUNTING_ACCOUNTING_ENGINE", "memcached")],
        None,
        &none,
    )
    .expect_err("unknown engine");
    let text = err.to_string();
    assert!(
        text.contains("memcached") && text.contains("database, redis"),
        "{text}"
    );
    let err = load(
        &[("LLM_ACCOUNTING_ACCOUNTING_REDIS_FALLBACK", "memory")],
        None,
        &none,
    )
    .expect_err("unknown fallback");
    assert!(err.to_string().contains("none, database"), "{err}");
    // A file says the same.
    let (_dir, path) =
        file("[accounting]\nengine = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n");
    let s = load(&[], Some(&path), &none).expect("file");
    assert_eq!(s.accounting.engine, AccountingEngine::Redis);
}

/// Issue 23: `database_url = "postgres://u:PW@h/db" x` in a configuration file made the
/// parse error quote the line, password included; a URL given where a number or a boolean is
/// expected was quoted too.
#[test]
fn configuration_errors_never_show_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    for text in [
        "database_url = \"postgres://u:S3cretPW@h/db\" x\n",
        "[accounting]\nredis_url = \"redis://:S3cretPW@127.0.0.1:6379/0\" \"\n",
        "create_if_missing = \"mysql://root:S3cretPW@h/db\"\n",
        "[store]\nmax_connections = \"postgres://u:S3cretPW@h/db?password=S3cretPW\"\n",
    ] {
        std::fs::write(&file, text).expect("write");
        let e = load(&[], Some(&file), &Overrides::default()).expect_err(text);
        let mut shown = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            shown.push_str(&s.to_string());
            source = s.source();
        }
        assert!(!shown.contains("S3cretPW"), "{text}: {shown}");
        assert!(
            shown.contains(&file.display().to_string()) || shown.contains("bad value"),
            "{shown}"
        );
    }
    // Passwords go; the rest of a URL, and every other word, stay.
    assert_eq!(
        file::redact_urls_in("at \"postgres://u:pw@h/db\" x, see `mysql://h/db`"),
        "at \"postgres://u:[REDACTED]@h/db\" x, see `mysql://h/db`"
    );
}
