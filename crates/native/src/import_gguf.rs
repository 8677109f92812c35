//! `qzhou import-gguf`: a llama.cpp GGUF of a Qwen2/Qwen3 model as a Hugging Face folder
//! (`config.json`, `model.safetensors` in f32 or bf16, `tokenizer.json`) that every other
//! command — and transformers — reads.
//!
//! Quantised blocks are dequantised (see `qzhou_core::gguf::block_types`), one tensor at a
//! time, so memory stays near the largest tensor. Every tensor's name and type is checked
//! before anything is written; each file is written atomically, `config.json` last.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use qzhou_core::fs::FileSource;
use qzhou_core::gguf::qwen::{self, QwenGgufTensors};
use qzhou_core::gguf::GgufFile;
use qzhou_core::model::check_weights;
use qzhou_core::weights::TensorSource;
use qzhou_core::{TextTokenizer, Truncation};

use crate::output::atomic_write;

/// Storage dtype of the written safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportDtype {
    /// float32: the dequantised values exactly.
    F32,
    /// bfloat16 (half the size; rounds the dequantised values to nearest even).
    Bf16,
}

#[derive(Args, Debug)]
pub struct ImportGgufArgs {
    /// The GGUF file (llama.cpp's format, version 2 or 3) of a Qwen2/Qwen3 model.
    pub file: PathBuf,
    /// Output folder (created; must not already hold a model unless --overwrite).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Storage dtype of `model.safetensors`.
    #[arg(long, value_enum, default_value_t = ImportDtype::F32)]
    pub dtype: ImportDtype,
    /// The model's own `tokenizer.json` (copied after a check); without it the tokenizer is
    /// rebuilt from the vocabulary embedded in the GGUF (Qwen's byte-level BPE only).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Replace the model files of an existing folder.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: ImportGgufArgs) -> Result<()> {
    let started = Instant::now();
    let gguf = GgufFile::open(Box::new(FileSource::open(&args.file)?))?;
    let torch_dtype = match args.dtype {
        ImportDtype::F32 => "float32",
        ImportDtype::Bf16 => "bfloat16",
    };
    let (config, parsed) = qwen::config_json(&gguf, torch_dtype)?;
    let config_bytes = serde_json::to_vec_pretty(&config)?;

    // Every tensor is placed, shaped as the config says and readable before a byte is written.
    let tensors = QwenGgufTensors::new(gguf)?;
    check_weights(&parsed, &tensors).with_context(|| {
        format!(
            "{} does not hold the model its metadata describes",
            args.file.display()
        )
    })?;
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for name in tensors.names() {
        let info = tensors.info(&name).expect("listed");
        *types
            .entry(info.ggml_type.as_ref().map(|t| t.name()).unwrap_or("?"))
            .or_default() += 1;
    }
    let gguf = tensors.gguf();

    let tokenizer_bytes = match &args.tokenizer {
        Some(path) => fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => serde_json::to_vec(&qwen::tokenizer_json(&gguf)?)?,
    };
    let tokenizer = TextTokenizer::from_json(&tokenizer_bytes, 8, Truncation::Truncate)
        .context("the tokenizer does not load")?;
    let tokenizer_vocab = tokenizer.vocab_size();
    if tokenizer_vocab > parsed.vocab_size {
        bail!(
            "the tokenizer has {tokenizer_vocab} tokens but the model's embedding table only {} rows",
            parsed.vocab_size
        );
    }

    if args.out.join("config.json").exists() && !args.overwrite {
        bail!(
            "{} already holds a model (config.json); pass --overwrite to replace it",
            args.out.display()
        );
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let weights_path = args.out.join("model.safetensors");
    let written = atomic_write(&weights_path, |w| {
        write_safetensors(w, &tensors, args.dtype)
    });
    written.with_context(|| format!("writing {}", weights_path.display()))?;
    atomic_write(&args.out.join("tokenizer.json"), |w| {
        Ok(w.write_all(&tokenizer_bytes)?)
    })?;
    // config.json last: a folder with one has all its files.
    atomic_write(&args.out.join("config.json"), |w| {
        Ok(w.write_all(&config_bytes)?)
    })?;

    let types: Vec<String> = types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "imported {} ({}, {} layers, hidden {}, vocab {}): {} tensors ({}) as {torch_dtype}{} in {:.1} s -> {}",
        args.file.display(),
        config["model_type"].as_str().unwrap_or("?"),
        parsed.num_hidden_layers,
        parsed.hidden_size,
        parsed.vocab_size,
        tensors.names().len(),
        types.join(", "),
        if tensors.dropped.is_empty() {
            String::new()
        } else {
            format!("; left out {} (LM head)", tensors.dropped.join(", "))
        },
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    println!(
        "tokenizer: {} ({tokenizer_vocab} tokens); the folder loads in its native form ({} attention); --attention bidirectional --pooling mean gives the QZhou form",
        if args.tokenizer.is_some() { "copied" } else { "rebuilt from the GGUF vocabulary" },
        parsed.native_attention(),
    );
    Ok(())
}

/// A safetensors file, written tensor by tensor: the header (offsets computed from shapes),
/// padded with spaces to 8 bytes, then each tensor dequantised and encoded in turn.
fn write_safetensors(
    w: &mut dyn Write,
    tensors: &QwenGgufTensors,
    dtype: ImportDtype,
) -> Result<()> {
    let (dtype_name, width) = match dtype {
        ImportDtype::F32 => ("F32", 4),
        ImportDtype::Bf16 => ("BF16", 2),
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let names = tensors.names();
    let mut offset = 0u64;
    for name in &names {
        let info = tensors.info(name).expect("listed");
        let len = info.n_values() * width;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype_name, "shape": info.shape(), "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    let mut bytes = Vec::new();
    for name in &names {
        let (values, _) = tensors.read_f32(name)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "tensor `{}` value {i} is {} (a broken file)",
                tensors.info(name).expect("listed").name,
                values[i]
            );
        }
        bytes.clear();
        match dtype {
            ImportDtype::F32 => bytes.extend(values.iter().flat_map(|v| v.to_le_bytes())),
            ImportDtype::Bf16 => bytes.extend(
                values
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()),
            ),
        }
        w.write_all(&bytes)?;
    }
    Ok(())
}
