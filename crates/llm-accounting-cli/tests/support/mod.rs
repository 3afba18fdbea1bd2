//! What the cloud-provider CLI tests (`aws.rs`, `azure.rs`, `gcp.rs`) share: a temporary
//! database with a provider's environment, runs of the binary with the caller's own cloud
//! variables removed, and helpers for a KMS that is down.

// Each test file uses a different subset.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// What one run of the binary produced.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    secrets: &'static [&'static str],
}

impl Run {
    /// Asserts the exit code, and that no secret reached stderr.
    pub(crate) fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        for secret in self.secrets {
            assert!(!self.stderr.contains(secret), "secret on stderr: {self:#?}");
        }
        self
    }

    /// Asserts success.
    pub(crate) fn ok(self) -> Self {
        self.code(0)
    }
}

/// A temporary database and a provider's environment for one test.
pub(crate) struct CloudEnv {
    pub(crate) dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    /// Prefixes of the test process's variables that never reach the binary.
    strip: &'static [&'static str],
    secrets: &'static [&'static str],
}

impl CloudEnv {
    /// `vars` for every run (plus the database URL), with the test process's variables that
    /// start with `LLM_ACCOUNTING_` or one of `strip` removed; `secrets` must never reach
    /// stderr.
    pub(crate) fn new(
        dir: tempfile::TempDir,
        vars: &[(&str, &str)],
        strip: &'static [&'static str],
        secrets: &'static [&'static str],
    ) -> Self {
        let db = format!("sqlite://{}", dir.path().join("k.db").display());
        let mut all = vec![("LLM_ACCOUNTING_DATABASE_URL".to_owned(), db)];
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        CloudEnv {
            dir,
            vars: all,
            strip,
            secrets,
        }
    }

    pub(crate) fn set(&mut self, name: &str, value: &str) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.to_owned()));
    }

    pub(crate) fn unset(&mut self, name: &str) {
        self.vars.retain(|(k, _)| k != name);
    }

    pub(crate) fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("LLM_ACCOUNTING_") || self.strip.iter().any(|p| n.starts_with(p)) {
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
            secrets: self.secrets,
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    /// (provider, master_key_ref) of every stored version.
    pub(crate) fn version_refs(&self) -> Vec<(String, String)> {
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
pub(crate) fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Small retry limits, so that a down KMS fails fast.
pub(crate) fn fail_fast(env: &mut CloudEnv) {
    env.set("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "3");
    env.set("LLM_ACCOUNTING_KMS_INITIAL_BACKOFF_MS", "10");
    env.set("LLM_ACCOUNTING_KMS_MAX_BACKOFF_MS", "50");
    env.set("LLM_ACCOUNTING_KMS_MAX_RETRY_TIME_MS", "2000");
    env.set("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "2000");
}
