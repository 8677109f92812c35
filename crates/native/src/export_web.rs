//! `qzhou export-web`: turn a model folder into web weight packs (f32, f16, q8, q4) that the
//! npm package streams, verifies and caches.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use qzhou_core::fs::{open_checkpoint, read_optional, read_required};
use qzhou_core::model::check_weights;
use qzhou_core::sentence_transformers::SentenceTransformersFiles;
use qzhou_core::weight_pack::{
    manifest_name, sha256_hex, write_pack, PackFile, PackLimits, PackOptions,
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PART_BYTES, DEFAULT_Q4_KEEP_Q8,
};
use qzhou_core::{Quantization, QwenConfig, TextTokenizer, Truncation};

use crate::hub::ModelArgs;
use crate::output::atomic_write;

#[derive(Args, Debug)]
pub struct ExportWebArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    /// Output folder (created; serve it as the model's base URL).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Schemes to write, comma-separated: f32, f16, q8, q4.
    #[arg(long, default_value = "q8,q4,f16,f32", value_delimiter = ',')]
    pub quant: Vec<String>,
    /// Largest part of one tensor in MiB (keep at or under the adapter's
    /// maxStorageBufferBindingSize; WebGPU's default is 128).
    #[arg(long, default_value_t = DEFAULT_MAX_PART_BYTES >> 20)]
    pub max_part_mib: usize,
    /// Largest weight file in MiB.
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_BYTES >> 20)]
    pub max_file_mib: usize,
    /// In the q4 pack, keep tensors whose name contains any of these (comma-separated) at q8.
    /// Default: the attention key, value and output projections (about +0.2 bits per weight; see
    /// README "Web packs"); `none` stores every block tensor as q4.
    #[arg(long, value_delimiter = ',', value_name = "NAME_PARTS")]
    pub q4_keep_q8: Option<Vec<String>>,
}

pub fn run(args: ExportWebArgs) -> Result<()> {
    let schemes = args
        .quant
        .iter()
        .map(|q| q.trim().parse::<Quantization>())
        .collect::<qzhou_core::Result<Vec<_>>>()?;
    if schemes.is_empty() {
        bail!("--quant names no scheme");
    }
    let options = PackOptions {
        limits: PackLimits {
            max_part_bytes: args.max_part_mib << 20,
            max_file_bytes: args.max_file_mib << 20,
        },
        q4_keep_q8: match &args.q4_keep_q8 {
            None => DEFAULT_Q4_KEEP_Q8.iter().map(|s| s.to_string()).collect(),
            Some(list) if list.iter().any(|s| s.trim() == "none") => Vec::new(),
            Some(list) => list
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        },
    };
    let dir = args.source.resolve()?;

    // Everything the browser needs besides weights, validated before anything is written.
    let mut assets: Vec<(String, Vec<u8>)> = Vec::new();
    for name in ["config.json", "tokenizer.json"] {
        assets.push((name.to_string(), read_required(&dir, name)?));
    }
    let config = QwenConfig::from_json(&assets[0].1)?;
    TextTokenizer::from_json(&assets[1].1, 8, Truncation::Truncate)?;
    SentenceTransformersFiles::gather(|name| {
        let bytes = read_optional(dir.join(name))?;
        if let Some(b) = &bytes {
            assets.push((name.to_string(), b.clone()));
        }
        Ok(bytes)
    })?;
    let checkpoint = open_checkpoint(&dir)?;
    check_weights(&config, &checkpoint)?;

    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut asset_files = Vec::new();
    for (name, bytes) in &assets {
        write_file(&args.out, name, bytes)?;
        asset_files.push(PackFile {
            name: name.clone(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        });
    }
    println!("scheme  files        bytes  bits/weight  manifest");
    for scheme in schemes {
        let mut manifest = write_pack(&checkpoint, scheme, &options, &mut |name, bytes| {
            write_file(&args.out, name, bytes)
                .map_err(|e| qzhou_core::QzhouError::InvalidOption(format!("{e:#}")))
        })?;
        manifest.assets = asset_files.clone();
        // The manifest goes last: a folder with a manifest has every file it lists.
        let name = manifest_name(scheme);
        write_file(&args.out, &name, &manifest.to_json())?;
        println!(
            "{:<6} {:>6} {:>12}  {:>11.2}  {}",
            scheme.as_str(),
            manifest.files.len(),
            manifest.weight_bytes(),
            manifest.bits_per_weight(),
            args.out.join(&name).display()
        );
    }
    Ok(())
}

/// Write `out/name` atomically, creating sub-folders (`1_Pooling/config.json`).
fn write_file(out: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = out.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    atomic_write(&path, |w| Ok(w.write_all(bytes)?))
}
