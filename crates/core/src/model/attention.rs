//! Multi-head self-attention with grouped-query heads, RoPE and optional per-head q/k RMSNorm.

use burn::nn::RmsNorm;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::linear::Projection;
use super::rope::apply_rope;
use crate::kernels::KernelBackend;

/// The attention block of a Qwen2/Qwen3 decoder layer.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `hidden -> heads·head_dim` (bias in Qwen2).
    pub q_proj: Projection<B>,
    /// `hidden -> kv_heads·head_dim` (bias in Qwen2).
    pub k_proj: Projection<B>,
    /// `hidden -> kv_heads·head_dim` (bias in Qwen2).
    pub v_proj: Projection<B>,
    /// `heads·head_dim -> hidden`, no bias.
    pub o_proj: Projection<B>,
    /// Qwen3: RMSNorm over `head_dim` applied to each query head before RoPE.
    pub q_norm: Option<RmsNorm<B>>,
    /// Qwen3: RMSNorm over `head_dim` applied to each key head before RoPE.
    pub k_norm: Option<RmsNorm<B>>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: KernelBackend> SelfAttention<B> {
    /// Split `[batch, seq, n·head_dim]` into `[batch, n, seq, head_dim]`, normalising each head.
    fn heads(&self, x: Tensor<B, 3>, n: usize, norm: Option<&RmsNorm<B>>) -> Tensor<B, 4> {
        let [b, s, _] = x.dims();
        let x = x.reshape([b, s, n, self.head_dim]);
        let x = match norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        x.swap_dims(1, 2)
    }

    /// Repeat each kv head `heads / kv_heads` times: `[b, kv, s, d] -> [b, heads, s, d]`.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let groups = self.num_heads / self.num_kv_heads;
        if groups == 1 {
            return x;
        }
        let [b, kv, s, d] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, kv, groups, s, d])
            .reshape([b, kv * groups, s, d])
    }

    /// `x`: `[batch, seq, hidden]`; `cos`/`sin`: `[seq, head_dim]`; `mask`: `[batch, heads, seq,
    /// seq]`, `true` where a query must not see a key. Returns `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        mask: Tensor<B, 4, Bool>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let q = self.heads(
            self.q_proj.forward(x.clone()),
            self.num_heads,
            self.q_norm.as_ref(),
        );
        let k = self.heads(
            self.k_proj.forward(x.clone()),
            self.num_kv_heads,
            self.k_norm.as_ref(),
        );
        let v = self.heads(self.v_proj.forward(x), self.num_kv_heads, None);
        let q = apply_rope(q, cos, sin);
        let k = self.repeat_kv(apply_rope(k, cos, sin));
        let v = self.repeat_kv(v);
        let out = attention(q, k, v, Some(mask), None, AttentionModuleOptions::default());
        let out = out
            .swap_dims(1, 2)
            .reshape([b, s, self.num_heads * self.head_dim]);
        self.o_proj.forward(out)
    }
}
