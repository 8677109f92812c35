//! `qzhou embed`.

use std::ops::Range;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qzhou_core::KernelBackend;
use qzhou_core::{Embedder, LoadOptions, TextKind, Truncation};
use sha2::{Digest, Sha256};

use crate::backend::{BackendJob, ComputeArgs};
use crate::eval::model_fingerprint;
use crate::hub::ModelArgs;
use crate::input::{count_texts, from_args, read_file, read_range, InputFormat, InputText};
use crate::model_form::FormOverrides;
use crate::output::{write_embeddings, OutputFormat};
use crate::prompt_args::PromptArgs;
use crate::shard::{jsonl_lines, Shard, ShardParts};

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Texts to embed (or use --input).
    pub texts: Vec<String>,
    #[command(flatten)]
    pub source: ModelArgs,
    /// Read texts from FILE (`-` for stdin): one per line, or JSONL with `text` and optional `id`.
    #[arg(short, long)]
    pub input: Option<String>,
    /// Input format.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub input_format: InputFormat,
    /// Write to FILE instead of stdout (written atomically).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub output_format: OutputFormat,
    /// Texts are queries: prefix them with the instruction (default).
    #[arg(long, conflicts_with = "document")]
    pub query: bool,
    /// Texts are documents: no prefix (unless the task applies its instruction to all inputs).
    #[arg(long)]
    pub document: bool,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Max tokens per text (default: the model folder's, else min(max positions, 8192)).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Fail on texts longer than --max-length instead of truncating them.
    #[arg(long)]
    pub no_truncate: bool,
    /// Padded-token budget of one forward pass.
    #[arg(long, default_value_t = qzhou_core::embedder::DEFAULT_BATCH_TOKENS)]
    pub batch_tokens: usize,
    #[command(flatten)]
    pub form: FormOverrides,
    /// Do not L2-normalise the embeddings.
    #[arg(long)]
    pub no_normalize: bool,
    /// Embed only shard I of N (0-based) of --input's texts into OUTPUT's shard file
    /// (`emb.jsonl` → `emb-0000I-of-0000N.jsonl`); a killed shard run again redoes only its
    /// unfinished chunks. Join the shards with `qzhou merge-shards -o OUTPUT`.
    #[arg(long, value_name = "I/N", requires_all = ["input", "output"])]
    pub shard: Option<Shard>,
    /// Texts per chunk: one progress step, and with --shard the unit of sharding and of
    /// resumption (a chunk is embedded on its own, so sharded and unsharded vectors match bit
    /// for bit when this is the same).
    #[arg(long, default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub chunk_texts: usize,
}

/// The slice of the input one `--shard` run embeds.
struct ShardJob {
    shard: Shard,
    /// Text positions of the whole input.
    total: usize,
    /// Positions of this shard (a multiple of `chunk_texts` at the start).
    range: Range<usize>,
    /// The shard's output file.
    output: PathBuf,
}

struct EmbedJob {
    args: EmbedArgs,
    texts: Vec<InputText>,
    shard: Option<ShardJob>,
    model_dir: PathBuf,
    show_progress: bool,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let mut shard = None;
    let texts = match (&args.input, args.texts.is_empty(), args.shard) {
        (Some(_), false, _) => bail!("give texts as arguments or with --input, not both"),
        (Some(path), true, Some(s)) => {
            if path == "-" {
                bail!("--shard reads its slice from a file, not standard input");
            }
            let total = count_texts(path, args.input_format)?;
            if total == 0 {
                bail!("{path}: no texts");
            }
            let range = s.range(total, args.chunk_texts);
            let output = s.output_path(args.output.as_deref().expect("clap requires --output"));
            let texts = read_range(path, args.input_format, range.clone())?;
            shard = Some(ShardJob {
                shard: s,
                total,
                range,
                output,
            });
            texts
        }
        (Some(path), true, None) => read_file(path, args.input_format)?,
        (None, false, _) => from_args(&args.texts)?,
        (None, true, _) => bail!("no texts: pass them as arguments or with --input FILE"),
    };
    crate::output::resolve_format(args.output_format, args.output.as_deref())?;
    if let Some(job) = &shard {
        if job.output.exists() {
            eprintln!(
                "shard {} is already done ({} exists; delete it to embed the shard again)",
                job.shard,
                job.output.display()
            );
            return Ok(());
        }
    }
    let model_dir = args.source.resolve()?;
    let show_progress =
        args.input.is_some() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let compute = args.compute;
    compute.dispatch(EmbedJob {
        args,
        texts,
        shard,
        model_dir,
        show_progress,
    })
}

impl BackendJob for EmbedJob {
    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let a = &self.args;
        let load = LoadOptions {
            attention: a.form.attention()?,
            pooling: a.form.pooling()?,
            normalize: if a.no_normalize { Some(false) } else { None },
            max_length: a.max_length,
            truncation: if a.no_truncate {
                Truncation::Error
            } else {
                Truncation::Truncate
            },
            batch_tokens: a.batch_tokens,
            ..LoadOptions::default()
        };
        let embedder = Embedder::<B>::from_dir(&self.model_dir, &device, &load)
            .with_context(|| format!("loading {}", self.model_dir.display()))?;
        let options = a.prompt.options(if a.document {
            TextKind::Document
        } else {
            TextKind::Query
        })?;
        embedder.prefix(&options)?; // unknown task: fail before any work
        let bar = if self.show_progress {
            let bar = ProgressBar::new(self.texts.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} texts ({per_sec}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let embed_chunk = |c: usize, chunk: &[InputText]| {
            let strs: Vec<&str> = chunk.iter().map(|t| t.text.as_str()).collect();
            embedder
                .embed(&strs, &options)
                .map_err(|e| renumber(e, c * a.chunk_texts, &self.texts))
        };
        if let Some(job) = &self.shard {
            let fingerprint = self.fingerprint(job)?;
            let parts = ShardParts::open(&job.output, &fingerprint)?;
            // Absolute chunk indices: the shard starts at a multiple of chunk_texts.
            let first = job.range.start / a.chunk_texts;
            let (mut done, mut embedded) = (0, 0);
            for (c, chunk) in self.texts.chunks(a.chunk_texts).enumerate() {
                if parts.has(first + c) {
                    done += 1;
                } else {
                    let rows = embed_chunk(c, chunk)?;
                    let ids: Vec<_> = chunk.iter().map(|t| t.id.clone()).collect();
                    parts.write(first + c, &jsonl_lines(&ids, &rows)?)?;
                    embedded += 1;
                }
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            let chunks = self.texts.len().div_ceil(a.chunk_texts);
            parts.finish(first..first + chunks, &job.output, a.output_format)?;
            eprintln!(
                "shard {}: texts {}..{} of {}, {chunks} chunks ({done} found done, {embedded} embedded) -> {}",
                job.shard,
                job.range.start,
                job.range.end,
                job.total,
                job.output.display()
            );
            return Ok(());
        }
        let mut rows = Vec::with_capacity(self.texts.len());
        for (c, chunk) in self.texts.chunks(a.chunk_texts).enumerate() {
            rows.extend(embed_chunk(c, chunk)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let ids: Vec<serde_json::Value> = self.texts.iter().map(|t| t.id.clone()).collect();
        write_embeddings(a.output.as_deref(), a.output_format, &ids, &rows)
    }
}

impl EmbedJob {
    /// What a shard's finished chunks depend on: the model files, every option that changes a
    /// vector or the output, and the input slice (its size, range and texts).
    fn fingerprint(&self, job: &ShardJob) -> Result<String> {
        let a = &self.args;
        let mut h = Sha256::new();
        h.update(model_fingerprint(&self.model_dir, "")?.as_bytes());
        let options = format!(
            "{:?}|{:?}|{:?}|{}|{:?}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}",
            a.form,
            a.prompt,
            a.document,
            a.query,
            a.max_length,
            a.no_truncate,
            a.no_normalize,
            a.batch_tokens,
            a.compute.backend,
            a.compute.dtype,
            a.compute.fusion,
            a.output_format,
            a.chunk_texts,
            job.total,
            job.range,
        );
        h.update(options.as_bytes());
        for t in &self.texts {
            h.update(t.id.to_string().as_bytes());
            h.update([0]);
            h.update(t.text.as_bytes());
            h.update([0]);
        }
        Ok(format!("{:x}", h.finalize()))
    }
}

/// Errors name text positions within a chunk: report the text's id in the whole input instead.
fn renumber(e: qzhou_core::QzhouError, offset: usize, texts: &[InputText]) -> anyhow::Error {
    use qzhou_core::QzhouError::*;
    let index = match &e {
        EmptyText { index } | TextTooLong { index, .. } | NonFinite { index } => {
            Some(offset + index)
        }
        _ => None,
    };
    match index {
        Some(i) => anyhow::Error::new(e).context(format!("text id {}", texts[i].id)),
        None => anyhow::Error::new(e),
    }
}
