//! `exec`: run a command with API keys in its environment, as `op run`, `aws-vault exec` and
//! `sops exec-env` do.
//!
//! Every mapping is parsed and every key read (one `get_many`) before the command starts, so a
//! mistake stops the run with the usual exit codes and the command never sees half its keys.
//! The manager is shut down (last-used times and the audit trail flushed) before the command
//! starts. Then the command's exit code is passed through; a command killed by a signal gives
//! 128 + the signal number.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use llm_accounting::{ApiKey, Error, KeyIdentity, Result};

use super::{Context, finish};
use crate::cli::ExecArgs;
use zeroize::Zeroizing;

use crate::dotenv::is_env_name;
use crate::{exit_code, reference};

/// Keys read at once.
const CONCURRENCY: usize = 8;

/// One `VAR=SERVICE[:USER[:PROJECT]]` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// The variable to set.
    pub(crate) var: String,
    /// Whose key it gets.
    pub(crate) identity: KeyIdentity,
}

/// Parses `VAR=SERVICE[:USER[:PROJECT]]`; `where_` says where it came from, for the message.
pub(crate) fn parse_mapping(spec: &str, where_: &str) -> Result<Mapping> {
    // The mapping is never repeated whole: what follows `=` may be a key (a `.env` file of
    // values given where a file of service names is expected). Only a valid variable name is.
    let var_part = spec.split_once('=').map_or(spec, |(v, _)| v).trim();
    let named = if is_env_name(var_part) {
        format!("the mapping of {var_part}")
    } else {
        "a mapping".to_owned()
    };
    let bad = |why: &str| {
        Error::invalid(
            "--env mapping",
            format!("{where_}: {named} {why}; expected VAR=SERVICE[:USER[:PROJECT]]"),
        )
    };
    let (var, target) = spec.split_once('=').ok_or_else(|| bad("has no `=`"))?;
    let var = var.trim();
    if !is_env_name(var) {
        return Err(bad(
            "does not start with a variable name (letters, digits, `_`)",
        ));
    }
    if reference::is_reference(target.trim()) {
        let identity = reference::parse(target.trim())
            .map_err(|e| Error::invalid("--env mapping", format!("{where_}: {named}: {e}")))?;
        return Ok(Mapping {
            var: var.to_owned(),
            identity,
        });
    }
    let mut parts = target.trim().split(':');
    let service = parts.next().unwrap_or_default();
    let user = parts.next().filter(|u| !u.is_empty());
    let project = parts.next().filter(|p| !p.is_empty());
    if parts.next().is_some() {
        return Err(bad("has more than three `:`-separated parts"));
    }
    if service.is_empty() {
        return Err(bad("names no service"));
    }
    let identity = KeyIdentity::from_parts(service, user, project)?;
    Ok(Mapping {
        var: var.to_owned(),
        identity,
    })
}

/// A variable an `--env-file` sets: a stored key (its value is a reference), or a plain value
/// passed through as it is.
pub(crate) enum FileVar {
    /// `VAR=llm-accounting://...`.
    Key(Mapping),
    /// Any other `VAR=value`.
    Plain {
        /// The variable.
        var: String,
        /// Its value, as dotenv tools read it (never printed).
        value: Zeroizing<String>,
    },
}

/// The variables of an `--env-file`, read as python-dotenv reads a `.env` file (quotes,
/// comments, `export`, `${VAR}` expansion): a value that is a reference
/// (`llm-accounting://SERVICE[?user=U][&project=P]`) names a stored key; every other value is
/// passed through unchanged.
fn parse_env_file(path: &Path) -> Result<Vec<FileVar>> {
    let text = Zeroizing::new(read_named_file(path, "--env-file")?);
    let file = path.display().to_string();
    let mut entries = crate::dotenv::parse(&text, &file)?;
    crate::dotenv::expand(&mut entries);
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if reference::is_reference(e.value.trim()) {
            let identity = reference::parse(e.value.trim()).map_err(|err| {
                Error::invalid(
                    "--env-file",
                    format!(
                        "{} line {}: {}: {err}",
                        crate::escape::text(&file),
                        e.line,
                        e.name
                    ),
                )
            })?;
            out.push(FileVar::Key(Mapping {
                var: e.name,
                identity,
            }));
        } else {
            out.push(FileVar::Plain {
                var: e.name,
                value: e.value,
            });
        }
    }
    Ok(out)
}

/// Largest file `--env-file` reads (1 MiB): env files are small, and a device or a file that
/// keeps growing must not be read into memory without end.
pub(crate) const MAX_NAMED_FILE_BYTES: u64 = 1 << 20;

/// The text of a file named on the command line: a regular file (symbolic links followed) of
/// at most [`MAX_NAMED_FILE_BYTES`]. A file that is missing, unreadable, not a regular file
/// (`/dev/zero`, a pipe, a directory) or too large is a usage error naming it (exit 2), not
/// a failure to retry; what was read of a refused file is wiped.
pub(crate) fn read_named_file(path: &Path, flag: &'static str) -> Result<String> {
    use std::io::Read;
    let path_text = path.display().to_string();
    let shown = crate::escape::text(&path_text);
    let refuse = |why: String| Error::invalid(flag, format!("cannot read {shown}: {why}"));
    let file = std::fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
    // The metadata of the file opened, not of the path: nothing can be swapped in between.
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a device, pipe or directory); give the path of a file".into(),
        ));
    }
    let too_large = || {
        refuse(format!(
            "larger than {} MiB, the most an env file may hold",
            MAX_NAMED_FILE_BYTES >> 20
        ))
    };
    if meta.len() > MAX_NAMED_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(MAX_NAMED_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| refuse(e.to_string()))?;
    // It grew while being read.
    if text.len() as u64 > MAX_NAMED_FILE_BYTES {
        return Err(too_large());
    }
    Ok(std::mem::take(&mut *text))
}

/// Variables that change how a program is loaded or run: the dynamic loader's (`LD_*` on
/// Linux and the BSDs, `DYLD_*` on macOS), the search path, and the start-up files or options
/// of shells and interpreters. A key put in one of them can be printed or run (`LD_PRELOAD=<key>`
/// makes the loader print "cannot be preloaded" with the value): `exec` refuses them unless
/// `--allow-name`.
pub(crate) const LOADER_VARIABLES: &[&str] = &[
    "PATH",
    "IFS",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "GIT_SSH_COMMAND",
    "EDITOR",
    "PAGER",
];

/// Whether `var` is one of [`LOADER_VARIABLES`] or starts with `LD_` or `DYLD_`.
fn runs_code(var: &str) -> bool {
    var.starts_with("LD_") || var.starts_with("DYLD_") || LOADER_VARIABLES.contains(&var)
}

/// What the command gets: the variables that get stored keys, and the plain ones.
struct Variables {
    keys: Vec<Mapping>,
    plain: Vec<(String, Zeroizing<String>)>,
}

/// Every variable of the command line and env files; a variable named twice is refused, and
/// so is a run with no key at all.
fn variables(args: &ExecArgs) -> Result<Variables> {
    let mut keys = Vec::new();
    let mut plain = Vec::new();
    for path in &args.env_file {
        for v in parse_env_file(path)? {
            match v {
                FileVar::Key(m) => keys.push(m),
                FileVar::Plain { var, value } => plain.push((var, value)),
            }
        }
    }
    for spec in &args.env {
        keys.push(parse_mapping(spec, "--env")?);
    }
    if keys.is_empty() {
        let why = if args.env_file.is_empty() {
            "no key to pass: give --env VAR=SERVICE[:USER[:PROJECT]] or --env-file FILE".to_owned()
        } else {
            format!(
                "no key to pass: the --env-file holds no reference ({} plain variable(s)); a \
                 line such as OPENAI_API_KEY=llm-accounting://openai?user=alice names a stored \
                 key (a VAR=SERVICE mapping goes in --env)",
                plain.len()
            )
        };
        return Err(Error::invalid("exec", why));
    }
    for m in &keys {
        if runs_code(&m.var) && !args.allow_name.contains(&m.var) {
            return Err(Error::invalid(
                "--env mapping",
                format!(
                    "{} changes how the command is loaded or run (a key in it could be printed \
                     or executed by the loader or the shell); refused unless --allow-name {}",
                    m.var, m.var
                ),
            ));
        }
    }
    let mut seen = BTreeMap::new();
    for m in &keys {
        if let Some(other) = seen.insert(m.var.as_str(), m.identity.to_string()) {
            return Err(Error::invalid(
                "--env mapping",
                format!("{} is set twice (to {other} and to {})", m.var, m.identity),
            ));
        }
    }
    for (var, _) in &plain {
        if seen
            .insert(var.as_str(), "a plain value".to_owned())
            .is_some()
        {
            return Err(Error::invalid(
                "--env-file",
                format!("{var} is set twice (the value is not shown)"),
            ));
        }
    }
    Ok(Variables { keys, plain })
}

/// `exec`: the exit code to leave with.
pub(crate) async fn exec(ctx: &Context, args: ExecArgs) -> Result<u8> {
    let Variables {
        keys: mappings,
        plain,
    } = variables(&args)?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| Error::invalid("exec", "no command to run"))?;
    let identities: Vec<KeyIdentity> = mappings.iter().map(|m| m.identity.clone()).collect();
    if let Some(model) = &args.model {
        let keys = super::quota::gated_get_many(ctx, &identities, model, args.input_tokens).await?;
        let keys = mappings.iter().map(|m| m.var.as_str()).zip(keys).collect();
        return run_child(program, rest, keys, plain).await;
    }
    let manager = ctx.manager().await?;
    let results = manager.get_many(&identities, CONCURRENCY).await;
    let mut keys: Vec<(&str, ApiKey)> = Vec::with_capacity(results.len());
    let mut first_error = None;
    for (m, (_, result)) in mappings.iter().zip(results) {
        match result {
            Ok(key) => keys.push((&m.var, key)),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                } else {
                    eprintln!(
                        "{} (for {})",
                        crate::output::error_line(&e),
                        crate::escape::text(&m.var)
                    );
                }
            }
        }
    }
    let read = match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    };
    finish(&manager, read).await?;
    drop(manager);
    run_child(program, rest, keys, plain).await
}

/// Starts `program` with the keys added to its environment, waits for it, and passes its
/// exit status on. SIGTERM and SIGHUP are forwarded; SIGINT and SIGQUIT ignored meanwhile.
async fn run_child(
    program: &OsString,
    args: &[OsString],
    keys: Vec<(&str, ApiKey)>,
    plain: Vec<(String, Zeroizing<String>)>,
) -> Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for (var, value) in &plain {
        cmd.env(var, value.as_str());
    }
    for (var, key) in &keys {
        cmd.env(var, key.expose_secret());
    }
    die_with_parent(&mut cmd);
    // Handlers before the child exists, so that no signal falls between.
    let mut handlers = Vec::new();
    for kind in [
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::interrupt(),
        SignalKind::quit(),
    ] {
        let s = signal(kind).map_err(|e| Error::Io {
            operation: "installing a signal handler",
            path: "exec".to_owned(),
            source: Arc::new(e),
        })?;
        handlers.push(s);
    }
    let spawned = cmd.spawn();
    // The command's copy of the environment is freed with it; ours go now.
    drop(cmd);
    drop(keys);
    drop(plain);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let shown = crate::escape::text(&program.to_string_lossy()).into_owned();
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            eprintln!("error: cannot run {shown}: {e}");
            return Ok(code);
        }
    };
    let pid = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let [mut term, mut hup, mut int, mut quit] =
        <[_; 4]>::try_from(handlers).map_err(|_| Error::invalid("exec", "signal handlers"))?;
    let status = loop {
        let forward = tokio::select! {
            status = child.wait() => break status,
            _ = term.recv() => Some(rustix::process::Signal::TERM),
            _ = hup.recv() => Some(rustix::process::Signal::HUP),
            _ = int.recv() => None,
            _ = quit.recv() => None,
        };
        if let (Some(sig), Some(pid)) = (forward, pid) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    };
    let status = status.map_err(|e| Error::Io {
        operation: "waiting for the command",
        path: program.to_string_lossy().into_owned(),
        source: Arc::new(e),
    })?;
    Ok(exit_status_code(status))
}

/// On Linux, makes the command receive SIGKILL when this process dies, however it dies (a
/// `kill -9` included), so that it does not live on holding the keys: `PR_SET_PDEATHSIG`, set
/// in the child between fork and exec. A parent that died before that is caught by comparing
/// the child's parent with ours. Elsewhere (macOS, the BSDs) there is no such call: a command
/// whose `exec` is killed with SIGKILL keeps running (SIGTERM and SIGHUP are forwarded).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes two system calls (prctl and getppid) through rustix, which
    // neither allocates nor takes locks, and builds an `io::Error` from a raw OS code, which
    // does not allocate either. It touches no state shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            if getppid() != Some(parent) {
                // We died before the signal was armed: do not start the command at all.
                return Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
}

/// Nothing to set outside Linux (see the Linux version).
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut tokio::process::Command) {}

/// The exit code a shell would give for `status`: its code, or 128 + the signal.
fn exit_status_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        // Only the low 8 bits reach a parent on Unix anyway.
        return (code & 0xff) as u8;
    }
    match status.signal() {
        Some(sig) => (128 + (sig & 0x7f)) as u8,
        None => exit_code::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_and_refuse_what_is_wrong() {
        let m = parse_mapping("OPENAI_API_KEY=openai", "--env").expect("valid");
        assert_eq!(m.var, "OPENAI_API_KEY");
        assert_eq!(m.identity, KeyIdentity::new("openai").expect("valid"));
        let m = parse_mapping("K=openai:alice:web", "--env").expect("valid");
        assert_eq!(
            m.identity,
            KeyIdentity::from_parts("openai", Some("alice"), Some("web")).expect("valid")
        );
        let m = parse_mapping("K=openai::web", "--env").expect("valid");
        assert_eq!(
            m.identity,
            KeyIdentity::from_parts("openai", None, Some("web")).expect("valid")
        );
        for bad in ["K", "=openai", "1K=openai", "K-X=openai", "K=", "K=a:b:c:d"] {
            let e = parse_mapping(bad, "--env").expect_err(bad);
            assert_eq!(exit_code::for_error(&e), exit_code::USAGE, "{bad}: {e}");
        }
        // Issue 23: a value taken for a service is never repeated, whatever is wrong with it.
        let key = "sk-proj-FAKE0123456789abcdefghij";
        for spec in [
            format!("OPENAI_API_KEY={key}"),
            format!("OPENAI_API_KEY={key}:a:b:c"),
            key.to_owned(),
        ] {
            let e = parse_mapping(&spec, ".env line 1")
                .expect_err(&spec)
                .to_string();
            assert!(!e.contains("FAKE0123456789"), "{e}");
        }
    }
}
