//! The `llm-accounting` binary with `--provider gcp` against drongo's Cloud KMS emulator
//! (started by scripts/test), and against a KMS endpoint that is down.
//!
//! The binary gets its settings the way a user's shell would give them (the CryptoKey name, an
//! endpoint override, anonymous credentials); nothing from the test process's own Google Cloud
//! environment leaks in.

#![cfg(feature = "kms-gcp")]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use llm_accounting_kms_gcp::test_support::{create_key, drongo_url};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-gcp-00000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-gcp-00000000000000000000000002";

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        for secret in [KEY1, KEY2] {
            assert!(!self.stderr.contains(secret), "secret on stderr: {self:#?}");
        }
        self
    }

    fn ok(self) -> Self {
        self.code(0)
    }
}

/// A temporary database and the Google Cloud environment of one test.
struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    /// `endpoint` goes to LLM_ACCOUNTING_KMS_ENDPOINT.
    fn new(key_name: &str, endpoint: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = format!("sqlite://{}", dir.path().join("k.db").display());
        // An empty gcloud configuration directory: the user's own ADC file is never read.
        let gcloud = dir.path().join("gcloud");
        std::fs::create_dir(&gcloud).expect("gcloud dir");
        let gcloud = gcloud.display().to_string();
        let vars = [
            ("LLM_ACCOUNTING_DATABASE_URL", db.as_str()),
            ("LLM_ACCOUNTING_KMS_KEY_ID", key_name),
            ("LLM_ACCOUNTING_KMS_ENDPOINT", endpoint),
            ("LLM_ACCOUNTING_GCP_CREDENTIALS", "anonymous"),
            ("CLOUDSDK_CONFIG", gcloud.as_str()),
            // Never ask a metadata server.
            ("GCE_METADATA_HOST", "127.0.0.1:1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        Env { dir, vars }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.to_owned()));
    }

    fn unset(&mut self, name: &str) {
        self.vars.retain(|(k, _)| k != name);
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("LLM_ACCOUNTING_")
                || n.starts_with("GOOGLE_")
                || n.starts_with("CLOUDSDK_")
                || n.starts_with("GCE_")
            {
                cmd.env_remove(&name);
            }
        }
        cmd.env_remove("RUST_LOG")
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn llm-accounting");
        {
            let mut pipe = child.stdin.take().expect("stdin");
            if let Some(input) = stdin {
                let _ = pipe.write_all(input.as_bytes());
            }
        }
        let out = child.wait_with_output().expect("wait");
        Run {
            code: out.status.code().expect("exit code, not a signal"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    /// (provider, master_key_ref) of every stored version.
    fn version_refs(&self) -> Vec<(String, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let db = Database::connect(format!(
                "sqlite://{}",
                self.dir.path().join("k.db").display()
            ))
            .await
            .expect("open the test database");
            db.query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT provider, master_key_ref FROM api_key_versions ORDER BY version",
            ))
            .await
            .expect("query")
            .into_iter()
            .map(|r| {
                (
                    r.try_get("", "provider").expect("provider"),
                    r.try_get("", "master_key_ref").expect("master_key_ref"),
                )
            })
            .collect()
        })
    }
}

/// A loopback port nothing listens on.
fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Small retry limits, so that a down KMS fails fast.
fn fail_fast(env: &mut Env) {
    env.set("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "3");
    env.set("LLM_ACCOUNTING_KMS_INITIAL_BACKOFF_MS", "10");
    env.set("LLM_ACCOUNTING_KMS_MAX_BACKOFF_MS", "50");
    env.set("LLM_ACCOUNTING_KMS_MAX_RETRY_TIME_MS", "2000");
    env.set("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "2000");
}

#[test]
fn round_trip_with_provider_gcp_against_drongo() {
    let Some(url) = drongo_url("round_trip_with_provider_gcp_against_drongo") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let key = rt.block_on(create_key(&url, "cli"));

    let mut env = Env::new(&key, &url);
    let gcp = ["--provider", "gcp", "keys"];
    let with = |cmd: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = gcp.to_vec();
        v.push(cmd);
        v.extend_from_slice(&["--service", "openai", "--user", "alice"]);
        v.extend_from_slice(extra);
        v
    };

    let r = env.run_with(&with("store", &[]), Some(KEY1)).ok();
    assert!(r.stderr.contains("(version 1)"), "{r:#?}");
    assert_eq!(
        env.version_refs(),
        [("gcp".to_owned(), key.clone())],
        "provider `gcp` and the CryptoKey name are recorded"
    );

    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));

    let r = env
        .run(&[gcp.as_slice(), &["list", "--format", "json"]].concat())
        .ok();
    assert!(!r.stdout.contains(KEY1), "{r:#?}");
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(rows[0]["service"], "openai");
    assert_eq!(rows[0]["version"], 1);

    let r = env.run_with(&with("rotate", &[]), Some(KEY2)).ok();
    assert!(r.stderr.contains("(version 2)"), "{r:#?}");
    assert_eq!(env.version_refs().len(), 2);

    // Even with RUST_LOG=trace, no key material reaches stderr (Run::code checks the API keys).
    env.set("RUST_LOG", "trace");
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));
    assert!(
        !r.stderr.contains("\"plaintext\""),
        "a KMS answer was traced"
    );
    env.unset("RUST_LOG");

    // Another key of the same name elsewhere: a clear refusal, not "no key".
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", &format!("{key}-gone"));
    let r = env.run_with(&with("rotate", &[]), Some(KEY1)).code(1);
    assert!(r.stderr.contains("not found"), "{r:#?}");
    assert!(!r.stderr.contains("no API key stored"), "{r:#?}");
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", &key);

    // KMS down: exit 5 after the configured retries, never "no key".
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", &closed_port_url());
    fail_fast(&mut env);
    let r = env.run(&with("get", &[])).code(5);
    assert!(r.stderr.contains("unavailable"), "{r:#?}");
    assert!(r.stderr.contains("gave up after 3 attempts"), "{r:#?}");
    assert!(r.stdout.is_empty());
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", &url);

    env.run(&with("delete", &[])).ok();
    let r = env.run(&with("get", &[])).code(3);
    assert!(r.stderr.contains("no API key stored"), "{r:#?}");
}

#[test]
fn gcp_without_a_key_name_is_a_configuration_error() {
    let mut env = Env::new("unused", &closed_port_url());
    env.unset("LLM_ACCOUNTING_KMS_KEY_ID");
    let r = env
        .run_with(
            &["--provider", "gcp", "keys", "store", "--service", "openai"],
            Some(KEY1),
        )
        .code(2);
    assert!(r.stderr.contains("LLM_ACCOUNTING_KMS_KEY_ID"), "{r:#?}");
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", "projects/p/keyRings/r");
    let r = env
        .run_with(
            &["--provider", "gcp", "keys", "store", "--service", "openai"],
            Some(KEY1),
        )
        .code(2);
    assert!(
        r.stderr.contains("not a Cloud KMS CryptoKey name"),
        "{r:#?}"
    );
}
