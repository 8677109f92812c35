//! `qzhou serve`: an embedding server speaking OpenAI's `/v1/embeddings` and
//! text-embeddings-inference's `/embed`, with dynamic batching on one model.
//!
//! The model lives on the thread that loaded it (any backend, no `Send` needed) and runs
//! [`batcher::run`]; HTTP runs on a tokio runtime on other threads, tokenises requests there
//! and hands token ids to the model through a bounded queue. Stateless: more throughput is
//! more replicas behind a load balancer (README "Serving").

mod batcher;
mod error;
mod http;
mod openai;
mod request;
mod state;
mod tei;
mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use qzhou_core::{Embedder, KernelBackend, LoadOptions, TextKind, Truncation};

use crate::backend::{BackendJob, ComputeArgs};
use crate::hub::ModelArgs;
use crate::model_form::FormOverrides;
use crate::prompt_args::PromptArgs;
use batcher::BatchPolicy;
use request::Limits;
use state::{AppState, ModelInfo};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Model name reported to clients (default: --model as given).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Padded tokens (texts × longest) one batch may hold.
    #[arg(long, default_value_t = qzhou_core::embedder::DEFAULT_BATCH_TOKENS)]
    pub max_batch_tokens: usize,
    /// Milliseconds the batcher waits for more requests when a batch is not full.
    #[arg(long, default_value_t = 2)]
    pub batch_wait_ms: u64,
    /// Requests that may wait for the model; more get 429 with Retry-After.
    #[arg(long, default_value_t = 512)]
    pub max_queue: usize,
    /// Most inputs in one request (413 beyond).
    #[arg(long, default_value_t = 2048)]
    pub max_inputs: usize,
    /// Most tokens, all inputs together, in one request (413 beyond).
    #[arg(long, default_value_t = 262_144)]
    pub max_input_tokens: usize,
    /// Max tokens per input (default: the model folder's, else min(max positions, 8192)).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Truncate over-long inputs unless a request says `"truncate": false` (default: 413).
    #[arg(long)]
    pub auto_truncate: bool,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Require `Authorization: Bearer KEY` (every route but /health).
    #[arg(long, env = "QZHOU_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Texts with no prompt in the request are queries or documents (TEI's default: documents,
    /// embedded as given).
    #[arg(long, default_value = "document", value_parser = ["query", "document"])]
    pub default_kind: String,
    /// The prompt requests get by default (`--task`, `--instruction`, `--prompt-style`).
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub form: FormOverrides,
}

struct ServeJob {
    args: ServeArgs,
    model_dir: PathBuf,
}

pub fn run(args: ServeArgs) -> Result<()> {
    for (name, value) in [
        ("--max-batch-tokens", args.max_batch_tokens),
        ("--max-queue", args.max_queue),
        ("--max-inputs", args.max_inputs),
        ("--max-input-tokens", args.max_input_tokens),
        ("--max-body-bytes", args.max_body_bytes),
    ] {
        if value == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if args.api_key.as_deref() == Some("") {
        bail!("--api-key is empty");
    }
    let model_dir = args.source.resolve()?;
    let compute = args.compute;
    compute.dispatch(ServeJob { args, model_dir })
}

impl BackendJob for ServeJob {
    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let a = &self.args;
        let load = LoadOptions {
            attention: a.form.attention()?,
            pooling: a.form.pooling()?,
            max_length: a.max_length,
            truncation: Truncation::Error,
            batch_tokens: a.max_batch_tokens,
            ..LoadOptions::default()
        };
        let embedder = Embedder::<B>::from_dir(&self.model_dir, &device, &load)
            .with_context(|| format!("loading {}", self.model_dir.display()))?;
        let defaults = a.prompt.options(if a.default_kind == "query" {
            TextKind::Query
        } else {
            TextKind::Document
        })?;
        embedder.prefix(&defaults)?; // an unknown --task fails before listening
        let max_length = embedder.tokenizer().max_length();
        if a.max_input_tokens < max_length {
            bail!(
                "--max-input-tokens {} is below the max length {max_length}: one full-length input could never be served",
                a.max_input_tokens
            );
        }
        // Warm up (kernel compilation on GPUs) before the first client waits for it.
        embedder
            .embed_token_ids(&[vec![embedder.tokenizer().pad_id(); 8]])
            .context("warm-up pass")?;

        let metrics = telemetry::install()?;
        let (queue, receiver) = batcher::queue(a.max_queue);
        let info_backend = format!("{:?}", a.compute.backend).to_lowercase();
        let info = ModelInfo {
            name: a
                .served_model_name
                .clone()
                .unwrap_or_else(|| a.source.model.clone()),
            backend: info_backend.clone(),
            dtype: format!("{:?}", a.compute.dtype).to_lowercase(),
            pooling: embedder.pooling().to_string(),
            attention: embedder.attention().to_string(),
            normalize: embedder.normalize(),
            max_batch_tokens: a.max_batch_tokens,
            max_queue: a.max_queue,
        };
        let state = Arc::new(AppState {
            queue,
            preprocessor: Arc::new(embedder.preprocessor().clone()),
            limits: Limits {
                max_inputs: a.max_inputs,
                max_input_tokens: a.max_input_tokens,
                max_length,
                auto_truncate: a.auto_truncate,
                vocab_size: embedder.config().vocab_size,
                dim: embedder.dim(),
            },
            defaults,
            info,
            api_key_digest: a.api_key.as_deref().map(http::key_digest),
            metrics,
        });
        let app = http::router(state, a.max_body_bytes);

        let listener = std::net::TcpListener::bind((a.host.as_str(), a.port))
            .with_context(|| format!("listening on {}:{}", a.host, a.port))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        eprintln!(
            "qzhou serve: listening on http://{address} (model {}, {} backend, {} dims, max length {max_length})",
            self.model_dir.display(),
            info_backend,
            embedder.dim(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("qzhou-http")
            .build()
            .context("starting the HTTP runtime")?;
        let server = std::thread::Builder::new()
            .name("qzhou-http".into())
            .spawn(move || runtime.block_on(http::serve(listener, app)))
            .context("starting the HTTP thread")?;
        // Until the server has shut down and dropped every queue handle.
        batcher::run(
            &embedder,
            receiver,
            BatchPolicy {
                max_batch_tokens: a.max_batch_tokens,
                max_wait: Duration::from_millis(a.batch_wait_ms),
            },
        );
        let served = server
            .join()
            .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))?;
        served?;
        eprintln!("qzhou serve: stopped");
        Ok(())
    }
}
