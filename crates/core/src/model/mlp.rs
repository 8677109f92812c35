//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use burn::prelude::*;

use super::linear::Projection;
use crate::kernels::KernelBackend;

/// Gated MLP of every Qwen decoder layer.
#[derive(Module, Debug)]
pub struct SwiGluMlp<B: Backend> {
    /// `hidden -> intermediate`, no bias.
    pub gate_proj: Projection<B>,
    /// `hidden -> intermediate`, no bias.
    pub up_proj: Projection<B>,
    /// `intermediate -> hidden`, no bias.
    pub down_proj: Projection<B>,
}

impl<B: KernelBackend> SwiGluMlp<B> {
    /// `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(self.gated(x))
    }

    /// `silu(gate(x)) * up(x)`, `[batch, seq, intermediate]`: what `down_proj` reads.
    pub fn gated(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        B::silu_mul(self.gate_proj.forward(x.clone()), self.up_proj.forward(x))
    }
}
