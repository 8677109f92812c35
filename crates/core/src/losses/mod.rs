//! QZhou's three training losses (paper §4), written with Burn tensor ops so they run and
//! differentiate on every backend (`Autodiff<B>` for training). Similarities are cosines of the
//! given embeddings (normalised here, as `F.normalize` with eps 1e-12) divided by a
//! temperature τ (paper: 0.02 for all three).
//!
//! * [`retrieval_infonce`] — retrieval: positive vs every other document in the batch (hard
//!   negatives and other queries' documents) and the other queries.
//! * [`cosent`] — STS/NLI pair scores: every ordered pair of pairs whose gold order the
//!   similarities violate.
//! * [`classification_infonce`] — classification/clustering: like retrieval, with every
//!   same-label item masked out of the denominator.
//!
//! Golden values and gradients: `tests/losses.rs` against `scripts/make_loss_fixtures.py`
//! (PyTorch, float64).

mod classification;
mod cosent;
mod retrieval;

pub use classification::classification_infonce;
pub use cosent::cosent;
pub use retrieval::retrieval_infonce;

use burn::prelude::*;

use crate::error::{QzhouError, Result};

/// Default temperature τ of all three losses (paper, Table 1).
pub const DEFAULT_TEMPERATURE: f64 = 0.02;

/// Rows of `x` `[n, d]` scaled to unit L2 norm (norm floored at 1e-12).
pub(crate) fn unit_rows<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// `log Σ_j exp(x[i, j])` over the entries of row `i` where `keep[i, j]`, for `x` `[n, m]`:
/// `[n]`. Stable (the row max is subtracted, outside the gradient). Every row must keep at
/// least one entry.
pub(crate) fn masked_logsumexp<B: Backend>(
    x: Tensor<B, 2>,
    keep: Tensor<B, 2, Bool>,
) -> Tensor<B, 1> {
    let [n, _] = x.dims();
    let x = x.mask_fill(keep.bool_not(), f32::NEG_INFINITY);
    let max = x.clone().detach().max_dim(1);
    let summed = (x - max.clone()).exp().sum_dim(1);
    (summed.log() + max).reshape([n])
}

/// A `[rows, cols]` boolean mask from a host predicate.
pub(crate) fn host_mask<B: Backend>(
    rows: usize,
    cols: usize,
    device: &B::Device,
    keep: impl Fn(usize, usize) -> bool,
) -> Tensor<B, 2, Bool> {
    let values: Vec<bool> = (0..rows * cols).map(|i| keep(i / cols, i % cols)).collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

pub(crate) fn check_temperature(tau: f64) -> Result<()> {
    if tau.is_finite() && tau > 0.0 {
        Ok(())
    } else {
        Err(QzhouError::InvalidOption(format!(
            "temperature must be a positive number, got {tau}"
        )))
    }
}
