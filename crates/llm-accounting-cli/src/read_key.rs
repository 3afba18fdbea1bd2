//! Reading the API key to store: stdin, a no-echo prompt, or (discouraged) `--key`.
//!
//! Every buffer that held the key is wiped before it is freed, including the ones left behind
//! when a buffer grows.

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use llm_accounting::{ApiKey, Error, KeyIdentity, Result};
use zeroize::{Zeroize, Zeroizing};

/// Printed when the key comes from `--key`.
pub(crate) const KEY_FLAG_WARNING: &str = "warning: --key exposes the key in your shell history \
                                           and process list; pipe it on stdin instead";

/// Most bytes read from stdin. Far above the library's own limit (which gives the precise
/// message); only here so that `cat /dev/zero |` cannot exhaust memory.
const STDIN_LIMIT: usize = 1024 * 1024;

/// The key for `identity`: from `flag` if given (with a warning on stderr), else all of stdin
/// when it is not a terminal (one trailing newline removed), else a no-echo prompt.
///
/// Unless `as_is`, a key with leading or trailing whitespace, of several lines, starting with
/// `NAME=` or in quotes is refused: that is almost always a paste that took too much, and the
/// provider would reject the key only when it is used.
pub(crate) fn read_key(
    flag: Option<String>,
    identity: &KeyIdentity,
    as_is: bool,
) -> Result<ApiKey> {
    let key = if let Some(key) = flag {
        eprintln!("{KEY_FLAG_WARNING}");
        exact_api_key(key)
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            let key = match rpassword::prompt_password(format!("API key for {identity}: ")) {
                Ok(key) if !key.is_empty() => key,
                Ok(_) => return Err(no_key_entered()),
                // Ctrl-D: the cursor is still after the prompt; the error goes below it.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    eprintln!();
                    return Err(no_key_entered());
                }
                Err(e) => {
                    return Err(io_error(
                        "reading the API key from the terminal",
                        "the terminal",
                        e,
                    ));
                }
            };
            exact_api_key(key)
        } else {
            key_from_stdin_bytes(read_all(stdin.lock(), STDIN_LIMIT)?)?
        }
    };
    if !as_is {
        check_whitespace(key.expose_secret())?;
        check_pasted_extra(key.expose_secret())?;
    }
    Ok(key)
}

/// Refuses a key pasted with what surrounds it in a `.env` file or a shell: a `NAME=` (or
/// `export NAME=`) prefix, or quotes. The message never shows the key.
pub(crate) fn check_pasted_extra(key: &str) -> Result<()> {
    let rest = key.strip_prefix("export ").unwrap_or(key);
    if let Some((name, value)) = rest.split_once('=') {
        let mut chars = name.chars();
        let is_name = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_name && !value.is_empty() && !value.starts_with('=') {
            return Err(Error::invalid(
                "API key",
                "it starts with a variable name and `=` (pasted a line of a .env file?); \
                 store only the value after `=`, or pass --as-is to store it as it is",
            ));
        }
    }
    let quotes = ['"', '\''];
    if key.starts_with(quotes) || key.ends_with(quotes) {
        return Err(Error::invalid(
            "API key",
            "it is in quotes (pasted with them?); store the key without its quotes, or pass \
             --as-is to store it as it is",
        ));
    }
    Ok(())
}

/// Nothing typed at the prompt (Enter or Ctrl-D at once): a usage error, exit 2.
fn no_key_entered() -> Error {
    Error::invalid("API key", "no key entered")
}

/// Refuses a key with leading or trailing whitespace, or with a line break inside.
pub(crate) fn check_whitespace(key: &str) -> Result<()> {
    if key.contains(['\n', '\r']) {
        return Err(Error::invalid(
            "API key",
            "it spans several lines (was more than the key pasted?); store one line, or pass \
             --keep-whitespace to store it as it is",
        ));
    }
    if key.starts_with(char::is_whitespace) || key.ends_with(char::is_whitespace) {
        return Err(Error::invalid(
            "API key",
            "it starts or ends with whitespace (pasted with a space or tab?); remove it, or pass \
             --keep-whitespace to store it as it is",
        ));
    }
    Ok(())
}

/// Turns what was read from stdin into a key: one trailing `\n` or `\r\n` removed; empty input
/// and invalid UTF-8 are refused.
fn key_from_stdin_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<ApiKey> {
    let mut len = bytes.len();
    if bytes.ends_with(b"\r\n") {
        len -= 2;
    } else if bytes.ends_with(b"\n") {
        len -= 1;
    }
    if len == 0 {
        return Err(Error::invalid(
            "API key",
            "nothing was read from stdin; pipe the key on stdin, or run in a terminal to be \
             prompted for it",
        ));
    }
    let mut exact = Vec::with_capacity(len);
    exact.extend_from_slice(&bytes[..len]);
    drop(bytes);
    match String::from_utf8(exact) {
        Ok(key) => Ok(ApiKey::new(key)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(Error::invalid("API key", "it is not valid UTF-8"))
        }
    }
}

/// An [`ApiKey`] whose allocation is exactly as long as the key, so that the conversion to a
/// boxed string inside `ApiKey::new` does not reallocate and leave an unwiped copy behind.
fn exact_api_key(mut key: String) -> ApiKey {
    if key.capacity() == key.len() {
        return ApiKey::new(key);
    }
    let mut exact = String::with_capacity(key.len());
    exact.push_str(&key);
    key.zeroize();
    ApiKey::new(exact)
}

/// Reads everything from `reader`, at most `limit` bytes, into a buffer that is wiped on drop;
/// buffers outgrown on the way are wiped too.
fn read_all(mut reader: impl Read, limit: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(1024));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let n = match reader.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("reading the API key from stdin", "stdin", e)),
        };
        if buf.len() + n > limit {
            return Err(Error::invalid(
                "API key",
                format!("stdin holds more than {limit} bytes; an API key is far smaller"),
            ));
        }
        if buf.capacity() - buf.len() < n {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity((buf.capacity() * 2).max(buf.len() + n)));
            bigger.extend_from_slice(&buf);
            buf = bigger; // the old buffer is wiped as it drops
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

fn io_error(operation: &'static str, path: &str, e: std::io::Error) -> Error {
    Error::Io {
        operation,
        path: path.to_owned(),
        source: Arc::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(input: &[u8]) -> Result<ApiKey> {
        key_from_stdin_bytes(read_all(input, STDIN_LIMIT)?)
    }

    #[test]
    fn one_trailing_newline_is_removed() {
        assert_eq!(from(b"sk-FAKE\n").expect("key").expose_secret(), "sk-FAKE");
        assert_eq!(
            from(b"sk-FAKE\r\n").expect("key").expose_secret(),
            "sk-FAKE"
        );
        assert_eq!(
            from(b"sk-FAKE\n\n").expect("key").expose_secret(),
            "sk-FAKE\n"
        );
        assert_eq!(from(b"sk-FAKE").expect("key").expose_secret(), "sk-FAKE");
        assert_eq!(
            from(b" sk-FAKE \n").expect("key").expose_secret(),
            " sk-FAKE "
        );
    }

    #[test]
    fn empty_and_bad_input_are_refused() {
        for input in [&b""[..], b"\n", b"\r\n"] {
            let err = from(input).expect_err("empty");
            assert!(
                err.to_string().contains("nothing was read from stdin"),
                "{err}"
            );
        }
        let err = from(b"\xff\xfe\n").expect_err("utf-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
        let big = vec![b'x'; STDIN_LIMIT + 1];
        let err = from(&big).expect_err("too big");
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn whitespace_around_or_inside_is_refused() {
        assert!(check_whitespace("sk-FAKE").is_ok());
        assert!(
            check_whitespace("sk FAKE").is_ok(),
            "inner spaces are the key's business"
        );
        for bad in [
            " sk-FAKE",
            "sk-FAKE ",
            "\tsk-FAKE",
            "sk-FAKE\n",
            "sk\nFAKE",
            "sk\r\nFAKE",
        ] {
            let e = check_whitespace(bad).expect_err(bad);
            assert!(e.to_string().contains("--keep-whitespace"), "{e}");
        }
    }

    #[test]
    fn name_prefixes_and_quotes_are_refused() {
        for good in ["sk-FAKE", "c2stRkFLRQ==", "abc=", "a-b=c", "sk\"FAKE"] {
            assert!(check_pasted_extra(good).is_ok(), "{good}");
        }
        for bad in [
            "OPENAI_API_KEY=sk-FAKE",
            "export OPENAI_API_KEY=sk-FAKE",
            "OPENAI_API_KEY=\"sk-FAKE\"",
            "\"sk-FAKE\"",
            "'sk-FAKE'",
            "sk-FAKE'",
        ] {
            let e = check_pasted_extra(bad).expect_err(bad);
            assert!(e.to_string().contains("--as-is"), "{e}");
            assert!(!e.to_string().contains("FAKE"), "{e}");
        }
    }

    #[test]
    fn large_input_survives_buffer_growth() {
        let big = vec![b'k'; 20_000];
        let key = from(&big).expect("read");
        assert_eq!(key.len(), 20_000);
    }

    #[test]
    fn exact_keys_keep_their_text() {
        let mut s = String::with_capacity(64);
        s.push_str("sk-FAKE");
        assert_eq!(exact_api_key(s).expose_secret(), "sk-FAKE");
        assert_eq!(exact_api_key("sk".to_owned()).expose_secret(), "sk");
    }
}
