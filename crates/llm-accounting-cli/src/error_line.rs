//! The one line the CLI prints for a failure, and the hints it adds in its own words: the
//! library's errors and warnings name no command.

use llm_accounting::Error;

use crate::escape;

/// The one line printed for a failure: `error: <error>: <source>: <source>...`. A source whose
/// text the line already holds (some errors repeat their source) is left out.
pub(crate) fn error_line(error: &Error) -> String {
    // A configuration error's own message keeps its lines (a parser's message points at the
    // line and column); everything else, its sources included, is one line, whatever they
    // contain. Nothing that acts on the terminal either way.
    let chain = llm_accounting::error_chain(error);
    let top = error.to_string();
    let (head, rest) = match chain.strip_prefix(&top) {
        Some(rest) if matches!(error, Error::Config { .. }) => (top.as_str(), rest),
        _ => ("", chain.as_str()),
    };
    let head = head
        .lines()
        .map(|l| escape::text(l.trim_end_matches('\r')).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let mut line = format!(
        "error: {head}{}",
        escape::text(&rest.replace(['\n', '\r'], " "))
    );
    // A key under a retired local master key: the library's reason ends where the command
    // that lists such keys goes.
    if matches!(error, Error::AccessDenied { reason, .. } if reason.ends_with(RETIRED)) {
        line.push_str(": see `keys rewrap --check`");
    }
    if let Some(hint) = hint(error) {
        line.push_str(" (");
        line.push_str(hint);
        line.push(')');
    }
    // One prefix, even when a configuration error wraps another one.
    const PREFIX: &str = "configuration error: ";
    if let Some(first) = line.find(PREFIX) {
        let after = first + PREFIX.len();
        let rest = line[after..].replace(PREFIX, "");
        line.truncate(after);
        line.push_str(&rest);
    }
    line
}

/// What to run about a library warning logged under `target`, in this CLI's words (the
/// library's warnings name no command); printed on the line after the warning.
pub(crate) fn log_hint(target: &str) -> Option<&'static str> {
    (target == llm_accounting::UNSEALED_WARNING_TARGET)
        .then_some("run `llm-accounting keys seal` once")
}

/// How the local provider's refusal of a key under a retired master key says so.
const RETIRED: &str = "it was not rewrapped before retirement";

/// What to run about an error, in this CLI's words (the library's errors name no command).
fn hint(error: &Error) -> Option<&'static str> {
    match error {
        Error::Disabled { .. } => Some("enable it with `keys enable`"),
        Error::Expired { .. } => Some("store a new value with `keys rotate`"),
        Error::InvalidInput {
            field: "audit head",
            ..
        } => Some("as printed by `keys audit --head`"),
        // A named file that does not exist and was not asked to be created.
        Error::Config { message, .. } if message.contains("(create_if_missing") => {
            Some("pass --create to create it")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn error_line_walks_the_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied\nreally");
        let e = Error::Io {
            operation: "opening the master key file",
            path: "/x/master.key".into(),
            source: Arc::new(io),
        };
        assert_eq!(
            error_line(&e),
            "error: opening the master key file failed for /x/master.key: denied really"
        );
    }

    #[test]
    fn configuration_errors_have_one_prefix_and_keep_their_lines() {
        let inner = Error::config("the Azure credential is wrong");
        let outer = Error::Config {
            message: "cannot set up the provider".into(),
            source: Some(Arc::new(inner)),
        };
        let line = error_line(&outer);
        assert_eq!(line.matches("configuration error:").count(), 1, "{line}");
        assert!(line.ends_with("the Azure credential is wrong"), "{line}");

        let parse = Error::config("TOML parse error at line 3\n  |\n3 | foo =\n  |      ^\x1b[2J");
        let text = error_line(&parse);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("3 | foo ="), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn error_lines_add_the_commands_to_run() {
        let disabled = Error::Disabled {
            identity: "openai".into(),
        };
        assert_eq!(
            error_line(&disabled),
            "error: the API key for openai is disabled (enable it with `keys enable`)"
        );
        let expired = Error::Expired {
            identity: "openai".into(),
            expired_at: "2026-11-28T21:00:00+00:00".into(),
        };
        assert!(
            error_line(&expired).ends_with("(store a new value with `keys rotate`)"),
            "{}",
            error_line(&expired)
        );
        // The library's own message names no command.
        assert!(!disabled.to_string().contains("keys"), "{disabled}");
        assert!(!expired.to_string().contains("keys"), "{expired}");
    }

    #[test]
    fn library_messages_get_this_clis_commands() {
        let head = "12:XYZ"
            .parse::<llm_accounting::AuditHead>()
            .expect_err("malformed");
        let line = error_line(&head);
        assert!(line.contains("SEQ:MAC"), "{line}");
        assert!(
            line.ends_with("(as printed by `keys audit --head`)"),
            "{line}"
        );
        assert!(!head.to_string().contains("keys"), "{head}");
        assert_eq!(
            log_hint(llm_accounting::UNSEALED_WARNING_TARGET),
            Some("run `llm-accounting keys seal` once")
        );
        assert_eq!(log_hint("llm_accounting_core::manager"), None);
    }
}
