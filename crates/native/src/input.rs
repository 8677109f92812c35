//! Reading texts: command-line arguments, a text file (one text per line) or JSONL
//! (`{"text": ..., "id": ...}` per line), from a path or `-` for standard input.

use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde_json::Value;

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// `.jsonl`/`.ndjson` → JSONL, anything else → text.
    Auto,
    /// One text per line.
    Text,
    /// One JSON object per line with a `text` field and an optional `id`.
    Jsonl,
}

/// A text to embed and its identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct InputText {
    /// The `id` from JSONL (any JSON value), else the 0-based position.
    pub id: Value,
    /// The text.
    pub text: String,
}

/// Read every text of `path` (`-` = stdin). Blank lines in text files and malformed JSONL lines
/// are errors naming `path:line`.
pub fn read_file(path: &str, format: InputFormat) -> Result<Vec<InputText>> {
    let mut out = Vec::new();
    let count = visit_texts(path, format, 0..usize::MAX, |_, text| {
        out.push(text);
        Ok(())
    })?;
    if count == 0 {
        bail!("{path}: no texts");
    }
    Ok(out)
}

/// Number of text positions in `path`: its lines (text files) or non-blank lines (JSONL),
/// counted without parsing them — the positions [`read_range`] and [`read_file`] number.
pub fn count_texts(path: &str, format: InputFormat) -> Result<usize> {
    visit_texts(path, format, 0..0, |_, _| Ok(()))
}

/// The texts at positions `range` of `path` (0-based, as [`count_texts`] numbers them), parsed
/// and checked; the lines before are only counted and reading stops after the range.
pub fn read_range(path: &str, format: InputFormat, range: Range<usize>) -> Result<Vec<InputText>> {
    let mut out = Vec::with_capacity(range.len());
    visit_texts(path, format, range, |_, text| {
        out.push(text);
        Ok(())
    })?;
    Ok(out)
}

fn is_jsonl(path: &str, format: InputFormat) -> bool {
    match format {
        InputFormat::Jsonl => true,
        InputFormat::Text => false,
        InputFormat::Auto => {
            let ext = Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("");
            matches!(ext, "jsonl" | "ndjson")
        }
    }
}

/// Call `visit(position, text)` for the texts of `path` at positions in `parse`, in order
/// (`position` 0-based over the texts; other positions are counted, not parsed); returns how
/// many positions were read (all of them unless reading stopped after a finite `parse`).
fn visit_texts(
    path: &str,
    format: InputFormat,
    parse: Range<usize>,
    mut visit: impl FnMut(usize, InputText) -> Result<()>,
) -> Result<usize> {
    let jsonl = is_jsonl(path, format);
    let reader: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("cannot open input {path}"))?)
    };
    let mut position = 0;
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let lineno = n + 1;
        let line = line.with_context(|| format!("{path}:{lineno}: cannot read (not UTF-8?)"))?;
        if jsonl && line.trim().is_empty() {
            continue;
        }
        if position >= parse.end && parse.end > parse.start {
            break;
        }
        if !parse.contains(&position) {
            position += 1;
            continue;
        }
        let text = if jsonl {
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("{path}:{lineno}: malformed JSON"))?;
            let Some(text) = v.get("text").and_then(Value::as_str) else {
                bail!("{path}:{lineno}: no string field `text`");
            };
            if text.trim().is_empty() {
                bail!("{path}:{lineno}: `text` is empty");
            }
            let id = v.get("id").cloned().unwrap_or(Value::from(position));
            InputText {
                id,
                text: text.to_string(),
            }
        } else {
            let text = line.strip_suffix('\r').unwrap_or(&line);
            if text.trim().is_empty() {
                bail!("{path}:{lineno}: empty line (one text per line; use JSONL for texts with newlines)");
            }
            InputText {
                id: Value::from(position),
                text: text.to_string(),
            }
        };
        visit(position, text)?;
        position += 1;
    }
    Ok(position)
}

/// Texts given as arguments.
pub fn from_args(texts: &[String]) -> Result<Vec<InputText>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.trim().is_empty() {
                bail!("text argument #{i} is empty");
            }
            Ok(InputText {
                id: Value::from(i),
                text: t.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(contents: &str, ext: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    #[test]
    fn jsonl_with_ids_and_errors_with_line_numbers() {
        let f = write(
            "{\"id\":\"a\",\"text\":\"x\"}\n\n{\"text\":\"y\"}\n",
            ".jsonl",
        );
        let texts = read_file(f.path().to_str().unwrap(), InputFormat::Auto).unwrap();
        assert_eq!(
            texts[0],
            InputText {
                id: "a".into(),
                text: "x".into()
            }
        );
        assert_eq!(
            texts[1],
            InputText {
                id: 1.into(),
                text: "y".into()
            }
        );
        let f = write("{\"text\":\"x\"}\n{\"text\": 3}\n", ".jsonl");
        let e = read_file(f.path().to_str().unwrap(), InputFormat::Auto)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(":2: no string field `text`"), "{e}");
        let f = write("{\"text\":\"x\"\n", ".jsonl");
        let e = format!(
            "{:#}",
            read_file(f.path().to_str().unwrap(), InputFormat::Auto).unwrap_err()
        );
        assert!(e.contains(":1: malformed JSON"), "{e}");
    }

    #[test]
    fn text_files_reject_blank_lines() {
        let f = write("one\r\ntwo\n", ".txt");
        let t = read_file(f.path().to_str().unwrap(), InputFormat::Auto).unwrap();
        assert_eq!(
            t.iter().map(|x| x.text.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        let f = write("one\n\nthree\n", ".txt");
        let e = read_file(f.path().to_str().unwrap(), InputFormat::Text)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(":2: empty line (one text per line; use JSONL for texts with newlines)"),
            "{e}"
        );
        let e = read_file("/no/such/file.txt", InputFormat::Auto)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "cannot open input /no/such/file.txt");
    }
}
