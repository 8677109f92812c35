//! Multinomial logistic regression as MTEB's classification evaluator fits it (sklearn's
//! `LogisticRegression(max_iter=100)`: softmax cross-entropy summed over samples plus
//! `‖W‖² / (2C)` with C = 1, intercepts unpenalised, L-BFGS), and MTEB's protocol around it:
//! `n_experiments` fits on `samples_per_label` training texts per label drawn by a seeded
//! shuffle, scores averaged. The optimiser is L-BFGS (memory 10, Armijo backtracking) run to
//! the same gradient tolerance (1e-4) and iteration cap, so predictions agree with sklearn's up
//! to optimiser differences; the draws use qzhou's seeded generator, not numpy's, so scores
//! match MTEB within its experiment-to-experiment spread.

use std::collections::BTreeMap;

use super::classification::{classification_scores, ClassificationScores};
use crate::data::rng::SplitMix64;
use crate::error::{QzhouError, Result};

/// A fitted model: `classes` labels, weights `[classes, dim]` row-major, intercepts.
pub struct LogisticRegression {
    classes: usize,
    dim: usize,
    weights: Vec<f64>,
    bias: Vec<f64>,
}

/// Objective and gradient at `theta` = (W row-major, then b).
fn objective(
    theta: &[f64],
    x: &[Vec<f32>],
    y: &[usize],
    k: usize,
    dim: usize,
    c: f64,
) -> (f64, Vec<f64>) {
    let (w, b) = theta.split_at(k * dim);
    let mut grad = vec![0.0; theta.len()];
    let mut loss = 0.0;
    let mut logits = vec![0.0; k];
    for (xi, &yi) in x.iter().zip(y) {
        for j in 0..k {
            logits[j] = b[j]
                + w[j * dim..(j + 1) * dim]
                    .iter()
                    .zip(xi)
                    .map(|(a, &v)| a * v as f64)
                    .sum::<f64>();
        }
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        loss += z.ln() + max - logits[yi];
        for j in 0..k {
            let p = (logits[j] - max).exp() / z - if j == yi { 1.0 } else { 0.0 };
            for (g, &v) in grad[j * dim..(j + 1) * dim].iter_mut().zip(xi) {
                *g += p * v as f64;
            }
            grad[k * dim + j] += p;
        }
    }
    for (i, &wi) in w.iter().enumerate() {
        loss += wi * wi / (2.0 * c);
        grad[i] += wi / c;
    }
    (loss, grad)
}

impl LogisticRegression {
    /// Fit on `x` (rows) with labels `y` in `0..classes`.
    pub fn fit(x: &[Vec<f32>], y: &[usize], classes: usize, max_iter: usize) -> Result<Self> {
        if x.is_empty() || x.len() != y.len() || classes < 2 {
            return Err(QzhouError::InvalidOption(format!(
                "logistic regression on {} rows, {} labels, {classes} classes",
                x.len(),
                y.len()
            )));
        }
        let dim = x[0].len();
        if x.iter().any(|r| r.len() != dim) || x.iter().flatten().any(|v| !v.is_finite()) {
            return Err(QzhouError::InvalidOption(
                "training rows differ in length or hold NaN".into(),
            ));
        }
        let n = classes * dim + classes;
        let mut theta = vec![0.0; n];
        let (mut f, mut g) = objective(&theta, x, y, classes, dim, 1.0);
        let (mut s_hist, mut y_hist): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (vec![], vec![]);
        for _ in 0..max_iter {
            if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) <= 1e-4 {
                break;
            }
            // Two-loop recursion: d = −H·g.
            let mut q = g.clone();
            let mut alphas = Vec::with_capacity(s_hist.len());
            for (s, yv) in s_hist.iter().zip(&y_hist).rev() {
                let rho = 1.0 / dot(yv, s);
                let a = rho * dot(s, &q);
                axpy(-a, yv, &mut q);
                alphas.push((rho, a));
            }
            if let (Some(s), Some(yv)) = (s_hist.last(), y_hist.last()) {
                let gamma = dot(s, yv) / dot(yv, yv);
                q.iter_mut().for_each(|v| *v *= gamma);
            }
            for ((s, yv), (rho, a)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
                let beta = rho * dot(yv, &q);
                axpy(a - beta, s, &mut q);
            }
            let d: Vec<f64> = q.iter().map(|v| -v).collect();
            let slope = dot(&g, &d);
            let d = if slope < 0.0 {
                d
            } else {
                g.iter().map(|v| -v).collect()
            };
            let slope = dot(&g, &d);
            // Armijo backtracking.
            let mut step = 1.0;
            let (mut next, mut fn_, mut gn);
            loop {
                next = theta
                    .iter()
                    .zip(&d)
                    .map(|(t, dv)| t + step * dv)
                    .collect::<Vec<_>>();
                (fn_, gn) = objective(&next, x, y, classes, dim, 1.0);
                if fn_ <= f + 1e-4 * step * slope || step < 1e-10 {
                    break;
                }
                step *= 0.5;
            }
            let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
            let yv: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
            if dot(&s, &yv) > 1e-12 {
                s_hist.push(s);
                y_hist.push(yv);
                if s_hist.len() > 10 {
                    s_hist.remove(0);
                    y_hist.remove(0);
                }
            }
            let converged = (f - fn_).abs() <= 1e-12 * f.abs().max(1.0);
            (theta, f, g) = (next, fn_, gn);
            if converged {
                break;
            }
        }
        let (w, b) = theta.split_at(classes * dim);
        Ok(Self {
            classes,
            dim,
            weights: w.to_vec(),
            bias: b.to_vec(),
        })
    }

    /// The most probable class of each row.
    pub fn predict(&self, x: &[Vec<f32>]) -> Vec<usize> {
        x.iter()
            .map(|xi| {
                (0..self.classes)
                    .map(|j| {
                        self.bias[j]
                            + self.weights[j * self.dim..(j + 1) * self.dim]
                                .iter()
                                .zip(xi)
                                .map(|(a, &v)| a * v as f64)
                                .sum::<f64>()
                    })
                    .enumerate()
                    .fold(
                        (0, f64::MIN),
                        |best, (j, s)| if s > best.1 { (j, s) } else { best },
                    )
                    .0
            })
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(yi, xi)| *yi += a * xi);
}

/// The training rows of each experiment of [`classification_experiments`]: successive seeded
/// shuffles of the row indices, keeping the first `per_label` rows of each label.
pub fn classification_draws(
    train_labels: &[String],
    per_label: usize,
    experiments: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..train_labels.len()).collect();
    let mut rng = SplitMix64(seed);
    (0..experiments)
        .map(|_| {
            for i in (1..order.len()).rev() {
                let j = rng.below(i + 1);
                order.swap(i, j);
            }
            let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
            order
                .iter()
                .copied()
                .filter(|&i| {
                    let c = taken.entry(train_labels[i].as_str()).or_default();
                    *c += 1;
                    *c <= per_label
                })
                .collect()
        })
        .collect()
}

/// MTEB's classification protocol: for each of `experiments` seeded draws of
/// `per_label` training rows per label ([`classification_draws`]), fit logistic regression,
/// predict the test rows, score; returns the mean scores. Training rows no draw picks are
/// never read (a caller may leave them empty and skip embedding them).
pub fn classification_experiments(
    train: &[Vec<f32>],
    train_labels: &[String],
    test: &[Vec<f32>],
    test_labels: &[String],
    per_label: usize,
    experiments: usize,
    seed: u64,
) -> Result<ClassificationScores> {
    if train.len() != train_labels.len() || test.len() != test_labels.len() || test.is_empty() {
        return Err(QzhouError::InvalidOption(format!(
            "{} train rows for {} labels, {} test rows for {} labels",
            train.len(),
            train_labels.len(),
            test.len(),
            test_labels.len()
        )));
    }
    if per_label == 0 || experiments == 0 {
        return Err(QzhouError::InvalidOption(
            "samples per label and experiments must be ≥ 1".into(),
        ));
    }
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for l in train_labels.iter().chain(test_labels) {
        let next = ids.len();
        ids.entry(l).or_insert(next);
    }
    if ids.len() < 2 {
        return Err(QzhouError::InvalidOption(
            "classification needs at least 2 labels".into(),
        ));
    }
    let y_train: Vec<usize> = train_labels.iter().map(|l| ids[l.as_str()]).collect();
    let y_test: Vec<usize> = test_labels.iter().map(|l| ids[l.as_str()]).collect();
    let mut total: Option<ClassificationScores> = None;
    for picked in classification_draws(train_labels, per_label, experiments, seed) {
        let x: Vec<Vec<f32>> = picked.iter().map(|&i| train[i].clone()).collect();
        let y: Vec<usize> = picked.iter().map(|&i| y_train[i]).collect();
        let model = LogisticRegression::fit(&x, &y, ids.len(), 100)?;
        let s = classification_scores(&y_test, &model.predict(test))?;
        total = Some(match total {
            None => s,
            Some(t) => ClassificationScores {
                accuracy: t.accuracy + s.accuracy,
                f1: t.f1 + s.f1,
                f1_weighted: t.f1_weighted + s.f1_weighted,
                precision: t.precision + s.precision,
                precision_weighted: t.precision_weighted + s.precision_weighted,
                recall: t.recall + s.recall,
                recall_weighted: t.recall_weighted + s.recall_weighted,
            },
        });
    }
    let t = total.expect("experiments ≥ 1");
    let e = experiments as f64;
    Ok(ClassificationScores {
        accuracy: t.accuracy / e,
        f1: t.f1 / e,
        f1_weighted: t.f1_weighted / e,
        precision: t.precision / e,
        precision_weighted: t.precision_weighted / e,
        recall: t.recall / e,
        recall_weighted: t.recall_weighted / e,
    })
}
