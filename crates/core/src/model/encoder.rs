//! The whole Qwen2/Qwen3 stack used as a text encoder: token embedding, decoder layers,
//! final norm. One definition for every backend (CPU, wgpu/WebGPU, CUDA) and for training.

use burn::module::Param;
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::ElementConversion;

use super::attention::SelfAttention;
use super::embedding::TokenEmbedding;
use super::layer::DecoderLayer;
use super::linear::{Projection, QuantizedLinear, SplitLinear};
use super::mlp::SwiGluMlp;
use super::rope::rope_tables;
use crate::config::{AttentionMode, QwenConfig};
use crate::error::{QzhouError, Result, ShapeMismatch};
use crate::kernels::{KernelBackend, QuantizedMatrix, QuantizedRows};
use crate::quantization::{PackedBlocks, Quantization};
use crate::weights::{StoredDtype, TensorSource};

/// Counts of how a loaded encoder's weights are stored on the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageSummary {
    /// Projections kept block-quantised (run by the fused kernel).
    pub quantized_projections: usize,
    /// Projections stored as dense f32.
    pub dense_projections: usize,
    /// Projections spread over more than one buffer.
    pub split_projections: usize,
    /// Device buffers holding projection weights.
    pub projection_buffers: usize,
    /// Device buffers holding the embedding table.
    pub embedding_buffers: usize,
    /// Bits per stored value of the embedding table: 32 (f32), or 8 / 4 when it is kept
    /// block-quantised and rows are dequantised as they are looked up.
    pub embedding_bits: usize,
    /// How the embedding table is held on the device: `f32`, `q8`, `q4` or `q4k`.
    pub embedding_format: &'static str,
    /// Device bytes of the embedding table (values plus block parameters).
    pub embedding_bytes: usize,
}

/// How weights are laid out on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceStorage {
    /// Largest tensor one device buffer may hold (bytes); bigger weights are split by rows.
    /// `None`: no limit.
    pub max_buffer_bytes: Option<usize>,
    /// Keep q8/q4 projection weights block-quantised on the device (needs a fused kernel,
    /// [`KernelBackend::has_fused_quantized_matmul`]); otherwise they are dequantised to f32.
    pub keep_quantized: bool,
    /// Keep a q8/q4 token-embedding table block-quantised on the device (needs
    /// [`KernelBackend::has_quantized_gather`]); otherwise it is dequantised to f32.
    pub quantized_embedding: bool,
}

impl DeviceStorage {
    /// What backend `B` supports on `device`: its buffer limit, and quantised weights when it
    /// has the fused kernel.
    pub fn for_backend<B: KernelBackend>(device: &B::Device) -> Self {
        Self {
            max_buffer_bytes: B::max_buffer_bytes(device),
            keep_quantized: B::has_fused_quantized_matmul(),
            quantized_embedding: B::has_quantized_gather(),
        }
    }

    /// Rows per device buffer for rows of `row_bytes` bytes (at least 1).
    fn rows_per_buffer(&self, rows: usize, row_bytes: usize) -> usize {
        match self.max_buffer_bytes {
            Some(limit) => (limit / row_bytes.max(1)).clamp(1, rows.max(1)),
            None => rows.max(1),
        }
    }
}

/// Qwen decoder run as an encoder: returns the final hidden state of every token.
#[derive(Module, Debug)]
pub struct QwenEncoder<B: Backend> {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: TokenEmbedding<B>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Query heads (for the mask shape).
    pub num_heads: usize,
    /// `true`: causal mask; `false`: bidirectional (padding keys only).
    pub causal: bool,
}

impl<B: Backend> QwenEncoder<B> {
    /// The attention mode in force.
    pub fn attention_mode(&self) -> AttentionMode {
        if self.causal {
            AttentionMode::Causal
        } else {
            AttentionMode::Bidirectional
        }
    }

    /// Switch between bidirectional and causal attention (weights unchanged).
    pub fn with_attention(mut self, mode: AttentionMode) -> Self {
        self.causal = mode == AttentionMode::Causal;
        self
    }

    /// Hidden size = embedding dimension.
    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.hidden_size()
    }

    /// Every attention and MLP projection, layer by layer (q, k, v, o, gate, up, down).
    pub fn projections(&self) -> Vec<&Projection<B>> {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    &l.self_attn.q_proj,
                    &l.self_attn.k_proj,
                    &l.self_attn.v_proj,
                    &l.self_attn.o_proj,
                    &l.mlp.gate_proj,
                    &l.mlp.up_proj,
                    &l.mlp.down_proj,
                ]
            })
            .collect()
    }

    /// Rebuild every projection through `f(name, projection)` (`name` from
    /// [`super::lora::PROJECTION_NAMES`]), layer by layer.
    pub fn map_projections(
        mut self,
        mut f: impl FnMut(&'static str, Projection<B>) -> Result<Projection<B>>,
    ) -> Result<Self> {
        let layers = std::mem::take(&mut self.layers);
        for mut l in layers {
            let a = l.self_attn;
            l.self_attn = SelfAttention {
                q_proj: f("q_proj", a.q_proj)?,
                k_proj: f("k_proj", a.k_proj)?,
                v_proj: f("v_proj", a.v_proj)?,
                o_proj: f("o_proj", a.o_proj)?,
                ..a
            };
            let m = l.mlp;
            l.mlp = SwiGluMlp {
                gate_proj: f("gate_proj", m.gate_proj)?,
                up_proj: f("up_proj", m.up_proj)?,
                down_proj: f("down_proj", m.down_proj)?,
            };
            self.layers.push(l);
        }
        Ok(self)
    }

    /// How the weights sit on the device (for `info()` and tests).
    pub fn storage_summary(&self) -> StorageSummary {
        let mut s = StorageSummary {
            embedding_buffers: self.embed_tokens.buffers(),
            embedding_bits: self.embed_tokens.bits(),
            embedding_format: self.embed_tokens.format(),
            embedding_bytes: self.embed_tokens.device_bytes(),
            ..StorageSummary::default()
        };
        for p in self.projections() {
            match p {
                Projection::Dense(_) | Projection::Lora(_) => s.dense_projections += 1,
                Projection::Split(x) => {
                    s.dense_projections += 1;
                    s.split_projections += 1;
                    s.projection_buffers += x.parts.len() - 1;
                }
                Projection::Quantized(q) => {
                    s.quantized_projections += 1;
                    if q.parts.len() > 1 {
                        s.split_projections += 1;
                    }
                    s.projection_buffers += q.parts.len() - 1;
                }
            }
            s.projection_buffers += 1;
        }
        s
    }
}

impl<B: KernelBackend> QwenEncoder<B> {
    /// Boolean mask `[batch, kv_heads, groups·seq, seq]` (`groups = heads / kv_heads`), `true`
    /// where a query must not see a key: padding keys always, future keys too when causal;
    /// `None` when it would be all `false` (bidirectional, no padding: one text, or texts of
    /// one length) and [`KernelBackend::cheap_host_reads`] lets us look, so attention skips
    /// masking — on the CPU a masked attention over 512 tokens takes 1.8× the unmasked one.
    /// Query row `g·seq + i` is position `i` of the `g`-th query head sharing a key/value head
    /// (the grouped layout [`super::SelfAttention`] runs attention in). Built explicitly and laid out once per forward pass (as candle's qwen2 does), so
    /// every backend computes the same thing and no layer re-expands it.
    pub fn attention_mask(&self, attention_mask: Tensor<B, 2, Int>) -> Option<Tensor<B, 4, Bool>> {
        if !self.causal
            && B::cheap_host_reads()
            && attention_mask.clone().min().into_scalar().elem::<i64>() != 0
        {
            return None;
        }
        let [b, s] = attention_mask.dims();
        let device = attention_mask.device();
        let padding = attention_mask
            .equal_elem(0)
            .reshape([b, 1, s])
            .expand([b, s, s]);
        let mask = if self.causal {
            let future = Tensor::<B, 2, Bool>::tril_mask([s, s], 0, &device)
                .reshape([1, s, s])
                .expand([b, s, s]);
            padding.bool_or(future)
        } else {
            padding
        };
        Some(self.grouped_mask(mask))
    }

    /// The mask for texts packed side by side in one row (`lengths[i]` tokens each, `Σ lengths`
    /// = `seq`, each with its own positions from 0): `[1, kv_heads, groups·seq, seq]` in the
    /// layout of [`Self::attention_mask`], `true` where a query and a key belong to different
    /// texts (and, when causal, where the key comes later). Running the row through the layers
    /// with this mask and RoPE tables restarting at every text gives each text's hidden states
    /// as if it ran alone, while every projection sees all texts' tokens in one matrix product.
    pub fn packed_attention_mask(
        &self,
        lengths: &[usize],
        device: &B::Device,
    ) -> Tensor<B, 4, Bool> {
        let text: Vec<usize> = lengths
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i, n))
            .collect();
        let s = text.len();
        let blocked: Vec<bool> = (0..s * s)
            .map(|k| {
                let (query, key) = (k / s, k % s);
                text[query] != text[key] || (self.causal && key > query)
            })
            .collect();
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(blocked, [s, s]), device);
        self.grouped_mask(mask.reshape([1, s, s]))
    }

    /// `[batch, seq, seq]` (query, key) → `[batch, kv_heads, groups·seq, seq]`: the same mask for
    /// every query head sharing a key/value head.
    fn grouped_mask(&self, mask: Tensor<B, 3, Bool>) -> Tensor<B, 4, Bool> {
        let [b, s, _] = mask.dims();
        let (kv, groups) = match self.layers.first() {
            Some(l) => (
                l.self_attn.num_kv_heads,
                l.self_attn.num_heads / l.self_attn.num_kv_heads,
            ),
            None => (1, self.num_heads),
        };
        mask.reshape([b, 1, 1, s, s])
            .expand([b, kv, groups, s, s])
            .reshape([b, kv, groups * s, s])
    }

    /// `input_ids`: `[batch, seq]` token ids, right-padded; `attention_mask`: `[batch, seq]`,
    /// 1 for real tokens and 0 for padding. Returns the final hidden states `[batch, seq, hidden]`
    /// in the dtype of the weights.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [_, s] = input_ids.dims();
        let device = input_ids.device();
        let mask = self.attention_mask(attention_mask);
        let mut x = self.embed_tokens.forward(input_ids);
        // Activations take the weights' dtype (bf16 weights in mixed-precision training on an
        // f32 backend); the RoPE tables, computed in f32 as transformers does, follow it.
        let dtype = x.dtype();
        let (cos, sin) = rope_tables::<B>(self.rope_theta, self.head_dim, s, &device);
        let (cos, sin) = (cos.cast(dtype), sin.cast(dtype));
        for layer in &self.layers {
            x = layer.forward(x, &cos, &sin, mask.clone());
        }
        self.norm.forward(x)
    }

    /// Build the encoder from a checkpoint, checking every tensor name, shape and dtype first
    /// and reporting all problems in one [`QzhouError::WeightMismatch`]. Accepts names with or
    /// without the `model.` prefix; ignores `lm_head.*` and `rotary_emb.inv_freq` buffers.
    ///
    /// `storage` says how weights sit on the device ([`DeviceStorage::for_backend`] is what
    /// the backend supports).
    pub fn load(
        config: &QwenConfig,
        attention: AttentionMode,
        checkpoint: &dyn TensorSource,
        device: &B::Device,
        storage: &DeviceStorage,
    ) -> Result<Self> {
        let plan = WeightPlan::new(config, checkpoint)?;
        let loader = Loader {
            checkpoint,
            plan: &plan,
            device,
            storage,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("layers.{i}.");
            let a = format!("{p}self_attn.");
            let norm = |n: &str| loader.rms_norm(n, config.rms_norm_eps);
            layers.push(DecoderLayer {
                input_layernorm: norm(&format!("{p}input_layernorm"))?,
                self_attn: SelfAttention {
                    q_proj: loader.linear(&format!("{a}q_proj"), config.attention_bias)?,
                    k_proj: loader.linear(&format!("{a}k_proj"), config.attention_bias)?,
                    v_proj: loader.linear(&format!("{a}v_proj"), config.attention_bias)?,
                    o_proj: loader.linear(&format!("{a}o_proj"), false)?,
                    q_norm: if config.qk_norm {
                        Some(norm(&format!("{a}q_norm"))?)
                    } else {
                        None
                    },
                    k_norm: if config.qk_norm {
                        Some(norm(&format!("{a}k_norm"))?)
                    } else {
                        None
                    },
                    num_heads: config.num_attention_heads,
                    num_kv_heads: config.num_key_value_heads,
                    head_dim: config.head_dim,
                },
                post_attention_layernorm: norm(&format!("{p}post_attention_layernorm"))?,
                mlp: SwiGluMlp {
                    gate_proj: loader.linear(&format!("{p}mlp.gate_proj"), false)?,
                    up_proj: loader.linear(&format!("{p}mlp.up_proj"), false)?,
                    down_proj: loader.linear(&format!("{p}mlp.down_proj"), false)?,
                },
            });
        }
        Ok(Self {
            embed_tokens: loader.embedding("embed_tokens.weight")?,
            layers,
            norm: loader.rms_norm("norm", config.rms_norm_eps)?,
            rope_theta: config.rope_theta,
            head_dim: config.head_dim,
            num_heads: config.num_attention_heads,
            causal: attention == AttentionMode::Causal,
        })
    }
}

/// Check that `weights` hold exactly the tensors `config` needs (names, shapes, dtypes),
/// reporting every problem at once, without reading any tensor data.
pub fn check_weights(config: &QwenConfig, weights: &dyn TensorSource) -> Result<()> {
    WeightPlan::new(config, weights).map(|_| ())
}

/// Expected tensor names (without prefix) and their HF-layout shapes for a config.
pub fn expected_tensors(config: &QwenConfig) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let ff = config.intermediate_size;
    let mut v = vec![(
        "embed_tokens.weight".to_string(),
        vec![config.vocab_size, h],
    )];
    for i in 0..config.num_hidden_layers {
        let p = format!("layers.{i}.");
        v.push((format!("{p}input_layernorm.weight"), vec![h]));
        v.push((format!("{p}post_attention_layernorm.weight"), vec![h]));
        for (n, out) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            v.push((format!("{p}self_attn.{n}.weight"), vec![out, h]));
            if config.attention_bias {
                v.push((format!("{p}self_attn.{n}.bias"), vec![out]));
            }
        }
        v.push((format!("{p}self_attn.o_proj.weight"), vec![h, q]));
        if config.qk_norm {
            v.push((format!("{p}self_attn.q_norm.weight"), vec![config.head_dim]));
            v.push((format!("{p}self_attn.k_norm.weight"), vec![config.head_dim]));
        }
        v.push((format!("{p}mlp.gate_proj.weight"), vec![ff, h]));
        v.push((format!("{p}mlp.up_proj.weight"), vec![ff, h]));
        v.push((format!("{p}mlp.down_proj.weight"), vec![h, ff]));
    }
    v.push(("norm.weight".to_string(), vec![h]));
    v
}

/// The validated mapping from model names to checkpoint names.
struct WeightPlan {
    /// `"model."` when the checkpoint uses it, else empty.
    prefix: String,
}

impl WeightPlan {
    fn new(config: &QwenConfig, checkpoint: &dyn TensorSource) -> Result<Self> {
        let names = checkpoint.names();
        let prefix = if names.iter().any(|n| n.starts_with("model.")) {
            "model."
        } else {
            ""
        }
        .to_string();
        let expected = expected_tensors(config);
        let mut missing = Vec::new();
        let mut mis_shaped = Vec::new();
        let mut bad_dtype = Vec::new();
        for (name, shape) in &expected {
            let full = format!("{prefix}{name}");
            match checkpoint.meta(&full) {
                None => missing.push(full),
                Some(meta) => {
                    if &meta.shape != shape {
                        mis_shaped.push(ShapeMismatch {
                            name: full.clone(),
                            expected: shape.clone(),
                            found: meta.shape,
                        });
                    }
                    if let Err(d) = meta.dtype {
                        bad_dtype.push((full, d));
                    }
                }
            }
        }
        let wanted: std::collections::HashSet<String> = expected
            .iter()
            .map(|(n, _)| format!("{prefix}{n}"))
            .collect();
        let unexpected: Vec<String> = names
            .into_iter()
            .filter(|n| !wanted.contains(n))
            .filter(|n| !n.starts_with("lm_head.") && !n.ends_with("rotary_emb.inv_freq"))
            .collect();
        if missing.is_empty()
            && unexpected.is_empty()
            && mis_shaped.is_empty()
            && bad_dtype.is_empty()
        {
            Ok(Self { prefix })
        } else {
            Err(QzhouError::WeightMismatch {
                missing,
                unexpected,
                mis_shaped,
                bad_dtype,
            })
        }
    }
}

struct Loader<'a, B: Backend> {
    checkpoint: &'a dyn TensorSource,
    plan: &'a WeightPlan,
    device: &'a B::Device,
    storage: &'a DeviceStorage,
}

impl<B: Backend> Loader<'_, B> {
    fn tensor<const D: usize>(&self, name: &str) -> Result<Tensor<B, D>> {
        let full = format!("{}{name}", self.plan.prefix);
        let (values, shape) = self.checkpoint.read_f32(&full)?;
        let data = TensorData::new(values, shape);
        Ok(Tensor::from_data(data, self.device))
    }

    /// Rows `start..start + len` of a row-major host matrix with `cols` columns, uploaded as
    /// its own device tensor (its own buffer).
    fn upload_rows(&self, values: &[f32], cols: usize, start: usize, len: usize) -> Tensor<B, 2> {
        let rows = values[start * cols..(start + len) * cols].to_vec();
        Tensor::from_data(TensorData::new(rows, [len, cols]), self.device)
    }

    /// The `[rows, cols]` matrix `name` as device tensors of at most the buffer limit each:
    /// `(start row, tensor)` in row order (one tensor when it fits).
    fn matrix_parts(&self, name: &str) -> Result<Vec<(usize, Tensor<B, 2>)>> {
        let full = format!("{}{name}", self.plan.prefix);
        let (values, shape) = self.checkpoint.read_f32(&full)?;
        let (rows, cols) = (shape[0], shape[1]);
        let step = self.storage.rows_per_buffer(rows, cols * 4);
        Ok((0..rows)
            .step_by(step)
            .map(|start| {
                let len = step.min(rows - start);
                (start, self.upload_rows(&values, cols, start, len))
            })
            .collect())
    }

    /// The 2-D matrix `name` as stored block-quantised, cut into row groups of at most the
    /// buffer limit (sized by the words, the larger of a group's two buffers), each handed to
    /// `upload(first row, rows, cols, blocks)` as it is cut. `None` when `name` is not stored
    /// block-quantised in one of `schemes` or not 2-D (such tensors are dequantised instead).
    fn packed_row_groups<T>(
        &self,
        name: &str,
        schemes: &[Quantization],
        mut upload: impl FnMut(usize, usize, usize, &PackedBlocks) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        let full = format!("{}{name}", self.plan.prefix);
        let stored = self.checkpoint.meta(&full).and_then(|m| m.dtype.ok());
        let wanted = |s: Quantization| schemes.contains(&s);
        let readable = match stored {
            Some(StoredDtype::Q8) => wanted(Quantization::Q8),
            Some(StoredDtype::Q4) => wanted(Quantization::Q4),
            Some(StoredDtype::Q4K) => wanted(Quantization::Q4K),
            _ => false,
        };
        if !readable {
            return Ok(None);
        }
        let Some((packed, shape)) = self.checkpoint.read_packed(&full)? else {
            return Ok(None);
        };
        let [rows, cols] = shape[..] else {
            return Ok(None);
        };
        let row_bytes = cols / packed.scheme.block_size() * packed.words_per_block() * 4;
        let step = self.storage.rows_per_buffer(rows, row_bytes);
        (0..rows)
            .step_by(step)
            .map(|start| {
                let end = (start + step).min(rows);
                upload(
                    start,
                    end - start,
                    cols,
                    &packed.slice_rows(start, end, cols),
                )
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The embedding table, in as many row groups as the buffer limit needs: block-quantised
    /// when the checkpoint stores it so and the device keeps quantised tables, else f32.
    fn embedding(&self, name: &str) -> Result<TokenEmbedding<B>> {
        if self.storage.quantized_embedding {
            let upload = |start, rows, cols, part: &PackedBlocks| {
                QuantizedRows::from_packed(part, start, rows, cols, self.device)
            };
            let schemes = [Quantization::Q8, Quantization::Q4, Quantization::Q4K];
            if let Some(parts) = self.packed_row_groups(name, &schemes, upload)? {
                return Ok(TokenEmbedding::Quantized(parts));
            }
        }
        let parts = self
            .matrix_parts(name)?
            .into_iter()
            .map(|(_, t)| Param::from_tensor(t))
            .collect();
        Ok(TokenEmbedding::Dense(parts))
    }

    /// A projection: block-quantised when the checkpoint stores it so and the device keeps
    /// quantised weights; else dense, split by output rows when over the buffer limit.
    ///
    /// HF stores Linear weights `[out, in]`; Burn computes `x @ W` with `W: [in, out]`, so a
    /// dense parameter is the transposed view (no copy), exactly what `LinearLayout::Col` does.
    fn linear(&self, name: &str, bias: bool) -> Result<Projection<B>> {
        let weight_name = format!("{name}.weight");
        let bias = if bias {
            Some(self.tensor::<1>(&format!("{name}.bias"))?)
        } else {
            None
        };
        if self.storage.keep_quantized {
            let upload = |_, rows, cols, part: &PackedBlocks| {
                QuantizedMatrix::from_packed(part, rows, cols, self.device)
            };
            let schemes = [Quantization::Q8, Quantization::Q4, Quantization::Q4K];
            if let Some(parts) = self.packed_row_groups(&weight_name, &schemes, upload)? {
                return Ok(Projection::Quantized(QuantizedLinear {
                    parts,
                    bias: bias.map(Param::from_tensor),
                }));
            }
        }
        let mut parts: Vec<Linear<B>> = self
            .matrix_parts(&weight_name)?
            .into_iter()
            .map(|(start, w)| {
                let len = w.dims()[0];
                Linear {
                    weight: Param::from_tensor(w.transpose()),
                    bias: bias
                        .as_ref()
                        .map(|b| Param::from_tensor(b.clone().narrow(0, start, len))),
                }
            })
            .collect();
        Ok(if parts.len() == 1 {
            Projection::Dense(parts.remove(0))
        } else {
            Projection::Split(SplitLinear { parts })
        })
    }

    fn rms_norm(&self, name: &str, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNorm {
            gamma: Param::from_tensor(self.tensor::<1>(&format!("{name}.weight"))?),
            epsilon: eps,
        })
    }
}
