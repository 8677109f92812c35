//! `qzhou export --checkpoint DIR --out OUT`: a `qzhou train` checkpoint as a Hugging Face /
//! sentence-transformers folder — `config.json`, sharded safetensors (bf16 or f32, with
//! `model.safetensors.index.json` when sharded), the tokenizer, and the sentence-transformers
//! module, pooling and prompt files — with LoRA adapters merged. `transformers.AutoModel` and
//! `sentence_transformers.SentenceTransformer` load it unchanged (bidirectional models with
//! `trust_remote_code=True`, through the `modeling_qzhou.py` written beside them, as QZhou's
//! own release does); so does `qzhou embed`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::module::Module;
use clap::{Args, ValueEnum};
use qzhou_core::fs::read_optional;
use qzhou_core::model::HfTensor;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::output::atomic_write;

/// `bytes` to `path`, atomically.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write(path, |w| Ok(w.write_all(bytes)?))
}
use crate::train::checkpoint::{read_state, MODEL_FILE};
use crate::train::{build_model, Folder, Rec};

/// Storage dtype of the exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportDtype {
    /// bfloat16 (what QZhou ships; half the size).
    Bf16,
    /// float32 (bit-exact with training).
    F32,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint folder written by `qzhou train` (`step-N/`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder (must not exist or be empty).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Weight dtype.
    #[arg(long, value_enum, default_value_t = ExportDtype::Bf16)]
    pub dtype: ExportDtype,
    /// Largest shard in MiB (transformers' default is 5 GB).
    #[arg(long, default_value_t = 5000)]
    pub shard_mib: usize,
}

/// transformers code for bidirectional attention (see the file's docstring).
const MODELING_QZHOU: &str = include_str!("modeling_qzhou.py");

/// Files copied from the base model folder when present.
const COPIED: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
];

pub fn run(args: ExportArgs) -> Result<()> {
    if args.shard_mib == 0 {
        bail!("--shard-mib must be at least 1");
    }
    if args.out.exists()
        && fs::read_dir(&args.out)
            .with_context(|| format!("{} is not a folder", args.out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; choose a new folder",
            args.out.display()
        );
    }
    let state = read_state(&args.checkpoint)?;
    let run = &state.run;
    let folder = Folder::open(run)?;
    let device = Default::default();
    let model = build_model::<Flex>(run, &folder, &device, false)?
        .load_file(args.checkpoint.join(MODEL_FILE), &Rec::new(), &device)
        .with_context(|| format!("cannot load {}", args.checkpoint.display()))?
        .merge_lora();

    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let shards = write_shards(&model, &args.out, args.dtype, args.shard_mib << 20)?;

    // config.json: the base model's, with the stored dtype.
    let base = &run.model.path;
    let mut config: serde_json::Value = serde_json::from_slice(
        &fs::read(base.join("config.json"))
            .with_context(|| format!("cannot read {}/config.json", base.display()))?,
    )?;
    let dtype = match args.dtype {
        ExportDtype::Bf16 => "bfloat16",
        ExportDtype::F32 => "float32",
    };
    config["torch_dtype"] = dtype.into();
    config["dtype"] = dtype.into();
    // transformers 5 writes RoPE's base only inside `rope_parameters`; transformers 4 (which
    // sentence-transformers < 4 and infinity-emb pin) ignores that and silently falls back to
    // 10000. Keep a top-level copy so both read the same model.
    let nested_theta = config
        .get("rope_parameters")
        .and_then(|p| p.get("rope_theta"))
        .cloned();
    if let (None, Some(theta)) = (config.get("rope_theta"), nested_theta) {
        config["rope_theta"] = theta;
    }
    // Bidirectional models need their own modeling code in transformers: the base folder's
    // (real QZhou ships one) or ours.
    if run.model.attention == "bidirectional" {
        if config.get("auto_map").is_some() {
            for entry in fs::read_dir(base)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "py") {
                    let name = path.file_name().expect("a file name");
                    write_file(&args.out.join(name), &fs::read(&path)?)?;
                }
            }
        } else {
            write_file(
                &args.out.join("modeling_qzhou.py"),
                MODELING_QZHOU.as_bytes(),
            )?;
            config["auto_map"] = serde_json::json!({"AutoModel": "modeling_qzhou.QZhouModel"});
        }
    }
    write_file(
        &args.out.join("config.json"),
        &serde_json::to_vec_pretty(&config)?,
    )?;
    for name in COPIED {
        if let Some(bytes) = read_optional(base.join(name))? {
            write_file(&args.out.join(name), &bytes)?;
        }
    }
    write_sentence_transformers(&args.out, base, run, folder.config.hidden_size)?;
    eprintln!(
        "exported step {} ({} shard{}, {dtype}) to {}",
        state.step,
        shards,
        if shards == 1 { "" } else { "s" },
        args.out.display()
    );
    Ok(())
}

/// One tensor's bytes in the export dtype.
fn encode(t: &HfTensor, dtype: ExportDtype) -> (Dtype, Vec<u8>) {
    match dtype {
        ExportDtype::F32 => (
            Dtype::F32,
            t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ExportDtype::Bf16 => (
            Dtype::BF16,
            t.values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        ),
    }
}

/// Write the weights in shards of at most `shard_bytes` (a bigger tensor gets a shard of its
/// own); returns the shard count.
fn write_shards<B: burn::prelude::Backend>(
    model: &qzhou_core::model::QwenEncoder<B>,
    out: &Path,
    dtype: ExportDtype,
    shard_bytes: usize,
) -> Result<usize> {
    let mut shards: Vec<Vec<(String, Dtype, Vec<usize>, Vec<u8>)>> = vec![Vec::new()];
    let mut written: Vec<PathBuf> = Vec::new();
    let mut current = 0usize;
    let mut total = 0usize;
    let mut flush = |shard: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>| -> Result<()> {
        let path = out.join(format!(".shard-{}.safetensors", written.len()));
        let views: Vec<(String, TensorView<'_>)> = shard
            .iter()
            .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
            .collect::<Result<_, safetensors::SafeTensorError>>()?;
        let metadata = Some(std::collections::HashMap::from([(
            "format".to_string(),
            "pt".to_string(),
        )]));
        safetensors::serialize_to_file(views, metadata, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    model.for_each_hf_tensor(|t| {
        let (d, bytes) = encode(&t, dtype);
        total += bytes.len();
        if current > 0 && current + bytes.len() > shard_bytes {
            let full = std::mem::take(shards.last_mut().expect("one shard"));
            flush(full).map_err(|e| qzhou_core::QzhouError::Backend(format!("{e:#}")))?;
            current = 0;
        }
        current += bytes.len();
        shards
            .last_mut()
            .expect("one shard")
            .push((t.name, d, t.shape, bytes));
        Ok(())
    })?;
    let last = std::mem::take(shards.last_mut().expect("one shard"));
    flush(last)?;
    let n = written.len();
    if n == 1 {
        fs::rename(&written[0], out.join("model.safetensors"))?;
        return Ok(1);
    }
    let mut weight_map = BTreeMap::new();
    for (i, path) in written.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        let bytes = fs::read(path)?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
        for tensor in meta.tensors().keys() {
            weight_map.insert(tensor.clone(), name.clone());
        }
        fs::rename(path, out.join(&name))?;
    }
    let index = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": weight_map,
    });
    write_file(
        &out.join("model.safetensors.index.json"),
        &serde_json::to_vec_pretty(&index)?,
    )?;
    Ok(n)
}

/// sentence-transformers files: the base folder's when it has them, else mean pooling +
/// Normalize (QZhou's modules) with the run's passage length.
fn write_sentence_transformers(
    out: &Path,
    base: &Path,
    run: &crate::train::config::RunConfig,
    hidden: usize,
) -> Result<()> {
    let copy_or = |name: &str, default: serde_json::Value| -> Result<()> {
        let bytes = match read_optional(base.join(name))? {
            Some(b) => b,
            None => serde_json::to_vec_pretty(&default)?,
        };
        let path = out.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        write_file(&path, &bytes)
    };
    copy_or(
        "modules.json",
        serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    )?;
    let mode = |m: &str| run.model.pooling == m;
    copy_or(
        "1_Pooling/config.json",
        serde_json::json!({
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": mode("first-token"),
            "pooling_mode_mean_tokens": mode("mean"),
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": mode("last-token"),
            "include_prompt": true
        }),
    )?;
    copy_or(
        "sentence_bert_config.json",
        serde_json::json!({"max_seq_length": run.train.passage_max_len, "do_lower_case": false}),
    )?;
    copy_or(
        "config_sentence_transformers.json",
        serde_json::json!({"prompts": {}, "default_prompt_name": null, "similarity_fn_name": "cosine"}),
    )?;
    Ok(())
}
