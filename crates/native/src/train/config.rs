//! `run.toml`: everything a training run needs, so a run is reproducible from its file.
//! Defaults are the paper's stage-1 values (Table 1) where it gives them, and the common
//! recipe (sentence-transformers / FlagEmbedding / gte) where it does not.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qzhou_core::data::jsonl::Malformed;
use qzhou_core::model::LoraConfig;
use qzhou_core::training::{Decay, LrSchedule};
use serde::{Deserialize, Serialize};

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub train: TrainSection,
    /// LoRA adapters; absent = full fine-tuning (what the paper most likely did).
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    pub checkpoint: CheckpointSection,
    /// Periodic held-out evaluation.
    #[serde(default)]
    pub eval: Option<EvalSection>,
    /// The training mix.
    #[serde(rename = "dataset")]
    pub datasets: Vec<DatasetSection>,
}

/// The starting model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model folder: `config.json`, `tokenizer.json` and (unless `init = "random"`) safetensors.
    pub path: PathBuf,
    /// `pretrained` (load the folder's weights) or `random` (HF-style initialisation).
    #[serde(default)]
    pub init: Init,
    /// Attention for training; QZhou trains its decoder bidirectionally.
    #[serde(default = "bidirectional")]
    pub attention: String,
    /// Pooling: `mean` (QZhou) or `last-token`.
    #[serde(default = "mean")]
    pub pooling: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    #[default]
    Pretrained,
    Random,
}

/// Optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Updates in this run (paper: 32k stage 1, 8k stage 2).
    pub steps: usize,
    /// Peak learning rate (paper: 3e-5 stage 1, 2e-5 stage 2).
    #[serde(default = "lr")]
    pub lr: f64,
    /// Linear warm-up steps (paper: 300).
    #[serde(default = "warmup")]
    pub warmup_steps: usize,
    /// Decay after warm-up (paper: NOT FOUND; linear as sentence-transformers).
    #[serde(default)]
    pub decay: Decay,
    /// Floor of the decay, fraction of the peak.
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// `adam` (paper) or `adamw`.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Decoupled weight decay (AdamW only).
    #[serde(default)]
    pub weight_decay: f64,
    /// Adam β₁, β₂.
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    /// Adam ε (PyTorch's default).
    #[serde(default = "eps")]
    pub eps: f64,
    /// Global gradient-norm clip; 0 turns it off.
    #[serde(default = "clip")]
    pub max_grad_norm: f64,
    /// InfoNCE temperature τ (paper: 0.02).
    #[serde(default = "tau")]
    pub temperature: f64,
    /// CoSENT temperature; default `temperature` (the paper lists one τ).
    #[serde(default)]
    pub cosent_temperature: Option<f64>,
    /// Seed of data order, negative choice and adapter initialisation.
    #[serde(default = "seed")]
    pub seed: u64,
    /// Query token limit (paper: 256).
    #[serde(default = "query_len")]
    pub query_max_len: usize,
    /// Passage token limit (paper: 1536).
    #[serde(default = "passage_len")]
    pub passage_max_len: usize,
    /// GradCache chunk: texts per forward pass. A batch with more texts is embedded in chunks.
    #[serde(default = "chunk")]
    pub grad_cache_chunk: usize,
    /// Start from the weights of a `qzhou train` checkpoint folder (stage 2 from stage 1);
    /// its adapters, if any, are merged first. Optimizer state starts fresh.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Log a metrics line every N steps.
    #[serde(default = "one")]
    pub log_every: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Adamw,
}

/// Where checkpoints go and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Run folder: `step-N/` checkpoints and `metrics.jsonl`.
    pub dir: PathBuf,
    /// Save every N steps (and always at the end and on Ctrl-C).
    #[serde(default = "every")]
    pub every: usize,
    /// Keep the newest N checkpoints (0 = all).
    #[serde(default = "keep")]
    pub keep_last: usize,
}

/// Periodic evaluation during training: a held-out retrieval JSONL (every query against the
/// pooled documents, all positives and negatives: accuracy@1 and MRR) and/or `qzhou eval` task
/// manifests (each task's MTEB main score), at step 0, every N steps and at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Held-out retrieval set (qzhou training JSONL of retrieval records).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `qzhou eval` task manifests (`tasks/*.toml`), scored with the model being trained.
    #[serde(default)]
    pub tasks: Vec<PathBuf>,
    /// Evaluate every N steps (and at step 0 and the end).
    #[serde(default = "every")]
    pub every: usize,
    /// Instruction for the held-out set's queries.
    #[serde(default)]
    pub instruction: Option<String>,
}

/// One dataset of the mix: a qzhou training JSONL (`qzhou_core::data`), one problem type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    pub name: String,
    pub path: PathBuf,
    /// Relative sampling weight.
    #[serde(default = "weight")]
    pub weight: f64,
    /// Samples per batch (paper: 256 InfoNCE, 768 CoSENT).
    pub batch_size: usize,
    /// Hard negatives per retrieval/classification sample (samples with fewer are skipped and
    /// counted; with more, a seeded draw per step).
    #[serde(default = "one")]
    pub negatives: usize,
    /// Instruction for this dataset (QZhou's per-task instructions, `qzhou_core::prompts`).
    #[serde(default)]
    pub instruction: Option<String>,
    /// Who gets the instruction: `query` (retrieval default) or `all` (pair/classification default).
    #[serde(default)]
    pub instruction_side: Option<String>,
    /// `fail` (default) or `skip` malformed lines.
    #[serde(default)]
    pub on_malformed: MalformedPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MalformedPolicy {
    #[default]
    Fail,
    Skip,
}

impl From<MalformedPolicy> for Malformed {
    fn from(p: MalformedPolicy) -> Self {
        match p {
            MalformedPolicy::Fail => Malformed::Fail,
            MalformedPolicy::Skip => Malformed::Skip,
        }
    }
}

fn bidirectional() -> String {
    "bidirectional".into()
}
fn mean() -> String {
    "mean".into()
}
fn lr() -> f64 {
    3e-5
}
fn warmup() -> usize {
    300
}
fn betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn eps() -> f64 {
    1e-8
}
fn clip() -> f64 {
    1.0
}
fn tau() -> f64 {
    0.02
}
fn seed() -> u64 {
    42
}
fn query_len() -> usize {
    256
}
fn passage_len() -> usize {
    1536
}
fn chunk() -> usize {
    64
}
fn one() -> usize {
    1
}
fn every() -> usize {
    1000
}
fn keep() -> usize {
    3
}
fn weight() -> f64 {
    1.0
}

impl RunConfig {
    /// Read and check `path`. Relative paths inside are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read run config {}", path.display()))?;
        let mut config: RunConfig = toml::from_str(&text)
            .with_context(|| format!("{}: invalid run config", path.display()))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = std::path::absolute(parent)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.model.path);
        rebase(&mut config.checkpoint.dir);
        if let Some(p) = config.train.init_from.as_mut() {
            rebase(p);
        }
        for d in &mut config.datasets {
            rebase(&mut d.path);
        }
        if let Some(e) = config.eval.as_mut() {
            e.path.iter_mut().chain(e.tasks.iter_mut()).for_each(rebase);
        }
        config
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        self.schedule().validate()?;
        let t = &self.train;
        if self.datasets.is_empty() {
            bail!("no [[dataset]] given");
        }
        for (name, v) in [
            ("temperature", t.temperature),
            (
                "cosent_temperature",
                t.cosent_temperature.unwrap_or(t.temperature),
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number, got {v}");
            }
        }
        if t.grad_cache_chunk == 0 || t.query_max_len == 0 || t.passage_max_len == 0 {
            bail!("grad_cache_chunk, query_max_len and passage_max_len must be at least 1");
        }
        if t.log_every == 0
            || self.checkpoint.every == 0
            || self.eval.as_ref().is_some_and(|e| e.every == 0)
        {
            bail!("log_every, checkpoint.every and eval.every must be at least 1");
        }
        if !(t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
            bail!(
                "max_grad_norm must be ≥ 0 (0 = off), got {}",
                t.max_grad_norm
            );
        }
        if t.optimizer == OptimizerKind::Adam && t.weight_decay != 0.0 {
            bail!("weight_decay needs optimizer = \"adamw\" (Adam has none)");
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.datasets {
            if !names.insert(&d.name) {
                bail!("dataset name `{}` appears twice", d.name);
            }
            if d.batch_size == 0 {
                bail!("dataset `{}`: batch_size must be at least 1", d.name);
            }
            if !(d.weight.is_finite() && d.weight > 0.0) {
                bail!("dataset `{}`: weight must be a positive number", d.name);
            }
            if let Some(side) = &d.instruction_side {
                if side != "query" && side != "all" {
                    bail!(
                        "dataset `{}`: instruction_side must be `query` or `all`, got `{side}`",
                        d.name
                    );
                }
            }
        }
        Ok(())
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak: self.train.lr,
            warmup_steps: self.train.warmup_steps,
            total_steps: self.train.steps,
            decay: self.train.decay,
            min_ratio: self.train.min_lr_ratio,
        }
    }

    /// What must not change between a run and its resumption (everything except where
    /// checkpoints go and how often), as a fingerprint string.
    pub fn fingerprint(&self) -> String {
        let mut c = self.clone();
        c.checkpoint.every = 0;
        c.checkpoint.keep_last = 0;
        c.train.log_every = 0;
        serde_json::to_string(&c).expect("config serialises")
    }
}
