//! Resolving `--model`: a local folder, or a HuggingFace hub id downloaded with `hf-hub`
//! (honours `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE` and `HF_TOKEN`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};

/// Files a model folder may have besides the weights; only the first two are required.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
const OPTIONAL: [&str; 4] = [
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
];

/// Where a command's model comes from (`--model`, `--revision`, `--cache-dir`).
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model: a local folder, or a HuggingFace hub id (owner/name).
    #[arg(short, long)]
    pub model: String,
    /// Hub revision (branch, tag or commit).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Hub cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl ModelArgs {
    /// The model folder, downloading a hub model first (see [`resolve_model`]).
    pub fn resolve(&self) -> Result<PathBuf> {
        resolve_model(&self.model, &self.revision, self.cache_dir.as_deref())
    }
}

/// Whether `spec` looks like `owner/name`.
fn is_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

fn is_not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(inner) if matches!(**inner, ureq::Error::Status(404, _)))
}

/// A local folder path, or the snapshot folder of a hub model after downloading it.
pub fn resolve_model(spec: &str, revision: &str, cache_dir: Option<&Path>) -> Result<PathBuf> {
    let local = Path::new(spec);
    // A folder, or a single-file model: a web pack's manifest-*.json or a .gguf.
    if local.is_dir() || local.is_file() {
        return Ok(local.to_path_buf());
    }
    if !is_hub_id(spec) {
        bail!(
            "model folder {spec} not found (and `{spec}` is not a hub id of the form owner/name)"
        );
    }
    let mut builder =
        ApiBuilder::from_env().with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if let Some(dir) = cache_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HF_HUB_CACHE").map(PathBuf::from))
    {
        builder = builder.with_cache_dir(dir);
    }
    let api = builder.build().context("setting up the hub client")?;
    let repo = api.repo(Repo::with_revision(
        spec.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let fetch = |file: &str| {
        repo.get(file)
            .with_context(|| format!("downloading {file} of {spec}@{revision}"))
    };
    let config = fetch(REQUIRED[0])?;
    fetch(REQUIRED[1])?;
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let bytes = std::fs::read(&index)?;
            for shard in qzhou_core::weights::shard_file_names(&bytes)? {
                fetch(&shard)?;
            }
        }
        Err(e) if is_not_found(&e) => {
            fetch("model.safetensors")?;
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("downloading model.safetensors.index.json of {spec}"))
        }
    }
    for file in OPTIONAL {
        match repo.get(file) {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("downloading {file} of {spec}@{revision}"))
            }
        }
    }
    Ok(config
        .parent()
        .expect("a downloaded file has a folder")
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hub_ids_are_owner_slash_name() {
        assert!(super::is_hub_id("Kingsoft-LLM/QZhou-Embedding"));
        assert!(super::is_hub_id("Qwen/Qwen3-Embedding-0.6B"));
        assert!(!super::is_hub_id("./model"));
        assert!(!super::is_hub_id("/abs/path"));
        assert!(!super::is_hub_id("a/b/c"));
        assert!(!super::is_hub_id("../x"));
    }
}
