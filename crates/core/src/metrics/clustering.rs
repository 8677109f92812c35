//! Clustering as MTEB scores it: cluster the embeddings into as many groups as there are
//! labels and compare with the labels by V-measure (sklearn's `v_measure_score`: the harmonic
//! mean of homogeneity and completeness, entropies in nats). MTEB clusters with sklearn's
//! MiniBatchKMeans; here k-means++ seeding + Lloyd iterations with a seeded generator, so
//! scores match MTEB's within its own seed-to-seed spread, not digit for digit.

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

/// k-means (k-means++ seeding, Lloyd iterations until no assignment changes or `max_iter`)
/// of `points` into `k` clusters; returns each point's cluster. Deterministic for a `seed`.
pub fn kmeans(points: &[Vec<f32>], k: usize, seed: u64, max_iter: usize) -> Result<Vec<usize>> {
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
    let mut rng = SplitMix64(seed);
    let mut uniform = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    // k-means++: each new centre drawn with probability ∝ squared distance to the nearest one.
    let mut centres: Vec<Vec<f32>> =
        vec![points[(uniform() * points.len() as f64) as usize % points.len()].clone()];
    let mut nearest: Vec<f64> = points.iter().map(|p| dist2(p, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut target = uniform() * total;
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
    let dim = points[0].len();
    let mut assignment = vec![usize::MAX; points.len()];
    for _ in 0..max_iter.max(1) {
        let mut changed = false;
        for (i, p) in points.iter().enumerate() {
            let best = (0..k)
                .min_by(|&a, &b| dist2(p, &centres[a]).total_cmp(&dist2(p, &centres[b])))
                .expect("k ≥ 1");
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
