//! The projection layer of every attention and MLP block, in the storage the backend and the
//! checkpoint call for: one dense matrix, a dense matrix split by output rows (when it is
//! bigger than one device buffer), block-quantised row groups run by the fused kernel, or a
//! dense matrix with a trainable LoRA adapter.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use super::dense::linear_rows;
use super::lora_linear::LoraLinear;
use crate::kernels::{KernelBackend, QuantizedMatrix};

/// `y = x · Wᵀ + b` with `W` `[out, in]` (HF layout) stored one of four ways.
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    /// Burn's `Linear` (weight `[in, out]`).
    Dense(Linear<B>),
    /// Several `Linear`s over consecutive output ranges, outputs concatenated.
    Split(SplitLinear<B>),
    /// Block-quantised weight groups (q8/q4) multiplied by [`KernelBackend::quantized_matmul`].
    Quantized(QuantizedLinear<B>),
    /// A frozen dense matrix plus a low-rank update (training).
    Lora(LoraLinear<B>),
}

/// A dense projection cut into output-row groups, each in its own device buffer.
#[derive(Module, Debug)]
pub struct SplitLinear<B: Backend> {
    /// Consecutive output ranges, in order.
    pub parts: Vec<Linear<B>>,
}

/// A projection whose weight stays block-quantised on the device.
#[derive(Module, Debug)]
pub struct QuantizedLinear<B: Backend> {
    /// Consecutive output-row groups `[rows_i, in]`, in order.
    pub parts: Vec<QuantizedMatrix<B>>,
    /// Bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: KernelBackend> Projection<B> {
    /// `x`: `[batch, seq, in]` -> `[batch, seq, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Self::Dense(l) => linear_rows(l, x),
            Self::Lora(l) => l.forward(x),
            Self::Split(s) => {
                let outs = s.parts.iter().map(|p| linear_rows(p, x.clone())).collect();
                Tensor::cat(outs, 2)
            }
            Self::Quantized(q) => {
                let [b, s, k] = x.dims();
                let x = x.reshape([b * s, k]);
                let outs: Vec<Tensor<B, 2>> = q
                    .parts
                    .iter()
                    .map(|p| B::quantized_matmul(x.clone(), p))
                    .collect();
                let y = Tensor::cat(outs, 1);
                let y = match &q.bias {
                    Some(bias) => y + bias.val().unsqueeze_dim(0),
                    None => y,
                };
                let n = y.dims()[1];
                y.reshape([b, s, n])
            }
        }
    }
}
