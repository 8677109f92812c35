//! Clustering as MTEB scores it: cluster the embeddings into as many groups as there are
//! labels and compare with the labels by V-measure (sklearn's `v_measure_score`: the harmonic
//! mean of homogeneity and completeness, entropies in nats).
//!
//! [`clustering_experiments`] follows mteb 2.x's protocol: 10 bootstrap samples (drawn with
//! replacement, 16,384 each), each clustered by mini-batch k-means (sklearn's MiniBatchKMeans
//! update and early stop: batches of 512, k-means++ on a 3 × batch initial sample, running-mean
//! centre updates, stop after 10 batches without a better smoothed inertia; not its random
//! reassignment of near-empty centres), the main score the mean V-measure. Python's and our
//! generators differ, so scores match MTEB's within its own sample-to-sample spread, not digit
//! for digit (`tests/metrics.rs` checks that against mteb's function). [`kmeans`] is plain
//! k-means++ + Lloyd.

use std::collections::BTreeMap;

use crate::data::rng::SplitMix64;
use crate::error::{QzhouError, Result};

/// sklearn's `v_measure_score(labels_true, labels_pred)` (β = 1).
pub fn v_measure(truth: &[usize], predicted: &[usize]) -> Result<f64> {
    if truth.len() != predicted.len() {
        return Err(QzhouError::InvalidOption(format!(
            "{} true labels for {} predictions",
            truth.len(),
            predicted.len()
        )));
    }
    if truth.is_empty() {
        return Ok(1.0);
    }
    let n = truth.len() as f64;
    // Ordered maps: the sums run in one fixed order, so a score never changes between runs.
    let mut joint: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let mut by_truth: BTreeMap<usize, f64> = BTreeMap::new();
    let mut by_pred: BTreeMap<usize, f64> = BTreeMap::new();
    for (&t, &p) in truth.iter().zip(predicted) {
        *joint.entry((t, p)).or_default() += 1.0;
        *by_truth.entry(t).or_default() += 1.0;
        *by_pred.entry(p).or_default() += 1.0;
    }
    let entropy = |counts: &BTreeMap<usize, f64>| -> f64 {
        counts.values().map(|&c| -(c / n) * (c / n).ln()).sum()
    };
    let (h_truth, h_pred) = (entropy(&by_truth), entropy(&by_pred));
    let mutual: f64 = joint
        .iter()
        .map(|(&(t, p), &c)| (c / n) * ((c * n) / (by_truth[&t] * by_pred[&p])).ln())
        .sum();
    let homogeneity = if h_truth == 0.0 {
        1.0
    } else {
        mutual / h_truth
    };
    let completeness = if h_pred == 0.0 { 1.0 } else { mutual / h_pred };
    Ok(if homogeneity + completeness == 0.0 {
        0.0
    } else {
        2.0 * homogeneity * completeness / (homogeneity + completeness)
    })
}

/// Squared Euclidean distance.
fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum()
}

/// A uniform draw in [0, 1).
fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next() >> 11) as f64 / (1u64 << 53) as f64
}

/// A uniform index below `n`.
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((uniform(rng) * n as f64) as usize).min(n - 1)
}

fn check_points(points: &[Vec<f32>], k: usize) -> Result<()> {
    if k == 0 || k > points.len() {
        return Err(QzhouError::InvalidOption(format!(
            "k = {k} clusters for {} points",
            points.len()
        )));
    }
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return Err(QzhouError::InvalidOption(
            "an embedding is NaN or infinite".into(),
        ));
    }
    Ok(())
}

/// The nearest centre of `p` and its squared distance.
fn nearest_centre(p: &[f32], centres: &[Vec<f32>]) -> (usize, f64) {
    centres
        .iter()
        .enumerate()
        .map(|(c, centre)| (c, dist2(p, centre)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("k ≥ 1")
}

/// k-means++ seeding: the first centre uniform, each next one drawn with probability ∝ squared
/// distance to the nearest chosen centre.
fn kmeans_plus_plus(points: &[Vec<f32>], k: usize, rng: &mut SplitMix64) -> Vec<Vec<f32>> {
    let mut centres: Vec<Vec<f32>> = vec![points[below(rng, points.len())].clone()];
    let mut nearest: Vec<f64> = points.iter().map(|p| dist2(p, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut target = uniform(rng) * total;
            let mut chosen = points.len() - 1;
            for (i, &d) in nearest.iter().enumerate() {
                if target < d {
                    chosen = i;
                    break;
                }
                target -= d;
            }
            chosen
        } else {
            centres.len() // all points coincide with centres: any distinct index
        };
        centres.push(points[pick].clone());
        for (i, p) in points.iter().enumerate() {
            nearest[i] = nearest[i].min(dist2(p, centres.last().expect("a centre")));
        }
    }
    centres
}

/// Mini-batch k-means of `points` into `k` clusters (sklearn's MiniBatchKMeans with
/// `n_init = 1`, `max_iter = 100`, `tol = 0`, `max_no_improvement = 10`, without random
/// reassignment); returns each point's nearest final centre. Deterministic for a `seed`.
pub fn minibatch_kmeans(
    points: &[Vec<f32>],
    k: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    check_points(points, k)?;
    let n = points.len();
    let batch_size = batch_size.clamp(1, n);
    let mut rng = SplitMix64(seed);
    // Seeding on a random sample of 3 × batch points (at least k).
    let init_size = (3 * batch_size).max(k).min(n);
    let init: Vec<Vec<f32>> = (0..init_size)
        .map(|_| points[below(&mut rng, n)].clone())
        .collect();
    let mut centres = kmeans_plus_plus(&init, k, &mut rng);
    let mut weights = vec![0f64; k];
    let steps = (100 * n) / batch_size;
    let alpha = (batch_size as f64 * 2.0 / (n as f64 + 1.0)).min(1.0);
    let (mut ewa, mut ewa_min, mut no_improvement) = (None::<f64>, f64::INFINITY, 0);
    for _ in 0..steps {
        let batch: Vec<usize> = (0..batch_size).map(|_| below(&mut rng, n)).collect();
        let mut sums = vec![vec![0f64; points[0].len()]; k];
        let mut counts = vec![0f64; k];
        let mut inertia = 0.0;
        for &i in &batch {
            let (c, d) = nearest_centre(&points[i], &centres);
            inertia += d;
            counts[c] += 1.0;
            for (s, &v) in sums[c].iter_mut().zip(&points[i]) {
                *s += v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0.0 {
                let total = weights[c] + counts[c];
                for (x, s) in centres[c].iter_mut().zip(&sums[c]) {
                    *x = ((*x as f64 * weights[c] + s) / total) as f32;
                }
                weights[c] = total;
            }
        }
        // sklearn's early stop: exponentially smoothed batch inertia, 10 steps without a minimum.
        let batch_inertia = inertia / batch_size as f64;
        let smoothed = match ewa {
            None => batch_inertia,
            Some(e) => e * (1.0 - alpha) + batch_inertia * alpha,
        };
        ewa = Some(smoothed);
        if smoothed < ewa_min {
            ewa_min = smoothed;
            no_improvement = 0;
        } else {
            no_improvement += 1;
            if no_improvement >= 10 {
                break;
            }
        }
    }
    Ok(points
        .iter()
        .map(|p| nearest_centre(p, &centres).0)
        .collect())
}

/// V-measures of mteb's clustering protocol: `experiments` bootstrap samples of `sample_size`
/// points drawn with replacement (seeded by `seed`), each clustered by [`minibatch_kmeans`]
/// (k = distinct labels in `truth`, batches of `batch_size`, the same `seed` for every fit as
/// mteb does) and scored against `truth`. mteb: 10 experiments × 16,384, batch 512, seed 42.
pub fn clustering_experiments(
    points: &[Vec<f32>],
    truth: &[usize],
    experiments: usize,
    sample_size: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    if points.len() != truth.len() || points.is_empty() {
        return Err(QzhouError::InvalidOption(format!(
            "{} points for {} labels",
            points.len(),
            truth.len()
        )));
    }
    let mut rng = SplitMix64(seed ^ 0x5eed_c1a5);
    (0..experiments)
        .map(|_| {
            let drawn: Vec<usize> = (0..sample_size)
                .map(|_| below(&mut rng, points.len()))
                .collect();
            let sample: Vec<Vec<f32>> = drawn.iter().map(|&i| points[i].clone()).collect();
            let labels: Vec<usize> = drawn.iter().map(|&i| truth[i]).collect();
            let k = labels
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let predicted = minibatch_kmeans(&sample, k, batch_size, seed)?;
            v_measure(&labels, &predicted)
        })
        .collect()
}

/// k-means (k-means++ seeding, Lloyd iterations until no assignment changes or `max_iter`)
/// of `points` into `k` clusters; returns each point's cluster. Deterministic for a `seed`.
pub fn kmeans(points: &[Vec<f32>], k: usize, seed: u64, max_iter: usize) -> Result<Vec<usize>> {
    check_points(points, k)?;
    let mut rng = SplitMix64(seed);
    let mut centres = kmeans_plus_plus(points, k, &mut rng);
    let dim = points[0].len();
    let mut assignment = vec![usize::MAX; points.len()];
    for _ in 0..max_iter.max(1) {
        let mut changed = false;
        for (i, p) in points.iter().enumerate() {
            let best = nearest_centre(p, &centres).0;
            if assignment[i] != best {
                assignment[i] = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0f64; dim]; k];
        let mut counts = vec![0usize; k];
        for (p, &c) in points.iter().zip(&assignment) {
            counts[c] += 1;
            for (s, &v) in sums[c].iter_mut().zip(p) {
                *s += v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centres[c] = sums[c]
                    .iter()
                    .map(|s| (s / counts[c] as f64) as f32)
                    .collect();
            }
        }
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_measure_by_hand() {
        // Perfect (up to renaming) = 1; everything in one cluster = 0.
        assert!((v_measure(&[0, 0, 1, 1], &[5, 5, 3, 3]).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(v_measure(&[0, 0, 1, 1], &[0, 0, 0, 0]).unwrap(), 0.0);
        assert!(v_measure(&[0, 1], &[0]).is_err());
    }

    #[test]
    fn kmeans_separates_clear_clusters() {
        let mut points = Vec::new();
        let mut truth = Vec::new();
        for c in 0..3 {
            for i in 0..20 {
                let j = i as f32 * 0.01;
                points.push(vec![c as f32 * 10.0 + j, -(c as f32) * 5.0 - j]);
                truth.push(c);
            }
        }
        let found = kmeans(&points, 3, 7, 100).unwrap();
        assert!((v_measure(&truth, &found).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(found, kmeans(&points, 3, 7, 100).unwrap());
        assert!(kmeans(&points, 0, 7, 10).is_err());
    }
}
