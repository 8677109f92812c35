//! On-disk embedding cache keyed by (model, exact model input): SHA-256 of the model's
//! fingerprint and the prefixed text, so a re-run of `qzhou eval` embeds nothing it has seen.
//! One append-only file per model: records `key (32 bytes) · dim (u32 LE) · dim × f32 LE`.
//! A truncated last record (an interrupted run) is ignored; nothing else is ever rewritten.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub type Key = [u8; 32];

pub struct EmbeddingCache {
    path: PathBuf,
    model: String,
    stored: HashMap<Key, Vec<f32>>,
    pending: Vec<(Key, Vec<f32>)>,
}

/// Fingerprint of a model folder run in `form` (attention, pooling, normalisation, max
/// length as loaded): config, tokenizer and the weight files' names and sizes.
pub fn model_fingerprint(dir: &Path, form: &str) -> Result<String> {
    let mut h = Sha256::new();
    h.update(form.as_bytes());
    if dir.is_file() {
        // A pack manifest (it holds every weight file's SHA-256) or a GGUF (size and its first
        // 16 MiB: the header, metadata and tensor layout).
        use std::io::Read;
        let mut file =
            std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        let len = file.metadata()?.len();
        let mut head = Vec::new();
        Read::by_ref(&mut file)
            .take(16 << 20)
            .read_to_end(&mut head)?;
        h.update(len.to_le_bytes());
        h.update(&head);
        return Ok(hex(&h.finalize()));
    }
    for name in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            h.update(name.as_bytes());
            h.update(&bytes);
        }
    }
    let mut weights: Vec<(String, u64)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .collect();
    weights.sort();
    for (name, len) in weights {
        h.update(name.as_bytes());
        h.update(len.to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl EmbeddingCache {
    /// Open (or start) the cache of `model` (a fingerprint) in `dir`.
    pub fn open(dir: &Path, model: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.emb", &model[..16]));
        let mut stored = HashMap::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            let mut at = 0;
            while at + 36 <= bytes.len() {
                let key: Key = bytes[at..at + 32].try_into().expect("32 bytes");
                let dim = u32::from_le_bytes(bytes[at + 32..at + 36].try_into().expect("4 bytes"))
                    as usize;
                let end = at + 36 + dim * 4;
                if end > bytes.len() {
                    break; // interrupted write
                }
                let v = bytes[at + 36..end]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                stored.insert(key, v);
                at = end;
            }
        }
        Ok(Self {
            path,
            model: model.to_string(),
            stored,
            pending: Vec::new(),
        })
    }

    /// The key of one exact model input.
    pub fn key(&self, input: &str) -> Key {
        let mut h = Sha256::new();
        h.update(self.model.as_bytes());
        h.update([0]);
        h.update(input.as_bytes());
        h.finalize().into()
    }

    pub fn get(&self, key: &Key) -> Option<&Vec<f32>> {
        self.stored.get(key)
    }

    pub fn put(&mut self, key: Key, v: Vec<f32>) {
        self.pending.push((key, v.clone()));
        self.stored.insert(key, v);
    }

    /// Entries held (loaded and new).
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Append the new entries and sync them to disk.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        let mut buf = Vec::new();
        for (k, v) in self.pending.drain(..) {
            buf.extend_from_slice(&k);
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
            for x in v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        f.write_all(&buf)?;
        f.sync_all()?;
        Ok(())
    }
}
