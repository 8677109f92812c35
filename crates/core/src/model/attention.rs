//! Multi-head self-attention with grouped-query heads, RoPE and optional per-head q/k RMSNorm.

use burn::nn::RmsNorm;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::linear::Projection;
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
    /// Split `[batch, seq, n·head_dim]` into `[batch, seq, n, head_dim]`, normalising each head.
    fn heads(&self, x: Tensor<B, 3>, n: usize, norm: Option<&RmsNorm<B>>) -> Tensor<B, 4> {
        let [b, s, _] = x.dims();
        let x = x.reshape([b, s, n, self.head_dim]);
        match norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// `x`: `[batch, seq, hidden]`; `cos`/`sin`: `[seq, head_dim]`; `mask`: `[batch, kv_heads,
    /// groups·seq, seq]` from [`super::QwenEncoder::attention_mask`], `true` where a query must
    /// not see a key (`None`: every query sees every key). Returns `[batch, seq, hidden]`:
    /// `o_proj` of [`Self::attend`].
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        self.o_proj.forward(self.attend(x, cos, sin, mask))
    }

    /// The heads' outputs before `o_proj`, `[batch, seq, heads·head_dim]` (what `o_proj` reads;
    /// GPTQ's calibration records it). Arguments as [`Self::forward`].
    ///
    /// Grouped-query attention without repeating keys and values: the `groups = heads /
    /// kv_heads` query heads that share key/value head `j` (heads `j·groups ..`, transformers'
    /// `repeat_kv` order) are stacked along the query axis, so attention runs over `kv_heads`
    /// heads of `groups·seq` queries against `seq` keys — the same scores, softmaxes and sums.
    pub fn attend(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (kv, d) = (self.num_kv_heads, self.head_dim);
        let groups = self.num_heads / kv;
        let q = self.heads(
            self.q_proj.forward(x.clone()),
            self.num_heads,
            self.q_norm.as_ref(),
        );
        let k = self.heads(self.k_proj.forward(x.clone()), kv, self.k_norm.as_ref());
        let v = self.heads(self.v_proj.forward(x), kv, None);
        // [b, s, heads, d] -> [b, s, kv, groups, d] -> [b, kv, groups, s, d] -> [b, kv, groups·s, d]
        let q = B::rope(q, cos, sin)
            .reshape([b, s, kv, groups, d])
            .permute([0, 2, 3, 1, 4])
            .reshape([b, kv, groups * s, d]);
        let k = B::rope(k, cos, sin).swap_dims(1, 2);
        let v = v.swap_dims(1, 2);
        let out = attention(q, k, v, mask, None, AttentionModuleOptions::default());
        // [b, kv, groups·s, d] -> [b, kv, groups, s, d] -> [b, s, kv, groups, d] -> [b, s, hidden]
        out.reshape([b, kv, groups, s, d])
            .permute([0, 3, 1, 2, 4])
            .reshape([b, s, self.num_heads * d])
    }
}
