//! Durable, resumable synthesis output. Three append-only files per run:
//!
//! - `OUT` (trainer JSONL): an input's accepted records, written together in one append and
//!   fsync'd; each carries `"meta": {"key", "i", "n"}` (its input's key, index, group size);
//! - `OUT.rejected.jsonl`: every rejected output with its reason;
//! - `OUT.done.jsonl`: one line per finished input (after its records are on disk), so inputs
//!   that produced nothing are not redone either.
//!
//! On open, a torn last line (a kill mid-write) is cut off and a last group shorter than its
//! `n` is removed, so `kill -9` at any moment loses no finished input and duplicates none.
//! Everything before the damaged tail is kept byte for byte.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub struct Store {
    out: File,
    rejected: File,
    journal: File,
    done: HashSet<String>,
}

/// `path` with `suffix` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))
}

/// Bytes of `path` up to and including its last newline; cuts a torn tail off the file.
fn complete_lines(path: &Path) -> Result<String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        truncate(path, keep as u64)?;
    }
    String::from_utf8(bytes[..keep].to_vec())
        .with_context(|| format!("{} is not UTF-8 text", path.display()))
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} to repair it", path.display()))?;
    f.set_len(len)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot truncate {}", path.display()))
}

impl Store {
    /// Open (or create) the run's files next to `out` and collect the finished inputs.
    pub fn open(out: &Path) -> Result<Self> {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let journal_path = sibling(out, ".done.jsonl");
        let mut done = HashSet::new();
        for (n, line) in complete_lines(&journal_path)?.lines().enumerate() {
            let v: Value = serde_json::from_str(line).with_context(|| {
                format!(
                    "{}:{}: malformed journal line",
                    journal_path.display(),
                    n + 1
                )
            })?;
            if let Some(k) = v["key"].as_str() {
                done.insert(k.to_string());
            }
        }
        // Output groups: complete ones count as done (their journal line may not have made it).
        let text = complete_lines(out)?;
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        let mut offset = 0usize;
        let mut tail: Option<(String, usize)> = None; // (key, byte offset where its group starts)
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let v: Value = serde_json::from_str(line.trim_end()).with_context(|| {
                format!(
                    "{}:{}: not a JSON line; this file is not a qzhou synth output (or was edited)",
                    out.display(),
                    n + 1
                )
            })?;
            let key = v["meta"]["key"].as_str().with_context(|| {
                format!(
                    "{}:{}: no meta.key; not a qzhou synth output",
                    out.display(),
                    n + 1
                )
            })?;
            let size = v["meta"]["n"].as_u64().unwrap_or(1);
            let entry = counts.entry(key.to_string()).or_insert((0, size));
            entry.0 += 1;
            if tail.as_ref().is_none_or(|(k, _)| k != key) {
                tail = Some((key.to_string(), offset));
            }
            offset += line.len();
        }
        if let Some((key, start)) = tail {
            let (seen, size) = counts[&key];
            if seen < size {
                truncate(out, start as u64)?;
                counts.remove(&key);
            }
        }
        done.extend(counts.into_keys());
        Ok(Self {
            out: open_append(out)?,
            rejected: open_append(&sibling(out, ".rejected.jsonl"))?,
            journal: open_append(&journal_path)?,
            done,
        })
    }

    /// Keys of the finished inputs.
    pub fn keys(&self) -> HashSet<String> {
        self.done.clone()
    }

    /// Inputs finished so far (this run and earlier ones).
    pub fn finished(&self) -> usize {
        self.done.len()
    }

    /// Record one finished input: its rejections, then its records (one fsync'd append, each
    /// tagged with `meta`), then its journal line.
    pub fn commit(
        &mut self,
        key: &str,
        records: Vec<Value>,
        rejections: &[Value],
        journal: Value,
    ) -> Result<()> {
        if self.done.contains(key) {
            bail!("input {key} was already committed");
        }
        if !rejections.is_empty() {
            let mut buf = String::new();
            for r in rejections {
                buf.push_str(&r.to_string());
                buf.push('\n');
            }
            self.rejected.write_all(buf.as_bytes())?;
            self.rejected.sync_data()?;
        }
        let n = records.len();
        let mut buf = String::new();
        for (i, mut r) in records.into_iter().enumerate() {
            r["meta"] = json!({"key": key, "i": i, "n": n});
            buf.push_str(&r.to_string());
            buf.push('\n');
        }
        if !buf.is_empty() {
            self.out
                .write_all(buf.as_bytes())
                .context("cannot append to the output")?;
            self.out.sync_data().context("cannot fsync the output")?;
        }
        let mut line = journal;
        line["key"] = json!(key);
        self.journal.write_all(format!("{line}\n").as_bytes())?;
        self.journal.sync_data()?;
        self.done.insert(key.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &str, i: usize, n: usize) -> String {
        format!(
            "{}\n",
            json!({"type": "retrieval", "query": "q", "pos": "p", "negs": [], "meta": {"key": key, "i": i, "n": n}})
        )
    }

    /// A kill can leave a torn last line or the first lines of a group: both are cut on open;
    /// complete groups before them stay byte for byte and count as done.
    #[test]
    fn open_repairs_a_torn_tail_and_keeps_finished_groups() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.jsonl");
        let finished = line("a", 0, 2) + &line("a", 1, 2) + &line("b", 0, 1);
        let partial = line("c", 0, 3) + &line("c", 1, 3);
        std::fs::write(&out, format!("{finished}{partial}{{\"type\": \"retr")).unwrap();
        std::fs::write(
            sibling(&out, ".done.jsonl"),
            "{\"key\": \"a\"}\n{\"key\": \"z\"}\n{\"ke",
        )
        .unwrap();
        let mut store = Store::open(&out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), finished);
        let keys = store.keys();
        for k in ["a", "b", "z"] {
            assert!(keys.contains(k), "{k}");
        }
        assert!(!keys.contains("c"));
        store
            .commit("c", vec![json!({"query": "q"})], &[], json!({}))
            .unwrap();
        assert!(store.commit("c", vec![], &[], json!({})).is_err());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with(&finished));
        assert_eq!(text.lines().count(), 4);
        assert_eq!(
            std::fs::read_to_string(sibling(&out, ".done.jsonl")).unwrap(),
            "{\"key\": \"a\"}\n{\"key\": \"z\"}\n{\"key\":\"c\"}\n"
        );
        // Something that is not a synth output is refused, not overwritten.
        std::fs::write(&out, "plain text\n").unwrap();
        let err = Store::open(&out).err().unwrap().to_string();
        assert!(err.contains("o.jsonl:1: not a JSON line"), "{err}");
    }
}
