//! The token embedding table: f32 rows, or rows kept block-quantised (q8/q4) on the device and
//! dequantised as they are looked up; cut into row groups when it is bigger than one device
//! buffer (Qwen2.5-7B's `151 936 × 3 584` f32 table is 2.2 GB; WebGPU's default binding limit
//! is 128 MiB).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::embedding;

use crate::kernels::{KernelBackend, QuantizedRows};

/// Token embedding `[vocab, hidden]` stored as consecutive row groups, in vocabulary order
/// (one group when the table fits in one buffer).
#[derive(Module, Debug)]
pub enum TokenEmbedding<B: Backend> {
    /// f32 row groups `[rows_i, hidden]` (trainable).
    Dense(Vec<Param<Tensor<B, 2>>>),
    /// Block-quantised row groups, looked up by [`KernelBackend::quantized_gather`].
    Quantized(Vec<QuantizedRows<B>>),
}

impl<B: Backend> TokenEmbedding<B> {
    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Dense(parts) => parts.iter().map(|p| p.dims()[0]).sum(),
            Self::Quantized(parts) => parts.iter().map(|p| p.rows).sum(),
        }
    }

    /// Embedding width.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Dense(parts) => parts[0].dims()[1],
            Self::Quantized(parts) => parts[0].cols,
        }
    }

    /// Device buffers holding the table.
    pub fn buffers(&self) -> usize {
        match self {
            Self::Dense(parts) => parts.len(),
            Self::Quantized(parts) => parts.len(),
        }
    }

    /// Bits per stored value: 32 (f32), 8 or 4.
    pub fn bits(&self) -> usize {
        match self {
            Self::Dense(_) => 32,
            Self::Quantized(parts) => parts[0].bits,
        }
    }

    /// How the table is held: `f32`, `q8`, `q4` or `q4k` (see [`crate::quantization`]).
    pub fn format(&self) -> &'static str {
        match self {
            Self::Dense(_) => "f32",
            Self::Quantized(parts) if parts[0].q4k => "q4k",
            Self::Quantized(parts) if parts[0].bits == 8 => "q8",
            Self::Quantized(_) => "q4",
        }
    }

    /// Device bytes of the table (values plus block parameters).
    pub fn device_bytes(&self) -> usize {
        match self {
            Self::Dense(parts) => parts.iter().map(|p| p.dims()[0] * p.dims()[1] * 4).sum(),
            Self::Quantized(parts) => parts.iter().map(QuantizedRows::device_bytes).sum(),
        }
    }

    /// The device the table lives on.
    pub fn device(&self) -> B::Device {
        match self {
            Self::Dense(parts) => parts[0].val().device(),
            Self::Quantized(parts) => parts[0].params.device(),
        }
    }
}

impl<B: KernelBackend> TokenEmbedding<B> {
    /// `ids`: `[batch, seq]` -> `[batch, seq, hidden]`. With several groups, each group looks
    /// up every id and contributes only where the id falls inside its rows, so exactly one
    /// group adds each row (cost: one gather per group, no host round trip).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, s] = ids.dims();
        let h = self.hidden_size();
        let flat = ids.reshape([b * s]);
        let rows = match self {
            Self::Dense(parts) if parts.len() == 1 => {
                return embedding(parts[0].val(), flat.reshape([b, s]));
            }
            Self::Dense(parts) => dense_lookup(parts, flat),
            Self::Quantized(parts) => parts
                .iter()
                .map(|part| B::quantized_gather(flat.clone(), part))
                .reduce(|acc, rows| acc + rows)
                .expect("at least one part"),
        };
        rows.reshape([b, s, h])
    }
}

/// `flat` ids `[n]` looked up in f32 row groups: `[n, hidden]`.
fn dense_lookup<B: Backend>(
    parts: &[Param<Tensor<B, 2>>],
    flat: Tensor<B, 1, Int>,
) -> Tensor<B, 2> {
    let mut start = 0usize;
    let mut out: Option<Tensor<B, 2>> = None;
    for part in parts {
        let rows = part.dims()[0];
        let end = start + rows;
        let inside = flat
            .clone()
            .greater_equal_elem(start as i64)
            .bool_and(flat.clone().lower_elem(end as i64));
        let local = flat
            .clone()
            .sub_scalar(start as i64)
            .clamp(0, rows as i64 - 1);
        let rows_of_part = part.val();
        let dtype = rows_of_part.dtype();
        let picked = rows_of_part.select(0, local) * inside.float().cast(dtype).unsqueeze_dim(1);
        out = Some(match out {
            Some(acc) => acc + picked,
            None => picked,
        });
        start = end;
    }
    out.expect("at least one part")
}
