//! `qzhou export-web`: turn a model folder into web weight packs (f32, f16, q8, q4) that the
//! npm package streams, verifies and caches.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use clap::Args;
use qzhou_core::fs::{open_checkpoint, read_optional, read_required};
use qzhou_core::gptq::{gptq_projections, BUILT_IN_CALIBRATION};
use qzhou_core::model::check_weights;
use qzhou_core::quantization::RoundedQ4;
use qzhou_core::sentence_transformers::SentenceTransformersFiles;
use qzhou_core::weight_pack::{
    manifest_name, sha256_hex, write_pack, PackFile, PackLimits, PackOptions,
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PART_BYTES, DEFAULT_Q4_AS_Q4K, DEFAULT_Q4_KEEP_Q8,
    Q4_MIN_MAX_GRIDS_WITH_GPTQ,
};
use qzhou_core::{
    AttentionMode, EmbedOptions, Embedder, LoadOptions, Quantization, QwenConfig, TensorSource,
    TextTokenizer, Truncation,
};

use crate::hub::ModelArgs;
use crate::input::{read_file, InputFormat};
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
    /// In the q4 pack, store tensors whose name contains any of these (comma-separated) as q4k:
    /// 16-value sub-blocks with 8-bit coded scales, 5.25 bits per weight, where the last
    /// dimension is a multiple of 128 (q4's blocks of 32 elsewhere). Default: the
    /// token-embedding table and the projections not kept at q8 (see README "Web packs");
    /// `none` stores them as q4.
    #[arg(long, value_delimiter = ',', value_name = "NAME_PARTS")]
    pub q4_as_q4k: Option<Vec<String>>,
    /// In the q4 pack, fit the q4/q4k grids of tensors whose name contains any of these
    /// (comma-separated) to each block's smallest and largest values instead of least squares:
    /// more error per value, but a block's largest values are not pulled towards zero. Default:
    /// the token-embedding table with `--calibration`, none without (each measured best on the
    /// real Qwen2.5-0.5B; see README "Web packs"); `none` fits every grid by least squares.
    #[arg(long, value_delimiter = ',', value_name = "NAME_PARTS")]
    pub q4_min_max_grids: Option<Vec<String>>,
    /// Round the q4 pack's projections by GPTQ against calibration texts: one per line, or JSONL
    /// with a `text` field; a built-in set of 71 short texts (other languages, code, markup,
    /// numbers, emoji) is added to them. GPTQ moves each column's rounding error onto the columns
    /// not yet rounded, weighted by the projection's real inputs; it needs the model in f32 in
    /// memory, a few minutes per billion weights on a CPU, and calibration tokens at least half
    /// the widest projection input (the MLP width: 4,864 for Qwen2.5-0.5B), else it fits the
    /// calibration set instead of the model. Without it, each q4 block is rounded on its own.
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<String>,
    /// Attention the packs run with, and GPTQ calibrates in: bidirectional or causal (default:
    /// from config.json — `QZhouModel` is bidirectional, a stock Qwen decoder causal). The
    /// packs' config.json records it in `architectures` (`QZhouModel` for bidirectional), so
    /// `bidirectional` exports a stock Qwen2 folder in QZhou form for the browser; pooling
    /// follows the folder's Pooling module, else mean when bidirectional and last token when
    /// causal.
    #[arg(long, value_parser = ["bidirectional", "causal"])]
    pub attention: Option<String>,
}

/// Longest calibration text, in tokens.
const CALIBRATION_MAX_TOKENS: usize = 512;

pub fn run(args: ExportWebArgs) -> Result<()> {
    let schemes = args
        .quant
        .iter()
        .map(|q| q.trim().parse::<Quantization>())
        .collect::<qzhou_core::Result<Vec<_>>>()?;
    if schemes.is_empty() {
        bail!("--quant names no scheme");
    }
    if schemes.contains(&Quantization::Q4K) {
        bail!(
            "--quant q4k: q4k is the tensor format q4 packs store the embedding table in \
             (--q4-as-q4k), not a pack of its own; ask for q4"
        );
    }
    let name_parts = |arg: &Option<Vec<String>>, default: &[&str]| match arg {
        None => default.iter().map(|s| s.to_string()).collect(),
        Some(list) if list.iter().any(|s| s.trim() == "none") => Vec::new(),
        Some(list) => list
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    let mut options = PackOptions {
        limits: PackLimits {
            max_part_bytes: args.max_part_mib << 20,
            max_file_bytes: args.max_file_mib << 20,
        },
        q4_keep_q8: name_parts(&args.q4_keep_q8, DEFAULT_Q4_KEEP_Q8),
        q4_as_q4k: name_parts(&args.q4_as_q4k, DEFAULT_Q4_AS_Q4K),
        q4_min_max_grids: name_parts(
            &args.q4_min_max_grids,
            if args.calibration.is_some() {
                Q4_MIN_MAX_GRIDS_WITH_GPTQ
            } else {
                &[]
            },
        ),
        q4_rounded: Default::default(),
    };
    let dir = args.source.resolve()?;

    // Everything the browser needs besides weights, validated before anything is written.
    let mut assets: Vec<(String, Vec<u8>)> = Vec::new();
    for name in ["config.json", "tokenizer.json"] {
        assets.push((name.to_string(), read_required(&dir, name)?));
    }
    if let Some(mode) = &args.attention {
        assets[0].1 = config_with_attention(&assets[0].1, mode.parse()?)?;
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

    if let Some(calibration) = &args.calibration {
        if !schemes.contains(&Quantization::Q4) {
            bail!("--calibration is for the q4 pack's GPTQ rounding, but --quant has no q4");
        }
        options.q4_rounded = gptq_round(&dir, &checkpoint, &config, &options, calibration)?;
    }

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

/// `config.json` with `architectures` naming attention `mode` the way [`QwenConfig::native_attention`]
/// reads it: `QZhouModel` when bidirectional, else the stock `Qwen2Model`/`Qwen3Model`; every
/// other key kept.
fn config_with_attention(bytes: &[u8], mode: AttentionMode) -> Result<Vec<u8>> {
    let mut config: serde_json::Value =
        serde_json::from_slice(bytes).context("config.json is not JSON")?;
    let fields = config
        .as_object_mut()
        .context("config.json is not a JSON object")?;
    let name = match (mode, fields.get("model_type").and_then(|t| t.as_str())) {
        (AttentionMode::Bidirectional, _) => "QZhouModel",
        (AttentionMode::Causal, Some("qwen3")) => "Qwen3Model",
        (AttentionMode::Causal, _) => "Qwen2Model",
    };
    fields.insert("architectures".into(), serde_json::json!([name]));
    Ok(serde_json::to_vec_pretty(&config)?)
}

/// GPTQ-round the projections the q4 pack stores as q4 or q4k (on the CPU, f32), in the attention mode
/// `config` names (the packs' form) with the model's tokenizer; progress on stderr.
fn gptq_round(
    dir: &Path,
    checkpoint: &dyn TensorSource,
    config: &QwenConfig,
    options: &PackOptions,
    calibration: &str,
) -> Result<BTreeMap<String, RoundedQ4>> {
    let mut texts: Vec<String> = read_file(calibration, InputFormat::Auto)?
        .into_iter()
        .map(|t| t.text)
        .collect();
    for line in BUILT_IN_CALIBRATION.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        texts.push(
            v["text"]
                .as_str()
                .context("built-in calibration line")?
                .to_string(),
        );
    }
    let device = Default::default();
    let load = LoadOptions {
        attention: Some(config.native_attention()),
        max_length: Some(CALIBRATION_MAX_TOKENS),
        truncation: Truncation::Truncate,
        ..LoadOptions::default()
    };
    let embedder = Embedder::<Flex>::from_dir(dir, &device, &load)
        .with_context(|| format!("cannot load {} for GPTQ calibration", dir.display()))?;
    let ids = embedder.tokenize(&texts, &EmbedOptions::document())?;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let widest = config.hidden_size.max(config.intermediate_size);
    if 2 * tokens < widest {
        bail!(
            "{calibration}: {} texts give {tokens} calibration tokens (with the built-in set); GPTQ \
             needs at least half the widest projection input ({widest} values), {} tokens — add \
             texts, or leave out --calibration to round each block on its own",
            texts.len(),
            widest.div_ceil(2)
        );
    }
    eprintln!(
        "q4: GPTQ over {} calibration texts ({tokens} tokens), {} layers, {} attention (the \
         packs' form; --attention to choose)",
        texts.len(),
        embedder.model().layers.len(),
        embedder.attention()
    );
    let started = Instant::now();
    let rounded = gptq_projections(
        embedder.model(),
        checkpoint,
        &ids,
        &device,
        &|name, shape| match options.scheme_for(Quantization::Q4, name, shape) {
            q @ (Quantization::Q4 | Quantization::Q4K) => Some(q),
            _ => None,
        },
        &mut |layer, layers| {
            eprint!(
                "\rq4: GPTQ layer {layer}/{layers} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            if layer == layers {
                eprintln!();
            }
        },
    )?;
    Ok(rounded)
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
