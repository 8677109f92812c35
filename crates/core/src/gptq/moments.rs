//! `Σ x xᵀ` over the calibration tokens that reach one projection: GPTQ's Hessian (up to the
//! factor 2 / tokens, which GPTQ's result does not depend on).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

/// Rows buffered before they are folded into the sum in one matrix product.
const PENDING_ROWS: usize = 512;

/// Second moments of a projection's input vectors.
#[derive(Debug, Clone)]
pub struct InputMoments {
    dim: usize,
    /// `[dim, dim]`, summed in f32 (sums of a few thousand products; factorised in f64).
    sum: Mat<f32>,
    /// Row-major `[rows, dim]` inputs not yet in `sum`.
    pending: Vec<f32>,
    tokens: usize,
}

impl InputMoments {
    /// Moments of `dim`-wide inputs, none seen yet.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            sum: Mat::zeros(dim, dim),
            pending: Vec::with_capacity(PENDING_ROWS * dim),
            tokens: 0,
        }
    }

    /// Input width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Input vectors seen.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Add row-major `[rows, dim]` input vectors (`rows.len()` a multiple of `dim`).
    pub fn add_rows(&mut self, rows: &[f32]) {
        assert_eq!(rows.len() % self.dim, 0, "rows of {} values", self.dim);
        self.tokens += rows.len() / self.dim;
        for chunk in rows.chunks(PENDING_ROWS * self.dim) {
            self.pending.extend_from_slice(chunk);
            if self.pending.len() >= PENDING_ROWS * self.dim {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let rows = self.pending.len() / self.dim;
        let x = MatRef::from_row_major_slice(&self.pending, rows, self.dim);
        matmul(
            self.sum.as_mut(),
            Accum::Add,
            x.transpose(),
            x,
            1.0f32,
            Par::rayon(0),
        );
        self.pending.clear();
    }

    /// `Σ x xᵀ` as f64, `[dim, dim]` row-major.
    pub fn sum_xxt(&mut self) -> Vec<f64> {
        self.flush();
        let n = self.dim;
        (0..n * n)
            .map(|k| self.sum[(k / n, k % n)] as f64)
            .collect()
    }
}
