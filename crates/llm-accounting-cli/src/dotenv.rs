//! Reading `.env` files as dotenv tools do, for `keys import`.
//!
//! - `NAME=value` per line; blank lines and lines starting with `#` are skipped; `export `
//!   before the name is allowed; spaces around the name and `=` are ignored;
//! - an unquoted value ends at a ` #` comment and is trimmed;
//! - `'single quotes'` keep the text as it is;
//! - `"double quotes"` understand `\n`, `\r`, `\t`, `\"` and `\\`, and may span lines;
//! - [`expand`] then replaces `${NAME}` and `${NAME:-default}` in every value, as
//!   python-dotenv does.
//!
//! Values live in zeroizing strings; no error quotes a value.

use llm_accounting::{Error, Result};
use zeroize::Zeroizing;

/// One `NAME=value` of the file.
pub(crate) struct Entry {
    /// The variable name.
    pub(crate) name: String,
    /// The value (a secret for the names that become keys).
    pub(crate) value: Zeroizing<String>,
    /// The line it starts on (1-based).
    pub(crate) line: usize,
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A malformed file: which line, and why (never the value).
fn bad(file: &str, line: usize, why: &str) -> Error {
    Error::invalid(
        "--env-file",
        format!(
            "{} line {line}: {why}",
            crate::escape::text(file).into_owned()
        ),
    )
}

/// Every entry of `text` (`file` names it in errors), in order.
pub(crate) fn parse(text: &str, file: &str) -> Result<Vec<Entry>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i + 1;
        let line = lines[i].trim_end_matches('\r');
        i += 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, rest)) = trimmed.split_once('=') else {
            return Err(bad(file, start, "expected NAME=value"));
        };
        let name = name.trim();
        if !is_env_name(name) {
            return Err(bad(
                file,
                start,
                "the name before `=` is not a variable name (letters, digits, `_`)",
            ));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some('\'') => {
                let body = &rest[1..];
                let end = body
                    .find('\'')
                    .ok_or_else(|| bad(file, start, "the single quote is not closed"))?;
                check_after_quote(&body[end + 1..], file, start)?;
                Zeroizing::new(body[..end].to_owned())
            }
            Some('"') => {
                let mut value = Zeroizing::new(String::new());
                let mut body = Zeroizing::new(rest[1..].to_owned());
                let mut escaped = false;
                loop {
                    let mut closed_at = None;
                    for (at, c) in body.char_indices() {
                        if escaped {
                            value.push(match c {
                                'n' => '\n',
                                'r' => '\r',
                                't' => '\t',
                                other => other,
                            });
                            escaped = false;
                        } else if c == '\\' {
                            escaped = true;
                        } else if c == '"' {
                            closed_at = Some(at);
                            break;
                        } else {
                            value.push(c);
                        }
                    }
                    if let Some(at) = closed_at {
                        check_after_quote(&body[at + 1..], file, start)?;
                        break;
                    }
                    // The value goes on on the next line.
                    let Some(next) = lines.get(i) else {
                        return Err(bad(file, start, "the double quote is not closed"));
                    };
                    value.push('\n');
                    body = Zeroizing::new(next.trim_end_matches('\r').to_owned());
                    i += 1;
                }
                value
            }
            _ => {
                let end = rest.find(" #").unwrap_or(rest.len());
                Zeroizing::new(rest[..end].trim().to_owned())
            }
        };
        out.push(Entry {
            name: name.to_owned(),
            value,
            line: start,
        });
    }
    Ok(out)
}

/// Replaces `${NAME}` and `${NAME:-default}` in every value as python-dotenv's `dotenv_values`
/// does: `NAME` is looked up among the entries before it in the file (the latest one), then in
/// this process's environment; a name found nowhere gives `default`, or nothing. Quoted values
/// are expanded too; `$NAME` without braces is kept as it is.
pub(crate) fn expand(entries: &mut [Entry]) {
    for i in 0..entries.len() {
        let (before, rest) = entries.split_at_mut(i);
        let entry = &mut rest[0];
        if !entry.value.contains("${") {
            continue;
        }
        let lookup = |name: &str| -> Option<Zeroizing<String>> {
            before
                .iter()
                .rev()
                .find(|e| e.name == name)
                .map(|e| e.value.clone())
                .or_else(|| std::env::var(name).ok().map(Zeroizing::new))
        };
        entry.value = expand_value(&entry.value, lookup);
    }
}

/// `value` with each `${NAME}` / `${NAME:-default}` replaced through `lookup`.
fn expand_value(
    value: &str,
    lookup: impl Fn(&str) -> Option<Zeroizing<String>>,
) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(value.len()));
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            // No closing brace: kept as written.
            out.push_str(&rest[at..]);
            return out;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) if !name.contains(':') => (name, Some(default)),
            _ if inner.contains(':') => {
                // Not a form python-dotenv expands (`${A:x}`): kept as written.
                out.push_str(&rest[at..at + 2 + end + 1]);
                rest = &after[end + 1..];
                continue;
            }
            _ => (inner, None),
        };
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(default.unwrap_or_default()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// After a closing quote only spaces and a comment may follow.
fn check_after_quote(after: &str, file: &str, line: usize) -> Result<()> {
    let after = after.trim();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(bad(file, line, "text after the closing quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String, usize)> {
        parse(text, ".env")
            .expect("parses")
            .into_iter()
            .map(|e| (e.name, e.value.to_string(), e.line))
            .collect()
    }

    #[test]
    fn dotenv_forms() {
        let text = "# comment\n\nA=plain\nexport B = spaced  # note\nC='single # kept'\n\
                    D=\"two\\nlines \\\"q\\\"\"\nE=\"multi\nline\"\nF=\n";
        let got = pairs(text);
        let want = [
            ("A", "plain", 3),
            ("B", "spaced", 4),
            ("C", "single # kept", 5),
            ("D", "two\nlines \"q\"", 6),
            ("E", "multi\nline", 7),
            ("F", "", 9),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((n, v, l), (wn, wv, wl)) in got.iter().zip(want) {
            assert_eq!((n.as_str(), v.as_str(), *l), (wn, wv, wl));
        }
        assert_eq!(pairs("A=x\r\nB=y\r\n")[1].1, "y");
    }

    #[test]
    fn expansion_follows_python_dotenv() {
        // What python-dotenv 1.x's dotenv_values gives for the same file (checked by hand):
        // earlier entries win over the environment, quoted values are expanded, `$A` is not.
        let text = "A=1\nB=${A}x\nC='${A}y'\nD=\"${A}z\"\nE=${LLM_ACC_TEST_NOPE:-def}\n\
                    F=${LLM_ACC_TEST_NOPE}\nG=$A\nH=${A:-other}\nI=${A\nJ=${A:x}\n";
        let mut entries = parse(text, ".env").expect("parses");
        expand(&mut entries);
        let got: Vec<(String, String)> = entries
            .into_iter()
            .map(|e| (e.name, e.value.to_string()))
            .collect();
        let want = [
            ("A", "1"),
            ("B", "1x"),
            ("C", "1y"),
            ("D", "1z"),
            ("E", "def"),
            ("F", ""),
            ("G", "$A"),
            ("H", "1"),
            ("I", "${A"),
            ("J", "${A:x}"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((n, v), (wn, wv)) in got.iter().zip(want) {
            assert_eq!((n.as_str(), v.as_str()), (wn, wv));
        }
        // From the environment when the file does not set it.
        let mut entries = parse("X=${PATH}\n", ".env").expect("parses");
        expand(&mut entries);
        assert_eq!(
            entries[0].value.as_str(),
            std::env::var("PATH").unwrap_or_default()
        );
    }

    #[test]
    fn malformed_lines_name_the_line_and_never_the_value() {
        for (text, line) in [
            ("A=1\nnot a pair\n", 2),
            ("1A=x\n", 1),
            ("A='sk-secret\n", 1),
            ("A=\"sk-secret\n", 1),
            ("A='sk-secret' trailing\n", 1),
        ] {
            let e = parse(text, ".env").err().expect("refused");
            let s = e.to_string();
            assert!(s.contains(&format!("line {line}")), "{s}");
            assert!(!s.contains("sk-secret"), "{s}");
        }
    }
}
