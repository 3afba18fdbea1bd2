//! The round trip every cloud provider's CLI test makes (feature `cli`): store, get, list,
//! rotate, trace logging, a KMS that is down, disable, enable, delete.
//!
//! A provider's test builds its [`Env`] (key id, endpoint, credentials), describes what is
//! recorded with a [`RoundTrip`], and adds its own steps through [`CloudHooks`]:
//!
//! ```text
//! RoundTrip {
//!     provider: "gcp",
//!     values: [KEY1, KEY2],
//!     endpoint: &url,
//!     recorded_ref: &key,
//!     recorded_ref_why: "provider `gcp` and the CryptoKey name are recorded",
//!     never_traced: &[("\"plaintext\"", "a KMS answer was traced")],
//! }
//! .run(&mut env, &mut GcpSteps { key: &key });
//! ```

use crate::cli::{Env, fail_fast};
use crate::kms::closed_port_url;

/// The variable naming the KMS endpoint.
const KMS_ENDPOINT: &str = "LLM_ACCOUNTING_KMS_ENDPOINT";

/// The variable naming the master key.
const KMS_KEY_ID: &str = "LLM_ACCOUNTING_KMS_KEY_ID";

/// A temporary database and one cloud provider's environment, as a user's shell would give
/// it: none of the test process's variables starting with one of `prefixes`, the API keys
/// `values` never on stderr, `LLM_ACCOUNTING_KMS_KEY_ID` = `key_id`,
/// `LLM_ACCOUNTING_KMS_ENDPOINT` = `endpoint`, and `vars`.
pub fn cloud_env(
    bin: &str,
    prefixes: &[&str],
    values: &[&str],
    key_id: &str,
    endpoint: &str,
    vars: &[(&str, &str)],
) -> Env {
    let mut env = Env::with_database(bin)
        .strip_prefixes(prefixes)
        .secrets(values);
    env.set(KMS_KEY_ID, key_id);
    env.set(KMS_ENDPOINT, endpoint);
    for (name, value) in vars {
        env.set(name, value);
    }
    env
}

/// `--provider P keys store --service openai` (storing `value`) without
/// `LLM_ACCOUNTING_KMS_KEY_ID`: a configuration error (exit 2) that names the variable. The
/// variable is left unset.
///
/// # Panics
///
/// When the run does not fail so.
pub fn assert_key_id_required(env: &mut Env, provider: &str, value: &str) {
    env.unset(KMS_KEY_ID);
    let r = env
        .run_stdin(
            &[
                "--provider",
                provider,
                "keys",
                "store",
                "--service",
                "openai",
            ],
            value,
        )
        .code(2);
    assert!(r.stderr.contains(KMS_KEY_ID), "{r:#?}");
}

/// One provider's round trip through the binary, as `--service openai --user alice`.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip<'a> {
    /// The `--provider` value, which is also the provider name the versions record.
    pub provider: &'a str,
    /// The API key stored first and the one it is rotated to (obviously fake); they must
    /// never reach stderr (add them to [`Env::secrets`]).
    pub values: [&'a str; 2],
    /// A working KMS endpoint, for `LLM_ACCOUNTING_KMS_ENDPOINT`.
    pub endpoint: &'a str,
    /// The master-key reference the first version must record.
    pub recorded_ref: &'a str,
    /// Why that one (the assertion's message).
    pub recorded_ref_why: &'a str,
    /// What stderr must not contain under `RUST_LOG=trace`, each with the failure message.
    pub never_traced: &'a [(&'a str, &'a str)],
}

/// A provider's own steps in a [`RoundTrip`]. Each leaves the environment as it found it.
pub trait CloudHooks {
    /// After the first value is stored, read and listed, before it is rotated. Returns the
    /// master-key reference the rotated version must record (by default the same as the
    /// first's).
    fn before_rotate(&mut self, env: &mut Env, trip: &RoundTrip<'_>) -> String {
        let _ = env;
        trip.recorded_ref.to_owned()
    }

    /// After the rotated value was read under `RUST_LOG=trace`, before the KMS goes down.
    fn after_trace(&mut self, env: &mut Env, trip: &RoundTrip<'_>) {
        let _ = (env, trip);
    }
}

impl RoundTrip<'_> {
    /// `--provider P keys CMD --service openai --user alice`.
    pub fn args<'s>(&'s self, cmd: &'s str) -> Vec<&'s str> {
        vec![
            "--provider",
            self.provider,
            "keys",
            cmd,
            "--service",
            "openai",
            "--user",
            "alice",
        ]
    }

    /// `--provider P keys list --format json`.
    fn list_json(&self) -> Vec<&str> {
        vec![
            "--provider",
            self.provider,
            "keys",
            "list",
            "--format",
            "json",
        ]
    }

    /// Runs the round trip in `env`, whose `LLM_ACCOUNTING_KMS_ENDPOINT` is
    /// [`RoundTrip::endpoint`] and whose database is empty.
    ///
    /// # Panics
    ///
    /// On the first check that fails.
    pub fn run(&self, env: &mut Env, hooks: &mut dyn CloudHooks) {
        let [first, second] = self.values;
        let p = self.provider;

        let r = env.run_stdin(&self.args("store"), first).ok();
        assert!(r.stderr.contains("(version 1)"), "{r:#?}");
        assert_eq!(
            env.version_refs(),
            [(p.to_owned(), self.recorded_ref.to_owned())],
            "{}",
            self.recorded_ref_why
        );

        let r = env.run(&self.args("get")).ok();
        assert_eq!(r.stdout, format!("{first}\n"));

        let r = env.run(&self.list_json()).ok();
        assert!(!r.stdout.contains(first), "{r:#?}");
        let rows: serde_json::Value = r.json();
        assert_eq!(rows[0]["service"], "openai");
        assert_eq!(rows[0]["version"], 1);

        let rotated_ref = hooks.before_rotate(env, self);

        let r = env.run_stdin(&self.args("rotate"), second).ok();
        assert!(r.stderr.contains("(version 2)"), "{r:#?}");
        let refs = env.version_refs();
        assert_eq!(refs.len(), 2);
        assert_eq!(
            refs,
            [
                (p.to_owned(), self.recorded_ref.to_owned()),
                (p.to_owned(), rotated_ref)
            ]
        );
        let r = env.run(&self.args("get")).ok();
        assert_eq!(r.stdout, format!("{second}\n"));
        let r = env.run(&self.list_json()).ok();
        assert!(!r.stdout.contains(second), "{r:#?}");

        // Even with RUST_LOG=trace, no key material reaches stderr (Run::code checks the API
        // keys; the provider names what else must not show).
        env.set("RUST_LOG", "trace");
        let r = env.run(&self.args("get")).ok();
        assert_eq!(r.stdout, format!("{second}\n"));
        for (needle, why) in self.never_traced {
            assert!(!r.stderr.contains(needle), "{why}");
        }
        env.unset("RUST_LOG");

        hooks.after_trace(env, self);

        // KMS down: exit 5 after the configured retries, never "no key".
        env.set(KMS_ENDPOINT, &closed_port_url());
        fail_fast(env);
        let r = env.run(&self.args("get")).code(5);
        assert!(r.stderr.contains("unavailable"), "{r:#?}");
        assert!(r.stderr.contains("gave up after 3 attempts"), "{r:#?}");
        assert!(r.stdout.is_empty());
        env.set(KMS_ENDPOINT, self.endpoint);

        // Disable, enable and delete are database-only; they work the same with any provider.
        env.run(&self.args("disable")).ok();
        env.run(&self.args("get")).code(1);
        env.run(&self.args("enable")).ok();
        assert_eq!(
            env.run(&self.args("get")).ok().stdout,
            format!("{second}\n")
        );
        env.run(&self.args("delete")).ok();
        let r = env.run(&self.args("get")).code(3);
        assert!(r.stderr.contains("no API key stored"), "{r:#?}");
        let r = env.run(&self.list_json()).ok();
        assert_eq!(r.stdout.trim(), "[]");
    }
}
