//! `qzhou embed`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qzhou_core::KernelBackend;
use qzhou_core::{Embedder, LoadOptions, TextKind, Truncation};

use crate::backend::{BackendJob, ComputeArgs};
use crate::hub::ModelArgs;
use crate::input::{from_args, read_file, InputFormat, InputText};
use crate::model_form::FormOverrides;
use crate::output::{write_embeddings, OutputFormat};
use crate::prompt_args::PromptArgs;

/// Texts per progress-bar step when reading from a file.
const CHUNK: usize = 256;

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
}

struct EmbedJob {
    args: EmbedArgs,
    texts: Vec<InputText>,
    model_dir: PathBuf,
    show_progress: bool,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let texts = match (&args.input, args.texts.is_empty()) {
        (Some(_), false) => bail!("give texts as arguments or with --input, not both"),
        (Some(path), true) => read_file(path, args.input_format)?,
        (None, false) => from_args(&args.texts)?,
        (None, true) => bail!("no texts: pass them as arguments or with --input FILE"),
    };
    crate::output::resolve_format(args.output_format, args.output.as_deref())?;
    let model_dir = args.source.resolve()?;
    let show_progress =
        args.input.is_some() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let compute = args.compute;
    compute.dispatch(EmbedJob {
        args,
        texts,
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
        let mut rows = Vec::with_capacity(self.texts.len());
        for (c, chunk) in self.texts.chunks(CHUNK).enumerate() {
            let strs: Vec<&str> = chunk.iter().map(|t| t.text.as_str()).collect();
            let got = embedder
                .embed(&strs, &options)
                .map_err(|e| renumber(e, c * CHUNK, &self.texts))?;
            rows.extend(got);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let ids: Vec<serde_json::Value> = self.texts.iter().map(|t| t.id.clone()).collect();
        write_embeddings(a.output.as_deref(), a.output_format, &ids, &rows)
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
