//! GPTQ rounding of one `[rows, cols]` weight into q4 blocks.
//!
//! Plain rounding makes each weight's error as small as it can on its own. GPTQ (Frantar et al.
//! 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers")
//! makes the error of the layer's *output* small on real inputs: with `H = Σ x xᵀ` over
//! calibration inputs, it rounds one column at a time and moves each column's rounding error onto
//! the columns not rounded yet, in the proportions that minimise `tr((W − Q) H (W − Q)ᵀ)` — the
//! output error `Σ ‖(W − Q) x‖²` on those inputs. In formulas, with `U` the upper Cholesky
//! factor of `H⁻¹` (`H⁻¹ = Uᵀ U`), for column `j`:
//!
//! ```text
//! q_j = round(w_j)   on the row's current block grid
//! e_j = (w_j − q_j) / U[j, j]
//! w_k ← w_k − e_j · U[j, k]        for every k > j
//! ```
//!
//! applied lazily in blocks of 128 columns (the paper's §"Lazy batch-updates"). The grid of each
//! block of 32 (qzhou's q4: `min + q · scale`, f16 parameters) is chosen when GPTQ reaches the
//! block, from the weights as updated so far, by the same least-squares search plain q4 uses
//! (`quantization::q4_block_grid`), so the result is an ordinary q4 tensor: the kernels and the
//! pack format do not change. For q4k, a super-block's `(d, dmin)` is chosen when GPTQ reaches
//! it and each 16-value sub-block's codes when GPTQ reaches the sub-block (the same search, coded
//! under that `(d, dmin)`). Values move after `(d, dmin)` is fixed, so it is chosen
//! [`Q4K_HEADROOM`] times larger than plain q4k's: with 8-bit codes that costs little, while
//! codes capped at 255 would clip the values that grew — on the real Qwen2.5-0.5B without
//! headroom, query-form embeddings came out *worse* than plain rounding (mean cosine 0.9917 vs
//! 0.9931 on 91 multilingual sentences), with it better (0.9972). Rows are independent: the
//! result of a row does not depend on the other rows, which is why a pack may cut the result
//! into parts anywhere.
//!
//! `H` is damped by 1 % of its mean diagonal (the paper's λ), more if it is not positive
//! definite; an input that never varied (zero diagonal) gets the mean diagonal, so its column is
//! rounded plainly and passes no error on.
//!
//! **Calibration size matters more than anything else here.** With fewer calibration tokens
//! than input dimensions `H` is singular but for the damping, and GPTQ fits the calibration
//! inputs at the expense of every other input: on a 6 × 256 random Qwen2 (tests/gptq.rs) 320
//! tokens made the worst embedding *worse* than plain rounding (0.976 vs 0.987), 2,000 tokens
//! better on average, 8,000 better everywhere (0.992); on the real Qwen2.5-0.5B 1,020 tokens of
//! the built-in set alone lost to plain rounding on held-out STS-B sentences, 3,231 mixed tokens
//! won on every set measured (README "Web packs"). Raising the damping to 10 % did not rescue the
//! small set. `qzhou export-web` therefore asks for at least half the widest input in tokens.

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use half::f16;

use crate::error::{QzhouError, Result};
use crate::quantization::{
    q4_block_grid, q4_level, scale_exponent, GridFit, Q4kSuperGrid, Quantization, RoundedGrids,
    RoundedQ4, BLOCK_SIZE, Q4K_SUB_BLOCK, Q4K_SUPER_BLOCK,
};

/// Columns updated together before the rest of the matrix sees their errors.
const LAZY_BLOCK: usize = 128;

/// How much larger than plain q4k a super-block's `(d, dmin)` is chosen (see [`Grids`]).
const Q4K_HEADROOM: f32 = 1.25;

/// Damping tried first, as a fraction of `H`'s mean diagonal, then ×10 while `H` is not
/// positive definite.
const DAMP: f64 = 0.01;

/// Round `weight` (`[rows, cols]` row-major, HF `[out, in]` layout) to `scheme` (q4 or q4k) by
/// GPTQ against `h = Σ x xᵀ` (`[cols, cols]`, row-major; symmetric) of its inputs.
pub fn gptq_q4(
    weight: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    scheme: Quantization,
) -> Result<RoundedQ4> {
    let block = match scheme {
        Quantization::Q4 | Quantization::Q4K => scheme.block_size(),
        other => {
            return Err(QzhouError::InvalidOption(format!(
                "GPTQ rounds to q4 or q4k, not {other}"
            )))
        }
    };
    if cols == 0 || cols % block != 0 || weight.len() != rows * cols {
        return Err(QzhouError::InvalidOption(format!(
            "GPTQ needs a [rows, cols] weight with cols a multiple of {block} ({scheme}); got {} \
             values for [{rows}, {cols}]",
            weight.len()
        )));
    }
    if h.len() != cols * cols {
        return Err(QzhouError::InvalidOption(format!(
            "GPTQ: {} input moments for a weight with {cols} columns (want {cols}²)",
            h.len()
        )));
    }
    if let Some(i) = weight.iter().position(|v| !v.is_finite()) {
        return Err(QzhouError::InvalidOption(format!(
            "cannot quantize a non-finite value ({}) at index {i}",
            weight[i]
        )));
    }
    if let Some(i) = h.iter().position(|v| !v.is_finite()) {
        return Err(QzhouError::InvalidOption(format!(
            "GPTQ: input moment {i} is not finite ({})",
            h[i]
        )));
    }
    let u = inverse_cholesky_upper(Mat::from_fn(cols, cols, |i, j| h[i * cols + j]))?;
    let exponent = scale_exponent(weight);
    let factor = 2f64.powi(-exponent);
    // Column-major working copy in the stored (2^−exponent) units: column j is w[j·rows..].
    let mut w = vec![0f64; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            w[c * rows + r] = weight[r * cols + c] as f64 * factor;
        }
    }
    let mut grids = Grids::new(scheme, rows, cols);
    let mut levels = vec![0u8; rows * cols];
    let (mut grid_scale, mut grid_min) = (vec![0f32; rows], vec![0f32; rows]);
    let mut err = vec![0f64; rows];
    for b0 in (0..cols).step_by(LAZY_BLOCK) {
        let b1 = (b0 + LAZY_BLOCK).min(cols);
        let mut errors = vec![0f64; rows * (b1 - b0)];
        for j in b0..b1 {
            grids.reach(j, &w, &mut grid_scale, &mut grid_min);
            let d = u[(j, j)];
            let col = &w[j * rows..(j + 1) * rows];
            for r in 0..rows {
                let (s, m) = (grid_scale[r], grid_min[r]);
                let level = q4_level(col[r] as f32, m, s);
                levels[r * cols + j] = level as u8;
                err[r] = (col[r] - (m + level * s) as f64) / d;
            }
            errors[(j - b0) * rows..(j - b0 + 1) * rows].copy_from_slice(&err);
            for k in j + 1..b1 {
                let ujk = u[(j, k)];
                for (x, e) in w[k * rows..(k + 1) * rows].iter_mut().zip(&err) {
                    *x -= e * ujk;
                }
            }
        }
        if b1 < cols {
            // w[:, b1..] −= errors · U[b0..b1, b1..]
            let rest = MatMut::from_column_major_slice_mut(&mut w[b1 * rows..], rows, cols - b1);
            let errors = MatRef::from_column_major_slice(&errors, rows, b1 - b0);
            matmul(
                rest,
                Accum::Add,
                errors,
                u.as_ref().submatrix(b0, b1, b1 - b0, cols - b1),
                -1.0f64,
                Par::rayon(0),
            );
        }
    }
    let nibbles = levels.chunks_exact(2).map(|p| p[0] | (p[1] << 4)).collect();
    Ok(RoundedQ4 {
        rows,
        cols,
        exponent,
        nibbles,
        grids: grids.finish(),
    })
}

/// The grids GPTQ rounds on, chosen as it reaches each block from the weights as updated so far.
enum Grids {
    /// q4: a block's `(scale, min)` when GPTQ reaches its first column.
    Q4 {
        rows: usize,
        blocks_per_row: usize,
        scales: Vec<f16>,
        mins: Vec<f16>,
    },
    /// q4k: a super-block's `(d, dmin)` when GPTQ reaches its first column; each sub-block's
    /// codes when GPTQ reaches the sub-block (under that `(d, dmin)`). Row-major.
    Q4K {
        rows: usize,
        supers_per_row: usize,
        supers: Vec<Q4kSuperGrid>,
    },
}

impl Grids {
    fn new(scheme: Quantization, rows: usize, cols: usize) -> Self {
        if scheme == Quantization::Q4K {
            let supers_per_row = cols / Q4K_SUPER_BLOCK;
            let empty = Q4kSuperGrid::fit(&[0.0; Q4K_SUPER_BLOCK], GridFit::LeastSquares);
            Self::Q4K {
                rows,
                supers_per_row,
                supers: vec![empty; rows * supers_per_row],
            }
        } else {
            let blocks_per_row = cols / BLOCK_SIZE;
            Self::Q4 {
                rows,
                blocks_per_row,
                scales: vec![f16::ZERO; rows * blocks_per_row],
                mins: vec![f16::ZERO; rows * blocks_per_row],
            }
        }
    }

    /// Called for every column `j` in order before it is rounded: where a block starts, choose
    /// each row's grid from `w` (column-major, `rows` per column) and put the grid column `j` is
    /// rounded on into `scale`, `min` (per row).
    fn reach(&mut self, j: usize, w: &[f64], scale: &mut [f32], min: &mut [f32]) {
        match self {
            Self::Q4 {
                rows,
                blocks_per_row,
                scales,
                mins,
            } => {
                if j % BLOCK_SIZE != 0 {
                    return;
                }
                let mut values = [0f32; BLOCK_SIZE];
                for r in 0..*rows {
                    for (t, v) in values.iter_mut().enumerate() {
                        *v = w[(j + t) * *rows + r] as f32;
                    }
                    let (s, m) = q4_block_grid(&values, GridFit::LeastSquares);
                    let at = r * *blocks_per_row + j / BLOCK_SIZE;
                    (scales[at], mins[at]) = (s, m);
                    (scale[r], min[r]) = (s.to_f32(), m.to_f32());
                }
            }
            Self::Q4K {
                rows,
                supers_per_row,
                supers,
            } => {
                if j % Q4K_SUB_BLOCK != 0 {
                    return;
                }
                let rows = *rows;
                let column = |r: usize, from: usize, values: &mut [f32]| {
                    for (t, v) in values.iter_mut().enumerate() {
                        *v = w[(from + t) * rows + r] as f32;
                    }
                };
                let sub = (j % Q4K_SUPER_BLOCK) / Q4K_SUB_BLOCK;
                let mut values = [0f32; Q4K_SUPER_BLOCK];
                for r in 0..rows {
                    let grid = &mut supers[r * *supers_per_row + j / Q4K_SUPER_BLOCK];
                    if sub == 0 {
                        column(r, j, &mut values);
                        *grid = Q4kSuperGrid::fit_with_headroom(&values, Q4K_HEADROOM);
                    } else {
                        column(r, j, &mut values[..Q4K_SUB_BLOCK]);
                        grid.refit_sub(sub, &values[..Q4K_SUB_BLOCK]);
                    }
                    (scale[r], min[r]) = grid.sub_grid(sub);
                }
            }
        }
    }

    fn finish(self) -> RoundedGrids {
        match self {
            Self::Q4 { scales, mins, .. } => RoundedGrids::Q4 { scales, mins },
            Self::Q4K { supers, .. } => RoundedGrids::Q4K {
                scale_codes: supers.iter().flat_map(|g| g.scale_codes).collect(),
                min_codes: supers.iter().flat_map(|g| g.min_codes).collect(),
                d: supers.iter().map(|g| g.d).collect(),
                dmin: supers.iter().map(|g| g.dmin).collect(),
            },
        }
    }
}

/// `U` with `H⁻¹ = Uᵀ U` (upper triangular), `H` damped until it factorises.
fn inverse_cholesky_upper(mut h: Mat<f64>) -> Result<Mat<f64>> {
    let n = h.nrows();
    let diag_mean = (0..n).map(|i| h[(i, i)]).sum::<f64>() / n as f64;
    let diag_mean = if diag_mean > 0.0 { diag_mean } else { 1.0 };
    for i in 0..n {
        if h[(i, i)] <= 0.0 {
            for k in 0..n {
                h[(i, k)] = 0.0;
                h[(k, i)] = 0.0;
            }
            h[(i, i)] = diag_mean;
        }
    }
    let mut damp = DAMP;
    while damp <= 10.0 {
        let mut damped = h.clone();
        for i in 0..n {
            damped[(i, i)] += damp * diag_mean;
        }
        if let Ok(llt) = damped.llt(Side::Lower) {
            let inverse = llt.inverse();
            if let Ok(inner) = inverse.llt(Side::Lower) {
                return Ok(inner.L().transpose().to_owned());
            }
        }
        damp *= 10.0;
    }
    Err(QzhouError::InvalidOption(
        "GPTQ: the input moments do not factorise even when damped by 10× their mean diagonal"
            .into(),
    ))
}
