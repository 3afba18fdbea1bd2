//! Runs of the `llm-accounting` binary for end-to-end tests (feature `cli`).
//!
//! An [`Env`] is a temporary directory (SQLite database `k.db`, a local master key file when
//! asked for) plus the variables every run gets. A run never sees the test process's own
//! `LLM_ACCOUNTING_*` variables (nor, for cloud tests, its `AWS_*`, `AZURE_*`, ... ones), nor
//! its `RUST_LOG` or `COLUMNS`, nor the user's configuration file (`XDG_CONFIG_HOME` points
//! into the temporary directory). The binary's path comes from the caller, whose crate owns it:
//! `Env::new(env!("CARGO_BIN_EXE_llm-accounting"))`.
//!
//! Every test spawns the binary through an [`Env`]: [`Env::run`] and its variants wait for the
//! run; a test that watches, signals or kills the process takes an [`Env::command`].

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, QueryResult, Statement, Value,
};

/// The variable naming the database.
const DATABASE_URL: &str = "LLM_ACCOUNTING_DATABASE_URL";

/// The variable asking for named files to be created when missing, which [`Env::new`] and
/// [`Env::with_database`] set (their files do not exist before the first run); a test of what
/// happens without it unsets it.
pub const CREATE_IF_MISSING: &str = "LLM_ACCOUNTING_CREATE_IF_MISSING";

/// What one run of the binary produced.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    secrets: Vec<String>,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("code", &self.code)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish_non_exhaustive()
    }
}

impl Run {
    /// Asserts the exit code, and that none of the environment's secrets (see
    /// [`Env::secrets`]) reached stderr.
    ///
    /// # Panics
    ///
    /// When either does not hold.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        for secret in &self.secrets {
            assert!(!self.stderr.contains(secret), "secret on stderr: {self:#?}");
        }
        self
    }

    /// Asserts success (see [`Run::code`]).
    ///
    /// # Panics
    ///
    /// When the run failed or printed a secret on stderr.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.code(0)
    }

    /// Stdout as JSON.
    ///
    /// # Panics
    ///
    /// When stdout is not JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }
}

/// A temporary home and the environment of one test's runs.
#[derive(Debug)]
pub struct Env {
    bin: PathBuf,
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    strip: Vec<String>,
    secrets: Vec<String>,
}

impl Env {
    /// The database `k.db` and the local master key file `master.key`, both in a fresh
    /// temporary directory, created by the first run ([`CREATE_IF_MISSING`] is set).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        let mut env = Env::with_database(bin);
        let key = env.dir().join("master.key").display().to_string();
        env.set("LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE", &key);
        env
    }

    /// Only the database `k.db` in a fresh temporary directory, created by the first run
    /// ([`CREATE_IF_MISSING`] is set); a cloud provider's test adds its own variables.
    pub fn with_database(bin: impl Into<PathBuf>) -> Self {
        let mut env = Env::bare(bin);
        let db = format!("sqlite://{}", env.db_path().display());
        env.set(DATABASE_URL, &db);
        env.set(CREATE_IF_MISSING, "true");
        env
    }

    /// Nothing configured but the data directory `data` in a fresh temporary directory.
    pub fn with_data_dir_only(bin: impl Into<PathBuf>) -> Self {
        let mut env = Env::bare(bin);
        let data = env.dir().join("data").display().to_string();
        env.set("LLM_ACCOUNTING_DATA_DIR", &data);
        env
    }

    /// A fresh temporary directory; `XDG_CONFIG_HOME` points into it (see
    /// [`Env::default_config_file`]), so that no run reads the user's own configuration file.
    fn bare(bin: impl Into<PathBuf>) -> Self {
        let mut env = Env {
            bin: bin.into(),
            dir: tempfile::tempdir().expect("temporary directory"),
            vars: Vec::new(),
            strip: Vec::new(),
            secrets: Vec::new(),
        };
        let config = env.dir().join("config").display().to_string();
        env.set("XDG_CONFIG_HOME", &config);
        env
    }

    /// The configuration file a run reads when none is named (`llm-accounting/config.toml`
    /// under this environment's `XDG_CONFIG_HOME`); it does not exist until a test writes it.
    pub fn default_config_file(&self) -> PathBuf {
        self.dir().join("config/llm-accounting/config.toml")
    }

    /// Also keeps the test process's variables that start with each of `prefixes` (`AWS_`,
    /// `AZURE_`, ...) from the binary.
    pub fn strip_prefixes(mut self, prefixes: &[&str]) -> Self {
        self.strip.extend(prefixes.iter().map(|p| (*p).to_owned()));
        self
    }

    /// Values that must never appear on stderr: [`Run::code`] and [`Run::ok`] check.
    pub fn secrets(mut self, secrets: &[&str]) -> Self {
        self.secrets.extend(secrets.iter().map(|s| (*s).to_owned()));
        self
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite database file of [`Env::new`] and [`Env::with_database`].
    pub fn db_path(&self) -> PathBuf {
        self.dir().join("k.db")
    }

    /// The variables every run gets, in order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets a variable for the following runs.
    pub fn set(&mut self, name: &str, value: &str) {
        self.unset(name);
        self.vars.push((name.to_owned(), value.to_owned()));
    }

    /// Removes a variable from the following runs.
    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(k, _)| k != name);
    }

    /// The binary with `args` and the environment of a run (see [`Env::run_with`]), its stdin,
    /// stdout and stderr left to the caller: for a test that watches, signals or kills the
    /// process while it runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command_of(self.bin.as_os_str());
        cmd.args(args);
        cmd
    }

    /// Another `program` (a shell, ...) with the environment of a run, and the binary's
    /// directory first on `PATH`: what a shell that runs `llm-accounting` by name needs.
    pub fn program(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = self.command_of(program.as_ref());
        let mut path = vec![self.bin.parent().map(Path::to_path_buf).unwrap_or_default()];
        if let Some(old) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&old));
        }
        cmd.env("PATH", std::env::join_paths(path).expect("PATH"));
        cmd
    }

    /// `program` with the environment of a run: the test process's `LLM_ACCOUNTING_*`
    /// variables (and those starting with a prefix of [`Env::strip_prefixes`]), `RUST_LOG`
    /// and `COLUMNS` removed, this environment's variables set.
    fn command_of(&self, program: &OsStr) -> Command {
        let mut cmd = Command::new(program);
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("LLM_ACCOUNTING_") || self.strip.iter().any(|p| n.starts_with(p)) {
                cmd.env_remove(&name);
            }
        }
        // COLUMNS would fit tables to the developer's terminal.
        cmd.env_remove("RUST_LOG")
            .env_remove("COLUMNS")
            .envs(self.vars());
        cmd
    }

    /// Runs the binary with `args`, feeding `stdin` (or an empty, closed stdin), with `extra`
    /// variables for this run only.
    ///
    /// # Panics
    ///
    /// When the binary cannot be run, is killed by a signal or prints other than UTF-8.
    pub fn run_with(&self, args: &[&str], stdin: Option<&[u8]>, extra: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(extra.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn llm-accounting");
        {
            let mut pipe = child.stdin.take().expect("stdin");
            if let Some(input) = stdin {
                // The binary may exit before reading (e.g. a usage error): ignore EPIPE.
                let _ = pipe.write_all(input);
            }
        }
        let out = child.wait_with_output().expect("wait");
        Run {
            code: out.status.code().expect("exit code, not a signal"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
            secrets: self.secrets.clone(),
        }
    }

    /// Runs the binary with `args` and an empty stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, &[])
    }

    /// Runs the binary with `args`, `stdin` on its standard input.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.run_with(args, Some(stdin.as_bytes()), &[])
    }

    /// Runs the binary with `args` on a pseudo-terminal (util-linux `script`), typing
    /// `typed`: the exit code (`None` when killed by a signal) and everything the terminal
    /// showed.
    ///
    /// # Panics
    ///
    /// When `script` cannot be run.
    pub fn run_on_a_terminal(&self, args: &[&str], typed: &str) -> (Option<i32>, String) {
        let bin = self.bin.display().to_string();
        let line = std::iter::once(bin.as_str())
            .chain(args.iter().copied())
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut script = self.command_of(OsStr::new("script"));
        script
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = script.spawn().expect("util-linux script");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(typed.as_bytes())
            .expect("type");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs `f` on a connection of its own to `k.db`, closed afterwards.
    ///
    /// # Panics
    ///
    /// When the database cannot be opened.
    fn on_db<T>(&self, f: impl AsyncFnOnce(&DatabaseConnection) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let db = Database::connect(format!("sqlite://{}", self.db_path().display()))
                .await
                .expect("open the test database");
            let out = f(&db).await;
            db.close().await.expect("close");
            out
        })
    }

    /// Runs `sql` on `k.db` with a connection of its own: what an attacker with write access
    /// to the database file could do.
    ///
    /// # Panics
    ///
    /// When the database cannot be opened or the statement fails.
    pub fn sql(&self, sql: &str) {
        self.on_db(async |db| {
            db.execute_unprepared(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }

    /// Runs `sql` with `values` bound to its `?` placeholders on `k.db` (see [`Env::sql`]).
    ///
    /// # Panics
    ///
    /// When the database cannot be opened or the statement fails.
    pub fn sql_with_values(&self, sql: &str, values: Vec<Value>) {
        self.on_db(async |db| {
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                values,
            ))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }

    /// The rows `sql` selects from `k.db`.
    ///
    /// # Panics
    ///
    /// When the database cannot be opened or the query fails.
    pub fn query(&self, sql: &str) -> Vec<QueryResult> {
        self.on_db(async |db| {
            db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// (provider, master_key_ref) of every stored version, oldest first, read from `k.db`.
    ///
    /// # Panics
    ///
    /// When the database cannot be read.
    pub fn version_refs(&self) -> Vec<(String, String)> {
        self.query("SELECT provider, master_key_ref FROM api_key_versions ORDER BY version")
            .into_iter()
            .map(|r| {
                (
                    r.try_get("", "provider").expect("provider"),
                    r.try_get("", "master_key_ref").expect("master_key_ref"),
                )
            })
            .collect()
    }
}

/// Small retry limits, so that a KMS that is down fails fast: 3 attempts, 10 to 50 ms apart,
/// 2 s per call and in all.
pub fn fail_fast(env: &mut Env) {
    env.set("LLM_ACCOUNTING_KMS_MAX_ATTEMPTS", "3");
    env.set("LLM_ACCOUNTING_KMS_INITIAL_BACKOFF_MS", "10");
    env.set("LLM_ACCOUNTING_KMS_MAX_BACKOFF_MS", "50");
    env.set("LLM_ACCOUNTING_KMS_MAX_RETRY_TIME_MS", "2000");
    env.set("LLM_ACCOUNTING_KMS_TIMEOUT_MS", "2000");
}
