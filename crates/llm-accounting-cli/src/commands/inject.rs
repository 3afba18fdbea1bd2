//! `inject`: a text file with `{{ llm-accounting://SERVICE?user=U }}` in it, written out with
//! the stored keys in their place, as `op inject` does for 1Password references.
//!
//! Every reference is parsed and every key read (one `get_many`) before anything is written:
//! a mistake writes nothing. The output file is made with mode 0600 and is never overwritten
//! without `--force` (then it is replaced atomically). Other `{{ ... }}` (a template of
//! another tool) are left as they are.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;

use llm_accounting::{Error, KeyIdentity, Result};
use zeroize::Zeroizing;

use super::{Context, finish};
use crate::cli::InjectArgs;
use crate::reference;

/// Keys read at once.
const CONCURRENCY: usize = 8;

/// A piece of the template: text as it is, or the key a reference names.
enum Piece<'t> {
    Text(&'t str),
    Key(KeyIdentity),
}

/// The pieces of `text`: `{{ REFERENCE }}` (spaces inside the braces optional) become keys.
fn pieces<'t>(text: &'t str, file: &str) -> Result<Vec<Piece<'t>>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        let inner = after[..close].trim();
        if !reference::is_reference(inner) {
            // Not ours: keep the braces and look on after them.
            out.push(Piece::Text(&rest[..open + 2]));
            consumed += open + 2;
            rest = after;
            continue;
        }
        let line = text[..consumed + open].matches('\n').count() + 1;
        let identity = reference::parse(inner).map_err(|e| {
            Error::invalid(
                "--in-file",
                format!("{} line {line}: {e}", crate::escape::text(file)),
            )
        })?;
        out.push(Piece::Text(&rest[..open]));
        out.push(Piece::Key(identity));
        consumed += open + 2 + close + 2;
        rest = &after[close + 2..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// `inject`.
pub(crate) async fn inject(ctx: &Context, args: InjectArgs) -> Result<()> {
    let file = args.in_file.display().to_string();
    let text = Zeroizing::new(super::exec::read_named_file(&args.in_file, "--in-file")?);
    let pieces = pieces(&text, &file)?;
    if let Some(out) = &args.out_file
        && !args.force
        && std::fs::symlink_metadata(out).is_ok()
    {
        return Err(Error::invalid(
            "--out-file",
            format!(
                "{} exists; give --force to replace it",
                crate::escape::text(&out.display().to_string())
            ),
        ));
    }
    let mut identities: Vec<KeyIdentity> = Vec::new();
    for p in &pieces {
        if let Piece::Key(id) = p
            && !identities.contains(id)
        {
            identities.push(id.clone());
        }
    }
    if identities.is_empty() {
        ctx.say(&format!(
            "note: {} holds no {{{{ llm-accounting://... }}}} reference; it is written as it is",
            crate::escape::text(&file)
        ));
    }
    let manager = ctx.manager().await?;
    let got = manager.get_many(&identities, CONCURRENCY).await;
    let mut keys = HashMap::with_capacity(got.len());
    let mut first_error = None;
    for (identity, result) in got {
        match result {
            Ok(key) => {
                keys.insert(identity, key);
            }
            Err(e) => {
                if first_error.is_some() {
                    eprintln!("{}", crate::output::error_line(&e));
                } else {
                    first_error = Some(e);
                }
            }
        }
    }
    finish(&manager, first_error.map_or(Ok(()), Err)).await?;
    let mut output = Zeroizing::new(String::with_capacity(text.len()));
    for p in &pieces {
        match p {
            Piece::Text(t) => output.push_str(t),
            Piece::Key(id) => match keys.get(id) {
                Some(key) => output.push_str(key.expose_secret()),
                None => return Err(Error::integrity()),
            },
        }
    }
    drop(keys);
    match &args.out_file {
        Some(path) => write_private(path, output.as_bytes(), args.force),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(output.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| crate::print::stdout_error("writing the injected file", e))
        }
    }
}

/// Writes `bytes` to a new file at `path` with mode 0600 (see [`crate::write_file::write`]).
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    crate::write_file::write(path, bytes, 0o600, replace, "writing the injected file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Vec<String> {
        pieces(text, "t")
            .expect("parses")
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => format!("T:{t}"),
                Piece::Key(id) => format!("K:{id}"),
            })
            .collect()
    }

    #[test]
    fn references_in_braces_become_keys_and_the_rest_stays() {
        assert_eq!(
            shape("a={{ llm-accounting://openai?user=alice }}\nb={{llm-accounting://x}}!"),
            [
                "T:a=",
                "K:service \"openai\", user \"alice\"",
                "T:\nb=",
                "K:service \"x\"",
                "T:!"
            ]
        );
        // Another tool's placeholders and unclosed braces are kept as written.
        assert_eq!(shape("{{ name }} {{ x"), ["T:{{", "T: name }} {{ x"]);
        let e = pieces("ok\n{{ llm-accounting://a?bad=1 }}", "t.tpl")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("t.tpl line 2"), "{e}");
    }
}
