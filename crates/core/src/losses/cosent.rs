//! CoSENT over all ordered pairs of pairs in a batch.

use burn::prelude::*;

use super::{check_temperature, host_mask, masked_logsumexp, unit_rows};
use crate::error::{QzhouError, Result};

/// CoSENT (Su 2022), QZhou's STS/NLI loss:
///
/// ```text
/// L = log( 1 + Σ_{y_p > y_q} e^{(s_q − s_p)/τ} ),     s_p = cos(a_p, b_p)
/// ```
///
/// summed over every ordered pair of pairs `(p, q)` whose gold score puts `p` above `q`.
///
/// * `first`, `second`: `[n, d]` embeddings of each pair's two texts.
/// * `scores`: the `n` gold scores (only their order matters; must be finite).
/// * `tau`: temperature; the paper's single 0.02 (the usual CoSENT scale 20 is τ = 0.05).
///
/// Returns the loss, shape `[1]` (`log 1 = 0` when no two scores differ).
///
/// ```
/// use burn::backend::Flex;
/// use burn::prelude::*;
/// let dev = Default::default();
/// let a = Tensor::<Flex, 2>::from_floats([[1.0, 0.0], [1.0, 0.0]], &dev);
/// let b = Tensor::<Flex, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
/// // Pair 0 (cos 1) is scored above pair 1 (cos 0): ordered correctly, loss = log(1 + e^{-1/τ}).
/// let loss = qzhou_core::losses::cosent(a, b, &[5.0, 1.0], 0.05).unwrap().into_scalar();
/// assert!((loss - (-20f32).exp().ln_1p()).abs() < 1e-6);
/// ```
pub fn cosent<B: Backend>(
    first: Tensor<B, 2>,
    second: Tensor<B, 2>,
    scores: &[f32],
    tau: f64,
) -> Result<Tensor<B, 1>> {
    check_temperature(tau)?;
    let [n, d] = first.dims();
    if second.dims() != [n, d] || scores.len() != n || n == 0 {
        return Err(QzhouError::InvalidOption(format!(
            "CoSENT needs two [n, d] embedding sets and n scores; got {:?}, {:?} and {} scores",
            [n, d],
            second.dims(),
            scores.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(QzhouError::InvalidOption(format!(
            "CoSENT score {i} is {}, not a finite number",
            scores[i]
        )));
    }
    let device = first.device();
    let sim = (unit_rows(first) * unit_rows(second))
        .sum_dim(1)
        .div_scalar(tau); // [n, 1]
                          // diff[p, q] = s_q − s_p, kept where y_p > y_q; one extra column of 0 is the "1 +".
    let diff = sim.clone().transpose().expand([n, n]) - sim.expand([n, n]);
    let flat = diff.reshape([1, n * n]);
    let logits = Tensor::cat(vec![flat, Tensor::zeros([1, 1], &device)], 1);
    let keep = host_mask::<B>(1, n * n + 1, &device, |_, c| {
        c == n * n || scores[c / n] > scores[c % n]
    });
    Ok(masked_logsumexp(logits, keep))
}
