//! `qzhou train --config run.toml`: QZhou's multi-task contrastive training (paper §4–5) on
//! any backend with autodiff — CPU, wgpu, CUDA (f32 or bf16).
//!
//! Each step draws one single-dataset batch ([`BatchSampler`]), embeds its texts with
//! GradCache in chunks of `grad_cache_chunk` (spread over the peers of `--devices` and `--nodes`, see `collective`), applies the dataset's loss (retrieval InfoNCE,
//! CoSENT or classification InfoNCE), clips the global gradient norm and takes an Adam/AdamW
//! step at the scheduled learning rate. Checkpoints every `checkpoint.every` steps, at the end
//! and on Ctrl-C; `--resume` continues bit for bit (weights, optimizer moments, data order).

pub(crate) mod checkpoint;
mod collective;
pub mod config;
mod curves;
mod data;
mod eval;
mod plan;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qzhou_core::data::sampler::BatchSampler;
use qzhou_core::fs::{open_checkpoint, read_required};
use qzhou_core::losses::{classification_infonce, cosent, retrieval_infonce};
use qzhou_core::model::{DeviceStorage, QwenEncoder, RandomInit};
use qzhou_core::training::{
    clip_grad_norm, copy_trainable_from_first_peer, grad_norm, peer_step, PeerGroup, Precision,
    PrecisionAdamW, Solo,
};
use qzhou_core::weights::TensorSource;
use qzhou_core::{AttentionMode, KernelBackend, Pooling, QwenConfig, TextTokenizer, Truncation};

use crate::backend::{dispatch_autodiff, AutodiffJob, BackendKind, DTypeArg, FusionArg};
use checkpoint::{TrainState, MODEL_FILE, OPTIMIZER_FILE};
use collective::{CollectivePeer, GroupSpec, Watchdog};
use config::{Init, RunConfig};
use data::{batch_texts, BatchTexts, Dataset, LossInput};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The run file (see README "Training").
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the newest checkpoint in the run folder (or the one given).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub resume: Option<String>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Compute dtype: f32 (every backend) or bf16 (CPU, CUDA): bf16 forward and backward with
    /// f32 master weights and f32 Adam moments (mixed precision), unless --pure-bf16.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// With --dtype bf16: keep weights and Adam moments in bf16 too (half the memory of mixed
    /// precision, but every update below ~0.4 % of a weight is lost; see README "Precision").
    #[arg(long)]
    pub pure_bf16: bool,
    /// Burn's kernel fusion on wgpu/cuda (default: off; `on` is refused for training while
    /// Burn 0.21's fused backward is wrong for some shapes, README "Backends").
    #[arg(long, value_enum)]
    pub fusion: Option<FusionArg>,
    /// GPU indices for wgpu/cuda, comma-separated: several = data parallel on burn-collective,
    /// one peer per device (each batch's GradCache chunks are spread over every peer of every
    /// node; in-batch negatives span all of them; gradients are summed). On the CPU backend
    /// `0,1,..` runs that many peers sharing the cores (to try a multi-device run).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub devices: Vec<usize>,
    /// Nodes (machines) in the run, one `qzhou train` per node with the same run file.
    #[arg(long, env = "NNODES", default_value_t = 1)]
    pub nodes: usize,
    /// This node's index, 0..nodes; node 0 runs the coordinator and writes checkpoints.
    #[arg(long, env = "NODE_RANK", default_value_t = 0)]
    pub node_rank: usize,
    /// HOST:PORT of the coordinator, reachable from every node (node 0 listens on the port);
    /// default: $MASTER_ADDR:$MASTER_PORT.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// HOST:PORT the other nodes reach this node at for tensor transfers (default: the
    /// coordinator's host, port = coordinator port + 1 + node rank).
    #[arg(long)]
    pub node_address: Option<String>,
    /// Seconds a peer may wait for the others in one collective call (joining included)
    /// before the run stops with an error; evaluation on node 0 counts as waiting for the
    /// other peers.
    #[arg(long, default_value_t = 1800)]
    pub peer_timeout: u64,
    /// Gradient checkpointing (Burn's balanced strategy): recompute memory-bound operations
    /// in the backward pass instead of keeping their outputs. Less activation memory, more
    /// compute; GradCache (`grad_cache_chunk`) is the bigger lever.
    #[arg(long)]
    pub grad_checkpointing: bool,
    /// Print the run's memory plan (weights, master weights, gradients, Adam moments,
    /// activations of the largest GradCache chunk, with and without checkpointing) against the
    /// device's memory, and stop without loading the model.
    #[arg(long)]
    pub plan: bool,
    /// Train even when the memory plan says the run does not fit (the plan is an estimate).
    #[arg(long)]
    pub ignore_memory_plan: bool,
    /// No progress bar (metrics still go to metrics.jsonl).
    #[arg(long)]
    pub quiet: bool,
    /// Write no checkpoints at all (benchmarks: Ctrl-C then loses the run).
    #[arg(long)]
    pub no_save: bool,
}

/// Set to run `qzhou train --fusion on` anyway (speed measurements): fused gradients are wrong
/// for some shapes in Burn 0.21.
pub const ALLOW_FUSED_TRAINING: &str = "QZHOU_ALLOW_FUSED_TRAINING";

pub fn run(args: TrainArgs) -> Result<()> {
    let config = RunConfig::load(&args.config)?;
    let precision = match (args.dtype, args.pure_bf16) {
        (DTypeArg::F32, false) => Precision::F32,
        (DTypeArg::Bf16, false) => Precision::MixedBf16,
        (DTypeArg::Bf16, true) => Precision::PureBf16,
        (DTypeArg::F16, _) => {
            bail!("training in f16 overflows without loss scaling; use --dtype bf16 or f32")
        }
        (DTypeArg::F32, true) => bail!("--pure-bf16 needs --dtype bf16"),
    };
    let fusion = args.backend.fusion(args.fusion)?;
    if fusion && std::env::var_os(ALLOW_FUSED_TRAINING).is_none() {
        bail!(
            "--fusion on is refused for training: Burn 0.21's fused backward gives wrong \
             gradients for some shapes (3.9e-3 relative on wgpu when a GradCache chunk pads to \
             17 tokens; tests/fusion_wgpu.rs, ignored until it passes). Train with --fusion off \
             (the default); set {ALLOW_FUSED_TRAINING}=1 only to measure fused training"
        );
    }
    let job = TrainJob {
        config,
        args,
        precision,
    };
    let (backend, dtype) = (job.args.backend, job.args.dtype);
    let devices = job.args.devices.clone();
    let checkpointing = job.args.grad_checkpointing;
    dispatch_autodiff(backend, dtype, &devices, checkpointing, fusion, job)
}

struct TrainJob {
    config: RunConfig,
    args: TrainArgs,
    precision: Precision,
}

pub(crate) type Rec = NamedMpkFileRecorder<FullPrecisionSettings>;

/// The model folder's config and the two tokenizers (query and passage limits).
pub(crate) struct Folder {
    pub(crate) config: QwenConfig,
    query_tokenizer: TextTokenizer,
    passage_tokenizer: TextTokenizer,
    attention: AttentionMode,
    pooling: Pooling,
}

impl Folder {
    pub(crate) fn open(run: &RunConfig) -> Result<Self> {
        let dir = &run.model.path;
        let config = QwenConfig::from_json(&read_required(dir, "config.json")?)
            .with_context(|| format!("{}/config.json", dir.display()))?;
        let tokenizer = read_required(dir, "tokenizer.json")?;
        let t = &run.train;
        for (what, len) in [
            ("query_max_len", t.query_max_len),
            ("passage_max_len", t.passage_max_len),
        ] {
            if len > config.max_position_embeddings {
                bail!(
                    "{what} {len} exceeds the model's max_position_embeddings {}",
                    config.max_position_embeddings
                );
            }
        }
        let tok = |len| TextTokenizer::from_json(&tokenizer, len, Truncation::Truncate);
        let attention = match run.model.attention.as_str() {
            "bidirectional" => AttentionMode::Bidirectional,
            "causal" => AttentionMode::Causal,
            other => bail!("model.attention must be `bidirectional` or `causal`, got `{other}`"),
        };
        Ok(Self {
            query_tokenizer: tok(t.query_max_len)?,
            passage_tokenizer: tok(t.passage_max_len)?,
            pooling: run.model.pooling.parse()?,
            config,
            attention,
        })
    }

    /// Token ids of `(text, is_query)` pairs.
    fn tokenize(&self, texts: &[(String, bool)]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|(t, q)| {
                let tok = if *q {
                    &self.query_tokenizer
                } else {
                    &self.passage_tokenizer
                };
                Ok(tok.encode(&[t])?.remove(0))
            })
            .collect()
    }
}

/// The model as the run starts (fresh) or as its structure must be to load a checkpoint.
pub(crate) fn build_model<B: KernelBackend>(
    run: &RunConfig,
    folder: &Folder,
    device: &B::Device,
    fresh: bool,
) -> Result<QwenEncoder<B>> {
    let source: Box<dyn TensorSource> = match run.model.init {
        Init::Pretrained => Box::new(open_checkpoint(&run.model.path)?),
        Init::Random => Box::new(RandomInit::new(&folder.config, run.train.seed, 0.02)?),
    };
    // Training needs plain dense weights on the device.
    let storage = DeviceStorage::default();
    let mut model = QwenEncoder::<B>::load(
        &folder.config,
        folder.attention,
        source.as_ref(),
        device,
        &storage,
    )?;
    if fresh {
        if let Some(from) = &run.train.init_from {
            let state = checkpoint::read_state(from)?;
            if let Some(lora) = &state.lora {
                model = model.with_lora(lora)?;
            }
            model = model
                .load_file(from.join(MODEL_FILE), &Rec::new(), device)
                .with_context(|| format!("cannot load the weights of {}", from.display()))?
                .merge_lora()
                .all_trainable();
        }
    }
    if let Some(lora) = &run.lora {
        model = model.with_lora(lora)?;
    }
    Ok(model)
}

/// How a peer's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Finished,
    /// Ctrl-C: every peer stopped at the same step (node 0 saved it).
    Interrupted,
}

impl TrainJob {
    fn group_spec(&self, local: usize) -> Result<GroupSpec> {
        let coordinator = self.args.coordinator.clone().or_else(|| {
            match (std::env::var("MASTER_ADDR"), std::env::var("MASTER_PORT")) {
                (Ok(addr), Ok(port)) => Some(format!("{addr}:{port}")),
                _ => None,
            }
        });
        GroupSpec {
            local,
            nodes: self.args.nodes,
            node_rank: self.args.node_rank,
            coordinator,
            node_address: self.args.node_address.clone(),
            timeout: std::time::Duration::from_secs(self.args.peer_timeout.max(1)),
        }
        .validate()
    }
}

impl AutodiffJob for TrainJob {
    fn run<B>(self, devices: Vec<B::Device>) -> Result<()>
    where
        B: AutodiffBackend + KernelBackend,
        B::InnerBackend: KernelBackend,
    {
        let spec = self.group_spec(devices.len())?;
        let run = &self.config;
        let folder = Folder::open(run)?;
        // Every peer holds one replica and one chunk's activations: plan one device.
        let planned = plan::report::<B>(
            run,
            &folder.config,
            self.precision,
            self.args.grad_checkpointing,
            self.args.backend,
            &devices[..1],
        );
        match planned {
            Err(e) if self.args.ignore_memory_plan && !self.args.plan => {
                eprintln!("warning: {e:#}; training anyway (--ignore-memory-plan)")
            }
            other => other?,
        }
        if self.args.plan {
            return Ok(());
        }
        let datasets: Vec<Dataset> = run
            .datasets
            .iter()
            .map(Dataset::load)
            .collect::<Result<_>>()?;
        for d in &datasets {
            eprintln!(
                "dataset {}: {} samples ({:?}){}{}",
                d.section.name,
                d.samples.len(),
                d.kind,
                if d.report.skipped > 0 {
                    format!(", {} malformed lines skipped", d.report.skipped)
                } else {
                    String::new()
                },
                if d.short_of_negatives > 0 {
                    format!(
                        ", {} with fewer than {} negatives skipped",
                        d.short_of_negatives, d.section.negatives
                    )
                } else {
                    String::new()
                }
            );
        }
        let interrupted = Arc::new(AtomicBool::new(false));
        {
            let flag = interrupted.clone();
            // A second handler install (tests running several jobs in one process) is harmless.
            let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
        }
        let outcome = if spec.size() == 1 {
            self.train_peer::<B, _>(&folder, &datasets, devices[0].clone(), &Solo, &interrupted)?
        } else {
            collective::quiet_transport_logs();
            collective::start_coordinator(&spec)?;
            eprintln!(
                "data parallel on burn-collective: node {} of {}, {} device peer(s) here, {} in all",
                spec.node_rank,
                spec.nodes,
                spec.local,
                spec.size()
            );
            let watchdog = Watchdog::start(spec.local, spec.timeout);
            let (done, results) = std::sync::mpsc::channel();
            std::thread::scope(|s| {
                for (local, device) in devices.iter().enumerate() {
                    let (done, watchdog) = (done.clone(), watchdog.clone());
                    let (job, spec, folder, datasets, interrupted) =
                        (&self, &spec, &folder, &datasets, &interrupted);
                    s.spawn(move || {
                        let result = CollectivePeer::<B::InnerBackend>::register(
                            spec,
                            local,
                            device.clone(),
                            watchdog,
                        )
                        .and_then(|peer| {
                            let out = job.train_peer::<B, _>(
                                folder,
                                datasets,
                                device.clone(),
                                &peer,
                                interrupted,
                            );
                            if out.is_ok() {
                                peer.finish();
                            }
                            out
                        });
                        let _ = done.send((spec.rank(local), result));
                    });
                }
                drop(done);
                let mut outcome = Outcome::Finished;
                for (rank, result) in results {
                    match result {
                        Ok(o) if o == Outcome::Interrupted => outcome = o,
                        Ok(_) => {}
                        Err(e) => {
                            // The other peers may be blocked in a collective call: end the
                            // process instead of waiting for them.
                            eprintln!("error: peer {rank}: {e:#}");
                            std::process::exit(1);
                        }
                    }
                }
                outcome
            })
        };
        if outcome == Outcome::Interrupted {
            std::process::exit(130);
        }
        Ok(())
    }
}

impl TrainJob {
    /// One peer's whole run on `device`: every peer draws the same batches, embeds its share,
    /// and takes the same optimizer step on the all-reduced gradient; peer 0 alone reports,
    /// evaluates and writes metrics and checkpoints.
    fn train_peer<B, P>(
        &self,
        folder: &Folder,
        datasets: &[Dataset],
        device: B::Device,
        peers: &P,
        interrupted: &AtomicBool,
    ) -> Result<Outcome>
    where
        B: AutodiffBackend + KernelBackend,
        B::InnerBackend: KernelBackend,
        P: PeerGroup<B::InnerBackend>,
    {
        let run = &self.config;
        let t = &run.train;
        let run_dir = &run.checkpoint.dir;
        let first = peers.rank() == 0;
        let specs = datasets.iter().map(Dataset::spec).collect();
        let evaluator = match (&run.eval, first) {
            (Some(e), true) => Some(eval::Evaluator::load(e, &run.model.path)?),
            _ => None,
        };
        let resume_from = match &self.args.resume {
            None => None,
            Some(p) if p.is_empty() => Some(checkpoint::latest(run_dir)?),
            Some(p) => Some(PathBuf::from(p)),
        };
        // Seeding and random adapter initialisation one peer at a time: the backend's random
        // generator is shared by the peers of a process, and each must draw what a one-device
        // run draws.
        static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let mut model = {
            let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
            B::seed(&device, t.seed);
            build_model::<B>(run, folder, &device, resume_from.is_none())?
        };
        let adam = AdamWConfig::new()
            .with_beta_1(t.betas[0] as f32)
            .with_beta_2(t.betas[1] as f32)
            .with_epsilon(t.eps as f32)
            .with_weight_decay(t.weight_decay as f32);
        let mut optimizer = PrecisionAdamW::<QwenEncoder<B>, B>::new(&adam, self.precision);
        let (mut sampler, mut state) = match &resume_from {
            None => {
                if !checkpoint::list(run_dir)?.is_empty() {
                    bail!(
                        "{} already holds checkpoints: pass --resume to continue, or choose another checkpoint.dir",
                        run_dir.display()
                    );
                }
                let sampler = BatchSampler::new(specs, t.seed)?;
                let state = TrainState {
                    step: 0,
                    sampler: sampler.state().clone(),
                    fingerprint: run.fingerprint(),
                    run: run.clone(),
                    lora: run.lora.clone(),
                    tokens: 0,
                    finished: false,
                };
                (sampler, state)
            }
            Some(dir) => {
                let state = checkpoint::read_state(dir)?;
                if state.fingerprint != run.fingerprint() {
                    bail!(
                        "{} was written by a different run configuration; resume with the same run file",
                        dir.display()
                    );
                }
                model = model
                    .load_file(dir.join(MODEL_FILE), &Rec::new(), &device)
                    .with_context(|| format!("cannot load {}", dir.join(MODEL_FILE).display()))?;
                let record = Rec::new()
                    .load(dir.join(OPTIMIZER_FILE), &device)
                    .with_context(|| {
                        format!("cannot load {}", dir.join(OPTIMIZER_FILE).display())
                    })?;
                optimizer = optimizer.load_record(record);
                let sampler = BatchSampler::resume(specs, state.sampler.clone())?;
                eprintln!("resuming {} at step {}", dir.display(), state.step);
                (sampler, state)
            }
        };
        if state.finished || state.step >= t.steps {
            if first {
                eprintln!("the run is complete ({} steps)", state.step);
            }
            return Ok(Outcome::Finished);
        }
        if peers.size() > 1 {
            // Random adapter weights are drawn per peer: start every replica from peer 0's.
            model = copy_trainable_from_first_peer(model, peers)?;
        }
        // From here on the model computes at the run's precision (the f32 weights it was
        // built or resumed with become the masters under mixed precision).
        let mut model = optimizer.prepare(model);
        let trainable = count_trainable(&model);
        if first {
            eprintln!(
                "training {} of {} parameters{} on {:?} for {} steps ({})",
                trainable,
                folder.config.num_parameters(),
                if run.lora.is_some() { " (LoRA)" } else { "" },
                device,
                t.steps,
                match self.precision {
                    Precision::F32 => "f32",
                    Precision::MixedBf16 => "bf16 compute, f32 master weights and Adam moments",
                    Precision::PureBf16 => "pure bf16: weights and Adam moments in bf16",
                }
            );
        }

        // Peer 0 writes metrics; the others write none.
        let mut metrics = if first {
            std::fs::create_dir_all(run_dir)
                .with_context(|| format!("cannot create {}", run_dir.display()))?;
            let metrics_path = run_dir.join("metrics.jsonl");
            truncate_metrics(&metrics_path, state.step)?;
            MetricsLog(Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&metrics_path)
                    .with_context(|| format!("cannot open {}", metrics_path.display()))?,
            ))
        } else {
            MetricsLog(None)
        };
        let bar = if self.args.quiet || !first {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(t.steps as u64).with_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
                )
                .expect("static template"),
            )
        };
        bar.set_position(state.step as u64);
        let schedule = run.schedule();
        let save = |model: &QwenEncoder<B>,
                    optimizer: &PrecisionAdamW<QwenEncoder<B>, B>,
                    state: &TrainState|
         -> Result<PathBuf> {
            // Checkpoints hold the f32 masters under mixed precision, not the bf16 copy.
            let weights = optimizer.weights(model);
            save_checkpoint::<B, _>(
                run_dir,
                run.checkpoint.keep_last,
                &weights,
                optimizer,
                state,
            )
        };
        let gpu = self.args.backend != BackendKind::Cpu;
        let mut first_step_s: Option<f64> = None;
        let mut steady = (0usize, 0.0f64);
        let start = Instant::now();
        if let (Some(ev), 0) = (&evaluator, state.step) {
            // The model as it computes (bf16 under mixed precision): `weights()` would mix f32
            // masters with bf16 frozen weights under LoRA.
            let scores = ev.evaluate(&model.valid(), folder, &device)?;
            writeln!(
                metrics,
                "{}",
                serde_json::json!({"step": 0, "eval": scores})
            )?;
        }
        while state.step < t.steps {
            let step_start = Instant::now();
            // The first step of a process compiles the GPU kernels (and autotunes each new
            // shape): say so, or it looks hung. Later steps reuse them.
            let warmup = first_step_s.is_none();
            if warmup && gpu {
                bar.set_message(format!(
                    "compiling GPU kernels and autotuning (first step; cached in {})",
                    crate::kernel_cache::in_use()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| "cubecl's default folders".into())
                ));
                bar.tick();
            }
            let batch = sampler.next_batch();
            let BatchTexts { texts, loss } =
                batch_texts(datasets, &batch, t.seed, state.step as u64);
            let ids = folder.tokenize(&texts)?;
            let tokens: usize = ids.iter().map(Vec::len).sum();
            let tau = t.temperature;
            let cosent_tau = t.cosent_temperature.unwrap_or(tau);
            let out = peer_step(
                &model,
                &ids,
                folder.query_tokenizer.pad_id(),
                folder.pooling,
                t.grad_cache_chunk,
                peers,
                |e: Tensor<B, 2>| {
                    let [_, d] = e.dims();
                    match &loss {
                        LossInput::Retrieval { n, k } => {
                            let q = e.clone().narrow(0, 0, *n);
                            let docs = e.narrow(0, *n, n * (1 + k)).reshape([*n, 1 + k, d]);
                            retrieval_infonce(q, docs, tau)
                        }
                        LossInput::Pair { scores } => {
                            let n = scores.len();
                            let a = e.clone().narrow(0, 0, n);
                            let b = e.narrow(0, n, n);
                            cosent(a, b, scores, cosent_tau)
                        }
                        LossInput::Classification {
                            n,
                            k,
                            labels,
                            negative_labels,
                        } => {
                            let a = e.clone().narrow(0, 0, *n);
                            let p = e.clone().narrow(0, *n, *n);
                            let negs = e.narrow(0, 2 * n, n * k).reshape([*n, *k, d]);
                            classification_infonce(a, p, negs, labels, negative_labels, tau)
                        }
                    }
                },
            )
            .with_context(|| format!("step {}", state.step + 1))?;
            let mut grads = out.grads;
            let norm = if t.max_grad_norm > 0.0 {
                clip_grad_norm(&model, &mut grads, t.max_grad_norm)
            } else {
                grad_norm(&model, &grads)
            };
            let lr = schedule.lr_at(state.step);
            model = optimizer.step(lr, model, grads);
            state.step += 1;
            state.tokens += tokens as u64;
            state.sampler = sampler.state().clone();
            let seconds = step_start.elapsed().as_secs_f64();
            if warmup {
                first_step_s = Some(seconds);
            } else {
                steady = (steady.0 + 1, steady.1 + seconds);
            }
            let task = format!("{:?}", datasets[batch.dataset].kind).to_lowercase();
            if state.step % t.log_every == 0 || state.step == t.steps {
                let line = serde_json::json!({
                    "step": state.step,
                    "dataset": datasets[batch.dataset].section.name,
                    "task": task,
                    "loss": out.loss,
                    format!("loss/{task}"): out.loss,
                    "lr": lr,
                    "grad_norm": norm,
                    "tokens": tokens,
                    "tokens_per_s": tokens as f64 / seconds,
                    "step_s": seconds,
                    "phase": if warmup { "warmup" } else { "steady" },
                    "elapsed_s": start.elapsed().as_secs_f64(),
                    "peak_rss_bytes": peak_rss_bytes(),
                    "device_memory_bytes": B::memory_reserved_bytes(&device),
                });
                writeln!(metrics, "{line}")?;
            }
            if let Some(ev) = &evaluator {
                if state.step % ev.every == 0 || state.step == t.steps {
                    let scores = ev.evaluate(&model.valid(), folder, &device)?;
                    writeln!(
                        metrics,
                        "{}",
                        serde_json::json!({"step": state.step, "eval": scores})
                    )?;
                }
            }
            metrics.flush()?;
            bar.set_position(state.step as u64);
            bar.set_message(format!("loss {:.4} lr {lr:.2e}", out.loss));
            state.finished = state.step == t.steps;
            let stop = agree_to_stop::<B::InnerBackend, P>(
                interrupted.load(Ordering::SeqCst),
                peers,
                &device,
            )?;
            if stop && self.args.no_save {
                bail!(
                    "interrupted at step {} (--no-save: nothing written)",
                    state.step
                );
            }
            let due = state.finished || stop || state.step % run.checkpoint.every == 0;
            if due && first {
                // Curves first: a run stopped at a checkpoint has its picture.
                if let Err(e) = curves::write(run_dir) {
                    eprintln!("warning: curves.svg not drawn: {e:#}");
                }
            }
            if stop && !first {
                return Ok(Outcome::Interrupted);
            }
            if due && !self.args.no_save && first {
                let dir = save(&model, &optimizer, &state)?;
                if stop {
                    bar.abandon();
                    eprintln!(
                        "interrupted: saved {}; continue with --resume",
                        dir.display()
                    );
                    return Ok(Outcome::Interrupted);
                }
            }
        }
        bar.finish();
        metrics.sync()?;
        if !first {
            return Ok(Outcome::Finished);
        }
        let saved = if self.args.no_save {
            "nothing saved (--no-save)".to_string()
        } else {
            format!(
                "checkpoint {}",
                checkpoint::step_dir(run_dir, state.step).display()
            )
        };
        eprintln!(
            "done: {} steps, {} tokens in {:.1} s; {saved}",
            state.step,
            state.tokens,
            start.elapsed().as_secs_f64(),
        );
        if let (Some(first), (n, total)) = (first_step_s, steady) {
            if n > 0 {
                eprintln!(
                    "first step {first:.2} s (kernel compilation and autotuning on GPUs), then {:.3} s per step over {n} steps",
                    total / n as f64
                );
            }
        }
        Ok(Outcome::Finished)
    }
}

fn save_checkpoint<B: AutodiffBackend, O: Optimizer<QwenEncoder<B>, B>>(
    run_dir: &Path,
    keep_last: usize,
    model: &QwenEncoder<B>,
    optimizer: &O,
    state: &TrainState,
) -> Result<PathBuf> {
    checkpoint::save(run_dir, state, keep_last, |tmp| {
        model
            .clone()
            .save_file(tmp.join(MODEL_FILE), &Rec::new())
            .context("cannot save the model")?;
        Rec::new()
            .record(optimizer.to_record(), tmp.join(OPTIMIZER_FILE))
            .context("cannot save the optimizer state")?;
        Ok(())
    })
}

/// `metrics.jsonl` on peer 0; nothing on the other peers.
struct MetricsLog(Option<std::fs::File>);

impl MetricsLog {
    /// Flush to disk (the end of a run).
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.as_mut().map_or(Ok(()), |f| f.sync_all())
    }
}

impl Write for MetricsLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.as_mut().map_or(Ok(buf.len()), |f| f.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

/// Whether any peer was interrupted (Ctrl-C reaches one node, or one process first): every
/// peer stops at the same step, so node 0 saves a checkpoint all of them can resume from.
fn agree_to_stop<B: Backend, P: PeerGroup<B>>(
    interrupted: bool,
    peers: &P,
    device: &B::Device,
) -> Result<bool> {
    if peers.size() == 1 {
        return Ok(interrupted);
    }
    // One value per peer: burn-collective's ring needs a dimension of at least the node count.
    let flags = Tensor::<B, 1>::full([peers.size()], f32::from(u8::from(interrupted)), device);
    let any = peers
        .all_reduce_sum(flags)?
        .sum()
        .into_scalar()
        .elem::<f32>();
    Ok(any > 0.0)
}

/// Drop metric lines past `step` (a resumed run writes them again, identically).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    if kept.len() != text.lines().count() {
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(
            &tmp,
            kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(())
}

/// Parameters that receive gradients.
fn count_trainable<B: AutodiffBackend>(model: &QwenEncoder<B>) -> usize {
    struct Count(usize);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    model.visit(&mut c);
    c.0
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
