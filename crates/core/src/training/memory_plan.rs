//! The memory a training run needs on its main device, worked out before any weight is loaded
//! (`qzhou train` prints it and refuses a run that cannot fit; `qzhou train --plan` prints it
//! and stops). Pure arithmetic over the model config and the run's knobs, no tensors.
//!
//! **Every size here is in bytes**; element counts say so in their name.
//!
//! What is counted, for one device:
//!
//! * **weights** — every parameter in the compute dtype (LoRA: the frozen base plus the
//!   adapters);
//! * **f32 master weights** — mixed precision only, trainable parameters only;
//! * **Adam moments** — two per trainable parameter, [`Precision::optimizer_bytes`];
//! * **gradients** — trainable parameters in the compute dtype. When GradCache runs a batch in
//!   more than one chunk, the running sum of the earlier chunks' gradients is held while a
//!   chunk is back-propagated (one more copy per extra device whose chunk waits to be summed);
//! * **activations** — the tensors Burn's autodiff graph keeps for the backward pass of one
//!   chunk of `chunk × max_len` tokens (every text of a chunk is padded to the longest), with
//!   and without Burn's balanced gradient checkpointing. The counts follow the graph of
//!   `model::{encoder, layer, attention, rope, mlp, lora}` and what each Burn 0.21 autodiff op
//!   saves (the list is in the docs of `layer_activation_bytes` below);
//! * **GradCache buffers** — the whole batch's embeddings, their gradient and the loss's score
//!   matrices (small);
//! * **working sets** — the backward's (the layer being differentiated: its tensors again,
//!   recomputed or as gradients — one layer's activations without checkpointing — and its
//!   parameters' gradients, counted in f32 because backends run bf16 element-wise ops and the
//!   RMSNorm backward through f32 temporaries) and the optimizer step's (Adam's temporaries
//!   for the largest parameter: three copies in the moments' dtype).
//!
//! The memory peaks in one of two phases:
//!
//! * **backward pass** of a chunk: weights + masters + moments + the gradient sum +
//!   `max(activations, the chunk's gradients)` + GradCache buffers + the backward working set.
//!   The backward frees a layer's activations as it produces that layer's gradients, so the
//!   two do not peak together;
//! * **optimizer step**: weights + masters + moments + one gradient copy + Adam's temporaries.
//!
//! The plan's total is the larger phase plus [`ALLOCATOR_MARGIN`] for allocator rounding and
//! fragmentation. `crates/native/tests/train_plan.rs` checks the activation counts against
//! the bytes Burn's graph really keeps and the total against real runs' peak memory.

use std::fmt;

use crate::config::{ModelType, QwenConfig};
use crate::error::{QzhouError, Result};
use crate::model::{LoraConfig, PROJECTION_NAMES};

use super::Precision;

/// Fraction added to the sum of the line items for allocator rounding, fragmentation and
/// runtime buffers (CUDA context, kernels, autotune): 5 %.
pub const ALLOCATOR_MARGIN: f64 = 0.05;

/// Bytes in one GiB (2³⁰), the unit of the printed table.
pub const GIB: f64 = (1u64 << 30) as f64;

/// Bytes of one f32 element (Burn's `RmsNorm` casts its input to f32; the backward's working
/// set is counted in f32).
const F32_BYTES: u64 = 4;

/// The knobs of a run that decide its memory.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The model's architecture.
    pub config: &'a QwenConfig,
    /// Compute dtype, master weights and optimizer moments.
    pub precision: Precision,
    /// LoRA adapters (`None`: full fine-tuning).
    pub lora: Option<&'a LoraConfig>,
    /// GradCache chunk: texts per forward pass (`grad_cache_chunk`).
    pub chunk_texts: usize,
    /// Tokens of the longest text (`max(query_max_len, passage_max_len)`); every text of a
    /// chunk is padded to the longest one in it.
    pub max_len: usize,
    /// Texts of the largest batch (queries + documents); more than `chunk_texts` means
    /// several chunks.
    pub batch_texts: usize,
    /// Devices training data-parallel (`--devices`); the main device sums their gradients.
    pub devices: usize,
    /// Burn's balanced gradient checkpointing (`--grad-checkpointing`).
    pub checkpointing: bool,
}

/// The plan: each line item in bytes, and the peak.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Parameters of the model (frozen base included; adapters included).
    pub parameters: u64,
    /// Parameters that get gradients and optimizer state.
    pub trainable: u64,
    /// The run's precision.
    pub precision: Precision,
    /// Whether LoRA adapters are trained (full fine-tuning otherwise).
    pub lora: bool,
    /// Texts per chunk (at most the batch).
    pub chunk_texts: usize,
    /// Tokens per text in the plan (the longest).
    pub max_len: usize,
    /// Chunks per batch.
    pub chunks: usize,
    /// Whether the run uses gradient checkpointing.
    pub checkpointing: bool,
    /// Every parameter in the compute dtype.
    pub weights: u64,
    /// f32 master copies of the trainable parameters (mixed precision; else 0).
    pub master_weights: u64,
    /// Adam's first and second moments.
    pub optimizer: u64,
    /// One copy of the trainable parameters' gradients (compute dtype).
    pub gradients: u64,
    /// Gradient copies held besides the chunk being back-propagated: the running sum over
    /// chunks (0 when a batch is one chunk on one device).
    pub gradient_sum_copies: u64,
    /// Activations kept for the backward of one chunk without gradient checkpointing.
    pub activations_plain: u64,
    /// Activations kept for the backward of one chunk with balanced gradient checkpointing.
    pub activations_checkpointed: u64,
    /// The batch's embeddings, their gradient and the loss's score matrices.
    pub grad_cache: u64,
    /// The backward's working set: one layer's activations without checkpointing and one
    /// layer's parameter gradients, in f32.
    pub backward_working_set: u64,
    /// Adam's temporaries for the largest trainable tensor (three copies, moments' dtype).
    pub optimizer_temporaries: u64,
}

impl MemoryPlan {
    /// Work out the plan. Errors on a zero chunk, length, batch or device count, and on a LoRA
    /// rank or target the model cannot take.
    pub fn new(input: &PlanInput<'_>) -> Result<Self> {
        let c = input.config;
        if input.chunk_texts == 0 || input.max_len == 0 || input.batch_texts == 0 {
            return Err(QzhouError::InvalidOption(
                "memory plan: chunk, text length and batch must be at least 1".into(),
            ));
        }
        if input.devices == 0 {
            return Err(QzhouError::InvalidOption(
                "memory plan: at least one device".into(),
            ));
        }
        let p = input.precision;
        let compute = p.compute_bytes() as u64;
        let base = c.num_parameters() as u64;
        let adapters = match input.lora {
            Some(l) => lora_parameters(c, l)?,
            None => 0,
        };
        let parameters = base + adapters;
        let trainable = if input.lora.is_some() { adapters } else { base };
        let chunk_texts = input.chunk_texts.min(input.batch_texts);
        let chunks = input.batch_texts.div_ceil(chunk_texts);
        let gradient_sum_copies = if chunks > 1 {
            input.devices.min(chunks - 1) as u64
        } else {
            0
        };
        let shape = ChunkShape {
            texts: chunk_texts as u64,
            len: input.max_len as u64,
        };
        let activations_plain = activation_bytes(c, p, input.lora, shape, false);
        let activations_checkpointed = activation_bytes(c, p, input.lora, shape, true);
        let hidden = c.hidden_size as u64;
        let batch = input.batch_texts as u64;
        // Embeddings and their gradient [batch, hidden], plus a few [batch, batch] score
        // matrices of the loss and its backward (f32).
        let grad_cache = 2 * batch * hidden * compute + 4 * batch * batch * F32_BYTES;
        // Adam's temporaries for one parameter: bias-corrected moments and the decayed copy,
        // in the moments' dtype.
        let moment_bytes = p.optimizer_bytes() as u64 / 2;
        let optimizer_temporaries = 3 * largest_trainable(c, input.lora) * moment_bytes;
        // The layer being differentiated: its tensors again (recomputed, or as gradients) and
        // its parameters' gradients, both in f32.
        let layer_trainable = trainable.saturating_sub(if input.lora.is_some() {
            0
        } else {
            (c.vocab_size * c.hidden_size + c.hidden_size) as u64
        }) / c.num_hidden_layers as u64;
        let backward_working_set =
            layer_activation_bytes(c, Precision::F32, input.lora, shape, false, 1)
                + layer_trainable * F32_BYTES;
        Ok(Self {
            parameters,
            trainable,
            precision: p,
            lora: input.lora.is_some(),
            chunk_texts,
            max_len: input.max_len,
            chunks,
            checkpointing: input.checkpointing,
            weights: parameters * compute,
            master_weights: trainable * p.master_bytes() as u64,
            optimizer: trainable * p.optimizer_bytes() as u64,
            gradients: trainable * p.grad_bytes() as u64,
            gradient_sum_copies,
            activations_plain,
            activations_checkpointed,
            grad_cache,
            backward_working_set,
            optimizer_temporaries,
        })
    }

    /// Activations of the planned run (with or without checkpointing, as it is set).
    pub fn activations(&self) -> u64 {
        if self.checkpointing {
            self.activations_checkpointed
        } else {
            self.activations_plain
        }
    }

    /// Weights, master copies and optimizer moments: held for the whole run.
    pub fn resident(&self) -> u64 {
        self.weights + self.master_weights + self.optimizer
    }

    /// The backward pass of a chunk: resident state, the gradient sum, the larger of the
    /// chunk's activations and its gradients, GradCache buffers and the backward working set.
    pub fn backward_peak(&self) -> u64 {
        self.resident()
            + self.gradient_sum_copies * self.gradients
            + self.activations().max(self.gradients)
            + self.grad_cache
            + self.backward_working_set
    }

    /// The optimizer step: resident state, one gradient copy and Adam's temporaries.
    pub fn optimizer_peak(&self) -> u64 {
        self.resident() + self.gradients + self.optimizer_temporaries
    }

    /// The peak without the allocator margin: the larger phase.
    pub fn sum(&self) -> u64 {
        self.backward_peak().max(self.optimizer_peak())
    }

    /// The memory the run needs: [`MemoryPlan::sum`] plus [`ALLOCATOR_MARGIN`].
    pub fn total(&self) -> u64 {
        (self.sum() as f64 * (1.0 + ALLOCATOR_MARGIN)).ceil() as u64
    }

    /// Whether the run fits in `capacity` bytes.
    pub fn fits(&self, capacity: u64) -> bool {
        self.total() <= capacity
    }

    /// The largest GradCache chunk (texts per forward pass, at most `input.chunk_texts`) with
    /// which the run of `input` fits in `capacity` bytes; `None` when not even one text does.
    pub fn largest_fitting_chunk(input: &PlanInput<'_>, capacity: u64) -> Result<Option<usize>> {
        for chunk in (1..=input.chunk_texts.min(input.batch_texts)).rev() {
            let plan = Self::new(&PlanInput {
                chunk_texts: chunk,
                ..input.clone()
            })?;
            if plan.fits(capacity) {
                return Ok(Some(chunk));
            }
        }
        Ok(None)
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtype = |bytes: usize| if bytes == 4 { "f32" } else { "bf16" };
        let compute = dtype(self.precision.compute_bytes());
        let moments = dtype(self.precision.optimizer_bytes() / 2);
        let g = |b: u64| format!("{:.2}", b as f64 / GIB);
        let row = |f: &mut fmt::Formatter<'_>, name: &str, b: u64, note: &str| {
            writeln!(f, "  {name:<44}{:>8}{note}", g(b))
        };
        writeln!(
            f,
            "memory plan: {} parameters, {} trainable ({}), {:?}; {} texts × {} tokens per chunk, {} chunk{} per batch",
            self.parameters,
            self.trainable,
            if self.lora { "LoRA" } else { "full fine-tune" },
            self.precision,
            self.chunk_texts,
            self.max_len,
            self.chunks,
            if self.chunks == 1 { "" } else { "s" },
        )?;
        writeln!(f, "  {:<44}{:>8}", "", "GiB")?;
        row(f, &format!("weights ({compute})"), self.weights, "")?;
        if self.master_weights > 0 {
            row(f, "f32 master weights", self.master_weights, "")?;
        }
        row(f, &format!("Adam moments ({moments})"), self.optimizer, "")?;
        row(
            f,
            &format!("gradients ({compute}), one copy"),
            self.gradients,
            "",
        )?;
        let mark = |on: bool| if on { "  <- this run" } else { "" };
        row(
            f,
            "activations, without gradient checkpointing",
            self.activations_plain,
            mark(!self.checkpointing),
        )?;
        row(
            f,
            "activations, with gradient checkpointing",
            self.activations_checkpointed,
            mark(self.checkpointing),
        )?;
        let sum = if self.gradient_sum_copies > 0 {
            format!(" + gradient sum × {}", self.gradient_sum_copies)
        } else {
            String::new()
        };
        row(
            f,
            "backward pass",
            self.backward_peak(),
            &format!(
                "  = state{sum} + max(activations, gradients) + GradCache {} + layer working set {}",
                g(self.grad_cache),
                g(self.backward_working_set)
            ),
        )?;
        row(
            f,
            "optimizer step",
            self.optimizer_peak(),
            &format!(
                "  = state + gradients + Adam temporaries {}",
                g(self.optimizer_temporaries)
            ),
        )?;
        row(
            f,
            &format!(
                "total (larger phase + {:.0} % allocator margin)",
                ALLOCATOR_MARGIN * 100.0
            ),
            self.total(),
            "",
        )
    }
}

/// One chunk: `texts` sequences of `len` tokens.
#[derive(Debug, Clone, Copy)]
struct ChunkShape {
    texts: u64,
    len: u64,
}

/// Parameters of the adapters `lora` adds to every layer: `rank · (in + out)` per targeted
/// projection.
fn lora_parameters(c: &QwenConfig, lora: &LoraConfig) -> Result<u64> {
    if lora.targets.is_empty() {
        return Err(QzhouError::InvalidOption(
            "LoRA targets are empty: name at least one projection".into(),
        ));
    }
    let r = lora.rank as u64;
    let mut per_layer = 0u64;
    for t in &lora.targets {
        let Some((d_in, d_out)) = projection_shape(c, t) else {
            return Err(QzhouError::InvalidOption(format!(
                "unknown LoRA target `{t}`; expected some of {}",
                PROJECTION_NAMES.join(", ")
            )));
        };
        if lora.rank == 0 || lora.rank > d_in.min(d_out) {
            return Err(QzhouError::InvalidOption(format!(
                "LoRA rank {} must be between 1 and min(in {d_in}, out {d_out}) of {t}",
                lora.rank
            )));
        }
        per_layer += r * (d_in + d_out) as u64;
    }
    Ok(per_layer * c.num_hidden_layers as u64)
}

/// `(in, out)` features of projection `name` (one of [`PROJECTION_NAMES`]).
fn projection_shape(c: &QwenConfig, name: &str) -> Option<(usize, usize)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    Some(match name {
        "q_proj" => (h, q),
        "k_proj" | "v_proj" => (h, kv),
        "o_proj" => (q, h),
        "gate_proj" | "up_proj" => (h, i),
        "down_proj" => (i, h),
        _ => return None,
    })
}

/// Elements of the largest trainable tensor: the embedding table or a projection (full
/// fine-tuning), the largest adapter matrix (LoRA).
fn largest_trainable(c: &QwenConfig, lora: Option<&LoraConfig>) -> u64 {
    match lora {
        None => {
            let (h, i) = (c.hidden_size as u64, c.intermediate_size as u64);
            let q = (c.num_attention_heads * c.head_dim) as u64;
            (c.vocab_size as u64 * h).max(h * i).max(h * q)
        }
        Some(l) => l
            .targets
            .iter()
            .filter_map(|t| projection_shape(c, t))
            .map(|(d_in, d_out)| (d_in.max(d_out) * l.rank) as u64)
            .max()
            .unwrap_or(0),
    }
}

/// Bytes the autodiff graph keeps for the backward pass of one chunk: every decoder layer
/// plus the final norm. See [`layer_activation_bytes`] for what is counted.
fn activation_bytes(
    c: &QwenConfig,
    p: Precision,
    lora: Option<&LoraConfig>,
    shape: ChunkShape,
    checkpointing: bool,
) -> u64 {
    let layers = c.num_hidden_layers as u64;
    let mut total = layer_activation_bytes(c, p, lora, shape, checkpointing, layers);
    let n = shape.texts * shape.len;
    let h = c.hidden_size as u64;
    let e = p.compute_bytes() as u64;
    let bf16 = e != F32_BYTES;
    // Final RMSNorm, as a layer's (see `layer_activation_bytes`).
    total += if checkpointing {
        // Its f32 cast in bf16 (in f32 Burn elides the cast and the input is recomputed from
        // the residual sum); and, once, the embedding output, which is a compute-bound op's
        // (gather) and feeds layer 0's norm and residual sum (full fine-tuning: under LoRA
        // the frozen embedding is untracked).
        let cast = if bf16 { n * h * F32_BYTES } else { 0 };
        let embedding = if lora.is_none() { n * h * e } else { 0 };
        cast + embedding
    } else {
        let f32_copy = if bf16 { n * h * F32_BYTES } else { 0 };
        let normalised = if lora.is_none() { n * h * e } else { 0 };
        n * h * e + f32_copy + normalised
    };
    // The padding mask `[texts, kv_heads, groups·len, len]` (one byte a value), laid out once
    // per chunk and read by every layer's masked fill.
    total += shape.texts * c.num_attention_heads as u64 * shape.len * shape.len;
    total
}

/// Bytes `layers` decoder layers keep for the backward pass of one chunk.
///
/// With `n = texts · len` tokens, `H` hidden, `Q = heads · head_dim`, `K = kv_heads ·
/// head_dim`, `I` intermediate, `P = texts · heads · len²` attention scores and `r` the LoRA rank, each layer keeps (in
/// elements of the compute dtype unless marked f32):
///
/// Without checkpointing (every Burn op keeps what its backward reads):
/// * input RMSNorm: its input `n·H` (the division), `x / rms` `n·H` (the γ product; full
///   fine-tuning only: a frozen γ needs no gradient) and its output `n·H` (the q/k/v
///   projections, or their adapters); with bf16 compute also the f32 cast `n·H` (f32);
/// * Qwen3 q/k norms: their inputs `n·(Q + K)` and, full fine-tuning, their normalised values
///   `n·(Q + K)` (+ the f32 casts `n·(Q + K)` in bf16);
/// * RoPE'd queries `n·Q` (stacked per key/value head), keys and values `2·n·K` (the two
///   attention matmuls; grouped-query attention does not repeat them);
/// * attention: `3·P` — the max-shifted scores (kept by `exp`), `exp` (kept by the
///   division) and the probabilities (kept by the matmul with V);
/// * the attention output `n·Q` (o_proj's input);
/// * post-attention RMSNorm: as the input norm;
/// * SwiGLU: gate `n·I` (sigmoid and its product), sigmoid `n·I`, `silu(gate)` `n·I`, up
///   `n·I` and their product `n·I` (down_proj's input): `5·n·I`;
/// * LoRA: `n·r` per adapter (`x·A`, kept by the matmul with `B`); a projection input is only
///   kept when its projection is adapted (a frozen weight needs no input).
///
/// A chunk is assumed padded (attention masked); an unpadded one skips the mask and keeps a
/// little less.
///
/// With Burn's balanced checkpointing, memory-bound ops (elementwise, reshapes) are
/// recomputed from the outputs of the compute-bound ops (matmuls, reductions, casts) that
/// feed them, which are kept instead:
/// * each RMSNorm in bf16: its f32 cast `n·H` (f32; a cast is compute-bound). In f32 Burn
///   elides the cast, and a norm keeps nothing: its input, a residual sum, is recomputed
///   (measured: `crates/native/tests/train_plan.rs`);
/// * q, k, v projections `n·(Q + 2K)`, the two RoPE products of q and k `2·n·(Q + K)`
///   (a product with the constant cos/sin tables counts as compute-bound), `QKᵀ` and the
///   masked scores `2·P`, the attention context `n·Q`, o_proj `n·H`, gate and up `2·n·I`,
///   down `n·H`; with bf16 compute the Qwen3 q/k norms add their f32 casts `n·(Q + K)`.
/// * LoRA: a product with a frozen RMSNorm γ becomes compute-bound, so the norm outputs
///   that adapters read are kept (`n·H` each); every adapted projection keeps its frozen
///   output and `x·A·B` (`2·n·out`) and `x·A` (`n·r`) instead of its single output.
///
/// LoRA's first layer reads an untracked input (the frozen embedding); the count ignores
/// that and so over-counts by about one `n·H`.
fn layer_activation_bytes(
    c: &QwenConfig,
    p: Precision,
    lora: Option<&LoraConfig>,
    shape: ChunkShape,
    checkpointing: bool,
    layers: u64,
) -> u64 {
    let n = shape.texts * shape.len;
    let e = p.compute_bytes() as u64;
    let h = c.hidden_size as u64;
    let i = c.intermediate_size as u64;
    let q = (c.num_attention_heads * c.head_dim) as u64;
    let k = (c.num_key_value_heads * c.head_dim) as u64;
    let scores = shape.texts * c.num_attention_heads as u64 * shape.len * shape.len;
    let qk_norm = c.model_type == ModelType::Qwen3 && c.qk_norm;
    let bf16 = e != F32_BYTES;
    let adapted = |name: &str| lora.is_none_or(|l| l.targets.iter().any(|t| t == name));
    let rank = lora.map_or(0, |l| l.rank as u64);
    let full = lora.is_none();
    // (elements in the compute dtype, elements in f32) per layer.
    let (mut el, mut f32s) = (0u64, 0u64);
    if !checkpointing {
        // The two RMSNorms: input, x / rms (full fine-tuning), output when read by an adapted
        // (or trained) projection; f32 casts in bf16.
        for readers in [
            ["q_proj", "k_proj", "v_proj"].as_slice(),
            ["gate_proj", "up_proj"].as_slice(),
        ] {
            el += n * h;
            if full {
                el += n * h;
            }
            if readers.iter().any(|r| adapted(r)) {
                el += n * h;
            }
            if bf16 {
                f32s += n * h;
            }
        }
        if qk_norm {
            el += n * (q + k) * if full { 2 } else { 1 };
            if bf16 {
                f32s += n * (q + k);
            }
        }
        el += n * q + 2 * n * k + 3 * scores;
        if adapted("o_proj") {
            el += n * q;
        }
        el += 4 * n * i;
        if adapted("down_proj") {
            el += n * i;
        }
    } else {
        if bf16 {
            f32s += 2 * n * h;
            if qk_norm {
                f32s += n * (q + k);
            }
        }
        // RoPE products of q and k, QKᵀ and the masked scores, the attention context.
        el += 2 * n * (q + k) + 2 * scores + n * q;
        if !full {
            // Norm outputs read by adapters (compute-bound under a frozen γ).
            if ["q_proj", "k_proj", "v_proj"].iter().any(|r| adapted(r)) {
                el += n * h;
            }
            if ["gate_proj", "up_proj"].iter().any(|r| adapted(r)) {
                el += n * h;
            }
        }
        for name in PROJECTION_NAMES {
            let (_, out) = projection_shape(c, name).expect("known projection");
            let out = out as u64;
            el += if full || !adapted(name) {
                n * out
            } else {
                2 * n * out
            };
        }
    }
    for name in PROJECTION_NAMES {
        if lora.is_some() && adapted(name) {
            el += n * rank;
        }
    }
    layers * (el * e + f32s * F32_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2 kv heads, intermediate 4864).
    const QWEN25_05B: &str = r#"{"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,
        "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,
        "vocab_size":151936,"rms_norm_eps":1e-06,"rope_theta":1000000.0}"#;
    /// Qwen2.5-7B-Instruct / QZhou-Embedding (untied: no LM head in the encoder).
    const QWEN25_7B: &str = r#"{"model_type":"qwen2","hidden_size":3584,"intermediate_size":18944,
        "num_hidden_layers":28,"num_attention_heads":28,"num_key_value_heads":4,
        "vocab_size":152064,"rms_norm_eps":1e-06,"rope_theta":1000000.0}"#;

    fn config(json: &str) -> QwenConfig {
        QwenConfig::from_json(json.as_bytes()).unwrap()
    }

    fn input(c: &QwenConfig, precision: Precision) -> PlanInput<'_> {
        PlanInput {
            config: c,
            precision,
            lora: None,
            chunk_texts: 8,
            max_len: 512,
            batch_texts: 8,
            devices: 1,
            checkpointing: false,
        }
    }

    fn all_targets(rank: usize) -> LoraConfig {
        LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            targets: PROJECTION_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn qwen25_half_b_state_is_bytes_per_parameter_times_494m() {
        let c = config(QWEN25_05B);
        // HF's count for Qwen2.5-0.5B, embeddings included (tied LM head not separate).
        assert_eq!(c.num_parameters(), 494_032_768);
        let n = 494_032_768u64;
        let mixed = MemoryPlan::new(&input(&c, Precision::MixedBf16)).unwrap();
        assert_eq!(mixed.weights, 2 * n);
        assert_eq!(mixed.master_weights, 4 * n);
        assert_eq!(mixed.gradients, 2 * n);
        assert_eq!(mixed.optimizer, 8 * n);
        let f32 = MemoryPlan::new(&input(&c, Precision::F32)).unwrap();
        assert_eq!(
            (
                f32.weights,
                f32.master_weights,
                f32.gradients,
                f32.optimizer
            ),
            (4 * n, 0, 4 * n, 8 * n)
        );
        let pure = MemoryPlan::new(&input(&c, Precision::PureBf16)).unwrap();
        assert_eq!(
            (
                pure.weights,
                pure.master_weights,
                pure.gradients,
                pure.optimizer
            ),
            (2 * n, 0, 2 * n, 4 * n)
        );
    }

    #[test]
    fn activations_follow_the_counted_tensors() {
        let c = config(QWEN25_05B);
        let plan = MemoryPlan::new(&input(&c, Precision::F32)).unwrap();
        // n = 4096 tokens, H 896, Q 896, K 128 (grouped-query attention: keys and values are
        // not repeated), I 4864, P = 8·14·512² scores; the padding mask is P bytes, once.
        let (n, h, q, k, i) = (4096u64, 896u64, 896u64, 128u64, 4864u64);
        let p = 8 * 14 * 512 * 512u64;
        // Two norms (3·n·H each), RoPE'd queries, keys and values, three score tensors,
        // o_proj's input, SwiGLU.
        let layer = 6 * n * h + n * q + 2 * n * k + 3 * p + n * q + 5 * n * i;
        assert_eq!(plan.activations_plain, 4 * (24 * layer + 2 * n * h) + p);
        // RoPE products, QKᵀ and masked scores, context, the 7 projection outputs; the
        // embedding output once (f32 norms keep nothing).
        let ckpt_layer = 2 * n * (q + k) + 2 * p + n * q + n * (q + 2 * k + h) + 2 * n * i + n * h;
        assert_eq!(
            plan.activations_checkpointed,
            4 * (24 * ckpt_layer + n * h) + p
        );
        // Checkpointing keeps less; a bf16 run keeps about half (plus its f32 norm casts).
        assert!(plan.activations_checkpointed < plan.activations_plain);
        let bf16 = MemoryPlan::new(&input(&c, Precision::MixedBf16)).unwrap();
        assert!(bf16.activations_plain < plan.activations_plain * 6 / 10);
        assert!(bf16.activations_plain > plan.activations_plain / 2);
    }

    #[test]
    fn lora_trains_few_parameters_and_keeps_only_adapted_inputs() {
        let c = config(QWEN25_05B);
        let lora = all_targets(16);
        let plan = MemoryPlan::new(&PlanInput {
            lora: Some(&lora),
            ..input(&c, Precision::F32)
        })
        .unwrap();
        // r·(in + out) per projection: q 896+896, k,v 896+128, o 896+896, gate,up 896+4864,
        // down 4864+896.
        let per_layer = 16 * (1792 + 2 * 1024 + 1792 + 3 * 5760);
        assert_eq!(plan.trainable, 24 * per_layer);
        assert_eq!(plan.parameters, 494_032_768 + 24 * per_layer);
        assert_eq!(plan.optimizer, 8 * plan.trainable);
        assert_eq!(plan.weights, 4 * plan.parameters);
        // Only q and v adapted: o_proj's and down_proj's inputs are not kept.
        let qv = LoraConfig {
            targets: vec!["q_proj".into(), "v_proj".into()],
            ..lora.clone()
        };
        let fewer = MemoryPlan::new(&PlanInput {
            lora: Some(&qv),
            ..input(&c, Precision::F32)
        })
        .unwrap();
        assert!(fewer.activations_plain < plan.activations_plain);
        let bad = LoraConfig {
            targets: vec!["qq_proj".into()],
            ..lora
        };
        let err = MemoryPlan::new(&PlanInput {
            lora: Some(&bad),
            ..input(&c, Precision::F32)
        })
        .unwrap_err();
        assert!(err.to_string().contains("qq_proj"), "{err}");
    }

    #[test]
    fn several_chunks_hold_a_gradient_sum_and_bad_input_is_an_error() {
        let c = config(QWEN25_05B);
        let one = MemoryPlan::new(&input(&c, Precision::F32)).unwrap();
        assert_eq!((one.chunks, one.gradient_sum_copies), (1, 0));
        let many = MemoryPlan::new(&PlanInput {
            batch_texts: 768,
            ..input(&c, Precision::F32)
        })
        .unwrap();
        assert_eq!((many.chunks, many.gradient_sum_copies), (96, 1));
        assert_eq!(
            many.backward_peak() - one.backward_peak(),
            one.gradients + many.grad_cache - one.grad_cache
        );
        let bad = PlanInput {
            chunk_texts: 0,
            ..input(&c, Precision::F32)
        };
        assert!(MemoryPlan::new(&bad).is_err());
    }

    /// The README's table for Qwen2.5-7B on one 141 GB H200 (`cargo test -p qzhou-core --lib
    /// seven_b -- --nocapture` prints it): GradCache chunks of 8 texts, batches of 768 texts
    /// (the paper's 256 queries with a positive and a negative).
    #[test]
    fn seven_b_on_one_h200() {
        let c = config(QWEN25_7B);
        assert_eq!(c.num_parameters(), 7_070_619_136);
        let h200 = 141_000_000_000u64;
        let lora = all_targets(16);
        let gb = |b: u64| format!("{:.1}", b as f64 / 1e9);
        println!(
            "| run | chunk | trainable | weights | f32 masters | gradients | Adam | activations ckpt off / on | total ckpt off | total ckpt on | largest chunk that fits, off / on |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        let mut rows = Vec::new();
        for (name, precision, lora) in [
            ("full, mixed bf16", Precision::MixedBf16, None),
            ("full, f32", Precision::F32, None),
            ("full, pure bf16", Precision::PureBf16, None),
            ("LoRA r16 ×7, mixed bf16", Precision::MixedBf16, Some(&lora)),
        ] {
            for len in [512, 1536] {
                let input = |checkpointing| PlanInput {
                    config: &c,
                    precision,
                    lora,
                    chunk_texts: 8,
                    max_len: len,
                    batch_texts: 768,
                    devices: 1,
                    checkpointing,
                };
                let (off, on) = (
                    MemoryPlan::new(&input(false)).unwrap(),
                    MemoryPlan::new(&input(true)).unwrap(),
                );
                let fits = |on| {
                    MemoryPlan::largest_fitting_chunk(
                        &PlanInput {
                            chunk_texts: 768,
                            ..input(on)
                        },
                        h200,
                    )
                    .unwrap()
                    .map_or("none".to_string(), |c| c.to_string())
                };
                let total = |p: &MemoryPlan| {
                    format!("{}{}", gb(p.total()), if p.fits(h200) { "" } else { " ✗" })
                };
                println!(
                    "| {name} | 8 × {len} | {:.2} B | {} | {} | {} | {} | {} / {} | {} | {} | {} / {} |",
                    off.trainable as f64 / 1e9,
                    gb(off.weights),
                    gb(off.master_weights),
                    gb(off.gradients * (1 + off.gradient_sum_copies)),
                    gb(off.optimizer),
                    gb(off.activations_plain),
                    gb(off.activations_checkpointed),
                    total(&off),
                    total(&on),
                    fits(false),
                    fits(true),
                );
                if len == 512 && lora.is_none() && precision == Precision::MixedBf16 {
                    println!("\n{on}");
                }
                rows.push((name, len, off, on));
            }
        }
        // LoRA at 512 tokens fits either way; full fine-tuning with f32 Adam needs 16 bytes per
        // parameter (113 GB) before any activation and so never fits at chunk 8;
        // checkpointing never costs memory in full fine-tuning.
        for (name, len, off, on) in &rows {
            if name.starts_with("LoRA") && *len == 512 {
                assert!(off.fits(h200) && on.fits(h200));
            }
            if name.starts_with("full") {
                assert!(on.total() <= off.total());
                if !name.contains("pure") {
                    assert!(!on.fits(h200) && off.resident() + off.gradients > 113_000_000_000);
                }
            }
        }
    }
}
