//! Asking before something that cannot be undone.

use std::io::{BufRead, IsTerminal, Write};

use llm_accounting::{Error, KeyIdentity, Result};

/// On a terminal (stdin and stderr both), asks the user to confirm deleting `identity` by
/// typing its service's name: whether they did (anything else, Ctrl-D included, cancels).
/// Off a terminal (scripts, pipes) it does not ask.
pub(crate) fn confirm_delete(identity: &KeyIdentity) -> Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(true);
    }
    let service = identity.service();
    eprint!(
        "delete the API key for {identity} and every version of it, for good? Type the \
         service name ({service}) to confirm: "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Io {
            operation: "reading the confirmation",
            path: "the terminal".to_owned(),
            source: std::sync::Arc::new(e),
        })?;
    if !answer.ends_with('\n') {
        // Ctrl-D: the cursor is still after the question.
        eprintln!();
    }
    Ok(answer.trim() == service)
}
