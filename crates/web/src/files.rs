//! The files of a model handed over from JavaScript, turned into `qzhou-core`'s `ModelFiles`.

use std::collections::HashMap;
use std::sync::Arc;

use qzhou_core::sentence_transformers::SentenceTransformersFiles;
use qzhou_core::weight_pack::{verify_file, PackManifest, WeightPack};
use qzhou_core::{Checkpoint, ModelFiles, QzhouError, Result};
use wasm_bindgen::prelude::*;

/// Files of a model folder by relative name (`config.json`, `tokenizer.json`,
/// `manifest-q8.json`, `weights-q8-000.bin`, `1_Pooling/config.json`, ...).
#[wasm_bindgen]
#[derive(Default)]
pub struct ModelSource {
    files: HashMap<String, Vec<u8>>,
}

#[wasm_bindgen]
impl ModelSource {
    /// An empty set of files.
    #[wasm_bindgen(constructor)]
    pub fn new() -> ModelSource {
        Self::default()
    }

    /// Add (or replace) one file.
    pub fn add(&mut self, name: String, bytes: Vec<u8>) {
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
    fn take(&mut self, name: &str) -> Result<Vec<u8>> {
        self.files
            .remove(name)
            .ok_or_else(|| QzhouError::MissingFile(format!("{name} (not among the loaded files)")))
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
                    verify_file(asset, bytes)?;
                }
            }
            let mut data: Vec<Arc<[u8]>> = Vec::with_capacity(m.files.len());
            for f in &m.files {
                data.push(self.take(&f.name)?.into());
            }
            let scheme = m.quantization.clone();
            (Box::new(WeightPack::new(m, data)?), scheme)
        };
        let config = self.take("config.json")?;
        let tokenizer = self.take("tokenizer.json")?;
        let sentence_transformers =
            SentenceTransformersFiles::gather(|name| Ok(self.files.remove(name)))?;
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
