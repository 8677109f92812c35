//! Classification InfoNCE with same-label masking.

use burn::prelude::*;

use super::{check_temperature, host_mask, masked_logsumexp, unit_rows};
use crate::error::{QzhouError, Result};

/// QZhou's classification loss: InfoNCE whose denominator holds the sample's own negatives,
/// the other anchors and the other samples' negatives, each **masked out when it has the
/// anchor's label** (`M(a, b) = 0` for the same class); other samples' positives are not in it.
///
/// ```text
/// L = −1/n Σ_i log  e^{s(t_i, t_i⁺)/τ} / ( e^{s(t_i, t_i⁺)/τ} + Σ_{j≠i} M·e^{s(t_i, t_j)/τ} + Σ_{j, m} M·e^{s(t_i, t⁻_{j,m})/τ} )
/// ```
///
/// * `anchors`, `positives`: `[n, d]` (a positive has its anchor's label).
/// * `negatives`: `[n, k, d]`.
/// * `labels`: the `n` anchor labels; `negative_labels`: `n · k` labels, row-major.
///
/// Returns the mean loss, shape `[1]`.
pub fn classification_infonce<B: Backend>(
    anchors: Tensor<B, 2>,
    positives: Tensor<B, 2>,
    negatives: Tensor<B, 3>,
    labels: &[usize],
    negative_labels: &[usize],
    tau: f64,
) -> Result<Tensor<B, 1>> {
    check_temperature(tau)?;
    let [n, d] = anchors.dims();
    let [nn, k, nd] = negatives.dims();
    if positives.dims() != [n, d]
        || nn != n
        || nd != d
        || n == 0
        || labels.len() != n
        || negative_labels.len() != n * k
    {
        return Err(QzhouError::InvalidOption(format!(
            "classification InfoNCE needs anchors/positives [n, d], negatives [n, k, d], n labels \
             and n·k negative labels; got {:?}, {:?}, {:?}, {} and {}",
            [n, d],
            positives.dims(),
            [nn, k, nd],
            labels.len(),
            negative_labels.len()
        )));
    }
    let device = anchors.device();
    let t = unit_rows(anchors);
    let positive = (t.clone() * unit_rows(positives))
        .sum_dim(1)
        .div_scalar(tau); // [n, 1]
    let tt = t.clone().matmul(t.clone().transpose()).div_scalar(tau); // [n, n]
    let negs = unit_rows(negatives.reshape([n * k, d]));
    let tn = t.matmul(negs.transpose()).div_scalar(tau); // [n, n·k]
    let logits = Tensor::cat(vec![positive.clone(), tt, tn], 1);
    let keep = host_mask::<B>(n, 1 + n + n * k, &device, |i, c| {
        if c == 0 {
            true
        } else if c <= n {
            let j = c - 1;
            j != i && labels[j] != labels[i]
        } else {
            negative_labels[c - 1 - n] != labels[i]
        }
    });
    let denominator = masked_logsumexp(logits, keep);
    Ok((denominator - positive.reshape([n])).mean())
}
