//! Rotary position embedding in the HF "rotate-half" layout (NeoX style: dimension `i` pairs
//! with `i + d/2`), not `burn::nn::RotaryEncoding`'s interleaved pairs.

use burn::prelude::*;

/// `cos` and `sin` tables, each `[seq_len, head_dim]` with every frequency repeated in both
/// halves, computed exactly as transformers does in f32:
/// `inv_freq[i] = 1 / θ^(2i/d)`, `angle = position · inv_freq`.
pub fn rope_tables<B: Backend>(
    theta: f64,
    head_dim: usize,
    seq_len: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = head_dim / 2;
    let base = theta as f32;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(seq_len * head_dim);
    let mut sin = Vec::with_capacity(seq_len * head_dim);
    for pos in 0..seq_len {
        for _ in 0..2 {
            for f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [seq_len, head_dim]), device),
        Tensor::from_data(TensorData::new(sin, [seq_len, head_dim]), device),
    )
}

/// `[x1, x2] -> [-x2, x1]` over the last dimension of `[batch, seq, heads, head_dim]`.
fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// Rotate `x` `[batch, seq, heads, head_dim]` by the tables from [`rope_tables`] `[seq,
/// head_dim]`: `x·cos + rotate_half(x)·sin`, the tables broadcast over batch and heads. This is
/// the reference [`crate::KernelBackend::rope`] defaults to.
pub fn apply_rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [s, d] = cos.dims();
    let cos = cos.clone().reshape([1, s, 1, d]);
    let sin = sin.clone().reshape([1, s, 1, d]);
    x.clone() * cos + rotate_half(x) * sin
}
