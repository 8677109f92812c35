//! The files of a model handed over from JavaScript, turned into `qzhou-core`'s `ModelFiles`.
//!
//! The files stay in JavaScript memory until read: a wasm32 module's own memory ends at 4 GiB,
//! less than a 7B model's q4 pack (~5 GB), so weight files are read a tensor part at a time
//! ([`JsBytes`]) and only small files (config, tokenizer, manifest) are copied in whole.

use std::collections::HashMap;

use js_sys::Uint8Array;
use qzhou_core::sentence_transformers::SentenceTransformersFiles;
use qzhou_core::weight_pack::{verify_file, PackManifest, WeightPack};
use qzhou_core::weights::ByteSource;
use qzhou_core::{Checkpoint, ModelFiles, QzhouError, Result};
use wasm_bindgen::prelude::*;

#[cfg(target_feature = "atomics")]
compile_error!("JsBytes assumes one thread: build qzhou-web without the atomics feature");

/// A JavaScript `Uint8Array` read in ranges.
pub struct JsBytes {
    name: String,
    array: Uint8Array,
}

// SAFETY: qzhou-web is built for wasm32 without the atomics feature (checked above): the
// module runs on one thread, so the JavaScript handle is never touched from another.
unsafe impl Send for JsBytes {}
// SAFETY: as for `Send`: one thread.
unsafe impl Sync for JsBytes {}

impl ByteSource for JsBytes {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        u64::from(self.array.length())
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{}: read past the end", self.name),
                )
            })?;
        // Both ends fit in u32: `end` is at most the array's u32 length.
        self.array.subarray(offset as u32, end as u32).copy_to(buf);
        Ok(())
    }
}

/// Files of a model folder by relative name (`config.json`, `tokenizer.json`,
/// `manifest-q8.json`, `weights-q8-000.bin`, `1_Pooling/config.json`, ...), held as
/// JavaScript arrays.
#[wasm_bindgen]
#[derive(Default)]
pub struct ModelSource {
    files: HashMap<String, Uint8Array>,
}

#[wasm_bindgen]
impl ModelSource {
    /// An empty set of files.
    #[wasm_bindgen(constructor)]
    pub fn new() -> ModelSource {
        Self::default()
    }

    /// Add (or replace) one file. The array is kept, not copied: do not modify it before the
    /// model is loaded.
    pub fn add(&mut self, name: String, bytes: Uint8Array) {
        self.files.insert(name, bytes);
    }

    /// Names added so far, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.files.keys().cloned().collect();
        v.sort();
        v
    }
}

impl ModelSource {
    fn take_array(&mut self, name: &str) -> Result<Uint8Array> {
        self.files
            .remove(name)
            .ok_or_else(|| QzhouError::MissingFile(format!("{name} (not among the loaded files)")))
    }

    /// A file copied into wasm memory (the small ones, and a whole safetensors checkpoint).
    fn take(&mut self, name: &str) -> Result<Vec<u8>> {
        Ok(self.take_array(name)?.to_vec())
    }

    /// Build the model files. With a manifest name, the weights are that pack's (every listed
    /// file verified by size and SHA-256, assets too); without one, `model.safetensors`.
    /// Returns the files and the weights' scheme (`f32` for safetensors).
    pub fn into_model_files(mut self, manifest: &str) -> Result<(ModelFiles, String)> {
        let (weights, scheme): (Box<dyn qzhou_core::TensorSource>, String) = if manifest.is_empty()
        {
            let bytes = self.take("model.safetensors")?;
            (
                Box::new(Checkpoint::from_bytes("model.safetensors", bytes)?),
                "f32".into(),
            )
        } else {
            let m = PackManifest::from_json(&self.take(manifest)?, manifest)?;
            for asset in &m.assets {
                if let Some(bytes) = self.files.get(&asset.name) {
                    verify_file(asset, &bytes.to_vec())?;
                }
            }
            let mut data: Vec<Box<dyn ByteSource>> = Vec::with_capacity(m.files.len());
            for f in &m.files {
                data.push(Box::new(JsBytes {
                    name: f.name.clone(),
                    array: self.take_array(&f.name)?,
                }));
            }
            let scheme = m.quantization.clone();
            (Box::new(WeightPack::from_sources(m, data)?), scheme)
        };
        let config = self.take("config.json")?;
        let tokenizer = self.take("tokenizer.json")?;
        let sentence_transformers = SentenceTransformersFiles::gather(|name| {
            Ok(self.files.remove(name).map(|a| a.to_vec()))
        })?;
        Ok((
            ModelFiles {
                config,
                tokenizer,
                weights,
                sentence_transformers,
            },
            scheme,
        ))
    }
}
