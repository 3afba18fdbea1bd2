//! The `llm-accounting` binary with `--provider azure` against the loopback Key Vault fake
//! (challenge, token request, RSA-OAEP-256 wrapKey/unwrapKey), and against a Key Vault that
//! is down.
//!
//! The binary gets its settings the way a user's shell would give them (the key id, an
//! endpoint override, a client secret in AZURE_*); nothing from the test process's own Azure
//! environment leaks in.

#![cfg(feature = "kms-azure")]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use llm_accounting_kms_azure::test_support::{
    FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FAKE_TENANT_ID, FakeKeyVault,
};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake keys.
const KEY1: &str = "sk-test-FAKE-azure-00000000000000000000000001";
const KEY2: &str = "sk-test-FAKE-azure-00000000000000000000000002";

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

/// A temporary database and the Azure environment of one test.
struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    /// `endpoint` goes to LLM_ACCOUNTING_KMS_ENDPOINT.
    fn new(key_id: &str, endpoint: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = format!("sqlite://{}", dir.path().join("k.db").display());
        let vars = [
            ("LLM_ACCOUNTING_DATABASE_URL", db.as_str()),
            ("LLM_ACCOUNTING_KMS_KEY_ID", key_id),
            ("LLM_ACCOUNTING_KMS_ENDPOINT", endpoint),
            ("LLM_ACCOUNTING_AZURE_CREDENTIALS", "client-secret"),
            ("AZURE_TENANT_ID", FAKE_TENANT_ID),
            ("AZURE_CLIENT_ID", FAKE_CLIENT_ID),
            ("AZURE_CLIENT_SECRET", FAKE_CLIENT_SECRET),
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
                || n.starts_with("AZURE_")
                || n.starts_with("IDENTITY_")
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
fn round_trip_with_provider_azure_against_the_fake() {
    let fake = FakeKeyVault::start();
    let v1 = fake.create_key_version("cli");
    let mut env = Env::new(&FakeKeyVault::key_id("cli"), fake.url());
    let azure = ["--provider", "azure", "keys"];
    let with = |cmd: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = azure.to_vec();
        v.push(cmd);
        v.extend_from_slice(&["--service", "openai", "--user", "alice"]);
        v.extend_from_slice(extra);
        v
    };

    let r = env.run_with(&with("store", &[]), Some(KEY1)).ok();
    assert!(r.stderr.contains("(version 1)"), "{r:#?}");
    assert_eq!(
        env.version_refs(),
        [("azure".to_owned(), v1.clone())],
        "provider `azure` and the versioned key id are recorded"
    );
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY1}\n"));

    // The Key Vault key is rotated: the old record still reads (its version is recorded), the
    // next one is wrapped under the new version.
    let v2 = fake.create_key_version("cli");
    assert_eq!(env.run(&with("get", &[])).ok().stdout, format!("{KEY1}\n"));
    let r = env.run_with(&with("rotate", &[]), Some(KEY2)).ok();
    assert!(r.stderr.contains("(version 2)"), "{r:#?}");
    assert_eq!(
        env.version_refs(),
        [("azure".to_owned(), v1), ("azure".to_owned(), v2)]
    );
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));

    let r = env
        .run(&[azure.as_slice(), &["list", "--format", "json"]].concat())
        .ok();
    assert!(!r.stdout.contains(KEY2), "{r:#?}");

    // Even with RUST_LOG=trace, no key material reaches stderr (Run::code checks the API keys).
    env.set("RUST_LOG", "trace");
    let r = env.run(&with("get", &[])).ok();
    assert_eq!(r.stdout, format!("{KEY2}\n"));
    assert!(!r.stderr.contains(FAKE_CLIENT_SECRET), "secret traced");
    env.unset("RUST_LOG");

    // Key Vault down: exit 5 after the configured retries, never "no key".
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", &closed_port_url());
    fail_fast(&mut env);
    let r = env.run(&with("get", &[])).code(5);
    assert!(r.stderr.contains("unavailable"), "{r:#?}");
    assert!(r.stderr.contains("gave up after 3 attempts"), "{r:#?}");
    assert!(r.stdout.is_empty());
    env.set("LLM_ACCOUNTING_KMS_ENDPOINT", fake.url());

    env.run(&with("delete", &[])).ok();
    let r = env.run(&with("get", &[])).code(3);
    assert!(r.stderr.contains("no API key stored"), "{r:#?}");
}

#[test]
fn azure_without_a_key_id_is_a_configuration_error() {
    let mut env = Env::new("unused", &closed_port_url());
    env.unset("LLM_ACCOUNTING_KMS_KEY_ID");
    let r = env
        .run_with(
            &[
                "--provider",
                "azure",
                "keys",
                "store",
                "--service",
                "openai",
            ],
            Some(KEY1),
        )
        .code(2);
    assert!(r.stderr.contains("LLM_ACCOUNTING_KMS_KEY_ID"), "{r:#?}");
    env.set("LLM_ACCOUNTING_KMS_KEY_ID", "my-vault/keys/k");
    let r = env
        .run_with(
            &[
                "--provider",
                "azure",
                "keys",
                "store",
                "--service",
                "openai",
            ],
            Some(KEY1),
        )
        .code(2);
    assert!(r.stderr.contains("not a Key Vault key id"), "{r:#?}");
}
