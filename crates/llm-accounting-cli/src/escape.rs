//! Making strings from the database safe to print on a terminal.
//!
//! A row written by another program (or by someone with write access to the database) may
//! hold escape sequences or bidirectional controls in its hint, audit detail, principal or
//! master-key reference. Printed raw, `ESC [ 2 J` clears the screen, `ESC ] 52` writes the
//! clipboard, U+202E reverses the rest of the line. Every character that
//! [`is_hidden_char`] names (controls, format characters, separators, spaces other than
//! U+0020, other invisible characters) is therefore printed as a visible escape:
//!
//! - tab, line feed, carriage return: `\t`, `\n`, `\r`;
//! - other C0 controls and DEL: `\x1b`, `\x7f` (two lowercase hex digits);
//! - anything else (C1 controls, U+202E, U+200B, U+00A0, ...): `\u{85}`, `\u{202e}`.
//!
//! A backslash is printed as is, so an escape is not distinguishable from the same text
//! typed literally; names (validated, [`is_hidden_char`] characters refused) never need one.
//!
//! JSON output stays JSON: the same characters are written as `\uXXXX` escapes (a UTF-16
//! surrogate pair above U+FFFF), which every JSON parser reads back as the original string;
//! serde_json already escapes C0 controls but writes DEL, C1 and format characters raw.

use std::borrow::Cow;
use std::fmt::Write;

use llm_accounting::is_hidden_char;

/// `s` with every hidden character as a visible escape (see the [module](self) docs).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hidden_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_hidden_char(c) && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_hidden_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A table row with every cell escaped.
pub(crate) fn row<const N: usize>(cells: [String; N]) -> [String; N] {
    cells.map(|cell| match text(&cell) {
        Cow::Borrowed(_) => cell,
        Cow::Owned(escaped) => escaped,
    })
}

/// Serialized JSON with every hidden character that serde_json left raw written as a `\u`
/// escape. Only string contents can hold such characters (JSON's own syntax is ASCII), so
/// the document means the same.
pub(crate) fn json(document: String) -> String {
    if !document.chars().any(is_hidden_char) {
        return document;
    }
    let mut out = String::with_capacity(document.len() + 16);
    for c in document.chars() {
        // Whitespace between tokens (the pretty printer's newlines and spaces) stays.
        if is_hidden_char(c) && !matches!(c, '\n' | '\t' | '\r') {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        for s in [
            "openai",
            "…wxyz",
            "v2:1f2e3d4c5b6a7988",
            "Ωμέγα 鍵",
            "a\\x1b",
            "",
        ] {
            assert!(matches!(text(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn every_control_and_invisible_character_is_escaped() {
        assert_eq!(text("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(text("\u{1b}]52;c;AAAA\u{7}"), "\\x1b]52;c;AAAA\\x07");
        assert_eq!(text("x\u{7f}\u{0}"), "x\\x7f\\x00");
        assert_eq!(text("tab\tnl\ncr\r"), "tab\\tnl\\ncr\\r");
        assert_eq!(text("\u{85}\u{9b}31m"), "\\u{85}\\u{9b}31m");
        assert_eq!(text("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            text("zero\u{200b}width\u{feff}"),
            "zero\\u{200b}width\\u{feff}"
        );
        assert_eq!(text("no\u{a0}break\u{2028}"), "no\\u{a0}break\\u{2028}");
        assert_eq!(text("tag\u{e0041}"), "tag\\u{e0041}");
        // Nothing hidden survives, whatever the input.
        for code in (0u32..0x3000).chain(0xe0000..0xe0100) {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let shown = text(&c.to_string()).into_owned();
            assert!(
                !shown.chars().any(is_hidden_char),
                "U+{code:04X}: {shown:?}"
            );
        }
    }

    #[test]
    fn rows_are_escaped_cell_by_cell() {
        let r = row(["ok".to_owned(), "\u{1b}[31mred".to_owned()]);
        assert_eq!(r, ["ok".to_owned(), "\\x1b[31mred".to_owned()]);
    }

    #[test]
    fn json_keeps_its_meaning_and_loses_raw_controls() {
        let value = serde_json::json!({
            "hint": "\u{1b}[2J\u{7f}\u{85}\u{9b}\u{202e}\u{200b}\u{a0}\u{e0041}…wxyz",
            "detail": "line\nbreak",
        });
        let raw = serde_json::to_string_pretty(&value).expect("json");
        // serde_json alone leaves DEL, C1 and format characters raw.
        assert!(raw.contains('\u{7f}') && raw.contains('\u{9b}') && raw.contains('\u{202e}'));
        let safe = json(raw);
        assert!(
            !safe.chars().any(|c| is_hidden_char(c) && c != '\n'),
            "{safe}"
        );
        assert!(
            safe.contains("\\u007f") && safe.contains("\\u009b"),
            "{safe}"
        );
        assert!(
            safe.contains("\\u202e") && safe.contains("\\udb40\\udc41"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, value, "the same values");
    }
}
