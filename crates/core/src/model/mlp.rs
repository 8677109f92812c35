//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

/// Gated MLP of every Qwen decoder layer.
#[derive(Module, Debug)]
pub struct SwiGluMlp<B: Backend> {
    /// `hidden -> intermediate`, no bias.
    pub gate_proj: Linear<B>,
    /// `hidden -> intermediate`, no bias.
    pub up_proj: Linear<B>,
    /// `intermediate -> hidden`, no bias.
    pub down_proj: Linear<B>,
}

impl<B: Backend> SwiGluMlp<B> {
    /// `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
