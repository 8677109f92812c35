//! The token embedding table, cut into row groups when it is bigger than one device buffer
//! (Qwen2.5-7B's `151 936 × 3 584` f32 table is 2.2 GB; WebGPU's default binding limit is
//! 128 MiB).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::embedding;

/// Token embedding `[vocab, hidden]` stored as consecutive row groups.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    /// Row groups `[rows_i, hidden]`, in vocabulary order; one group when the table fits.
    pub parts: Vec<Param<Tensor<B, 2>>>,
}

impl<B: Backend> TokenEmbedding<B> {
    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.parts.iter().map(|p| p.dims()[0]).sum()
    }

    /// Embedding width.
    pub fn hidden_size(&self) -> usize {
        self.parts[0].dims()[1]
    }

    /// `ids`: `[batch, seq]` -> `[batch, seq, hidden]`. With several groups, each group looks
    /// up every id clamped into its range and contributes only where the id falls inside it,
    /// so exactly one group adds each row (cost: one gather per group, no host round trip).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        if self.parts.len() == 1 {
            return embedding(self.parts[0].val(), ids);
        }
        let [b, s] = ids.dims();
        let h = self.hidden_size();
        let flat = ids.reshape([b * s]);
        let mut start = 0usize;
        let mut out: Option<Tensor<B, 2>> = None;
        for part in &self.parts {
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
            let picked =
                rows_of_part.select(0, local) * inside.float().cast(dtype).unsqueeze_dim(1);
            out = Some(match out {
                Some(acc) => acc + picked,
                None => picked,
            });
            start = end;
        }
        out.expect("at least one part").reshape([b, s, h])
    }
}
