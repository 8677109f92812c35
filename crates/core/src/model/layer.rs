//! One pre-norm decoder layer: `h = x + attn(norm(x)); y = h + mlp(norm(h))`.

use burn::nn::RmsNorm;
use burn::prelude::*;

use super::attention::SelfAttention;
use super::mlp::SwiGluMlp;
use crate::kernels::KernelBackend;

/// A Qwen decoder layer, run without a KV cache.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Self-attention.
    pub self_attn: SelfAttention<B>,
    /// RMSNorm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// SwiGLU MLP.
    pub mlp: SwiGluMlp<B>,
}

impl<B: KernelBackend> DecoderLayer<B> {
    /// `x`: `[batch, seq, hidden]` -> `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), cos, sin, mask);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}
