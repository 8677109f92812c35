//! Retrieval InfoNCE with hard, in-batch and query–query negatives.

use burn::prelude::*;

use super::{check_temperature, host_mask, masked_logsumexp, unit_rows};
use crate::error::{QzhouError, Result};

/// Retrieval InfoNCE (QZhou / GTE / Qwen3-Embedding):
///
/// ```text
/// L = −1/n Σ_i log  e^{s(q_i, d_i⁺)/τ} / ( Σ_{d ∈ batch docs} e^{s(q_i, d)/τ} + Σ_{j≠i} e^{s(q_i, q_j)/τ} )
/// ```
///
/// where the batch documents are every query's positive and hard negatives (so the positive
/// is in the denominator once, and other queries' positives and negatives are negatives), and
/// `s` is cosine similarity.
///
/// * `queries`: `[n, d]` query embeddings.
/// * `documents`: `[n, 1 + k, d]`: for query `i`, its positive at `[i, 0]` then its `k` hard
///   negatives (`k` may be 0).
/// * `tau`: temperature (paper 0.02).
///
/// Returns the mean loss, shape `[1]`.
///
/// ```
/// use burn::backend::Flex;
/// use burn::prelude::*;
/// let dev = Default::default();
/// let q = Tensor::<Flex, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
/// let d = Tensor::<Flex, 3>::from_floats([[[1.0, 0.0]], [[0.0, 1.0]]], &dev);
/// let loss = qzhou_core::losses::retrieval_infonce(q, d, 0.02).unwrap();
/// // Each positive is identical to its query and orthogonal to everything else:
/// // loss = log(1 + 2·e^{-1/τ}) ≈ 3.9e-22.
/// assert!(loss.into_scalar() < 1e-6);
/// ```
pub fn retrieval_infonce<B: Backend>(
    queries: Tensor<B, 2>,
    documents: Tensor<B, 3>,
    tau: f64,
) -> Result<Tensor<B, 1>> {
    check_temperature(tau)?;
    let [n, d] = queries.dims();
    let [nd, group, dd] = documents.dims();
    if nd != n || dd != d || group == 0 || n == 0 {
        return Err(QzhouError::InvalidOption(format!(
            "retrieval InfoNCE needs queries [n, d] and documents [n, 1 + k, d]; got {:?} and {:?}",
            [n, d],
            [nd, group, dd]
        )));
    }
    let device = queries.device();
    let q = unit_rows(queries);
    let docs = unit_rows(documents.reshape([n * group, d]));
    let qd = q.clone().matmul(docs.transpose()).div_scalar(tau); // [n, n·group]
    let qq = q.clone().matmul(q.transpose()).div_scalar(tau); // [n, n]
    let positive_index: Vec<i64> = (0..n).map(|i| (i * group) as i64).collect();
    let positive_index =
        Tensor::<B, 1, Int>::from_data(TensorData::new(positive_index, [n]), &device);
    let positive = qd
        .clone()
        .gather(1, positive_index.reshape([n, 1]))
        .reshape([n]);
    let logits = Tensor::cat(vec![qd, qq], 1);
    let keep = host_mask::<B>(n, n * group + n, &device, |i, c| c != n * group + i);
    let denominator = masked_logsumexp(logits, keep);
    Ok((denominator - positive).mean())
}
