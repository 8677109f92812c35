//! Pair classification (duplicate / paraphrase detection) as MTEB scores it: for each
//! similarity (cosine, dot product, and Euclidean and Manhattan distances, where lower means
//! more similar), the best accuracy and the best F1 over thresholds between distinct scores,
//! and the average precision (sklearn's step-wise AP); the main score is the max AP over the
//! similarities.

use super::paired::paired_similarities;
use crate::error::{QzhouError, Result};

/// Scores of one similarity function.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ThresholdMetrics {
    /// Best accuracy over thresholds.
    pub accuracy: f64,
    /// Best F1 over thresholds, with its precision and recall.
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    /// Average precision of the ranking.
    pub ap: f64,
}

/// Every similarity's scores and the maxima over them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PairClassificationScores {
    pub cosine: ThresholdMetrics,
    pub dot: ThresholdMetrics,
    pub euclidean: ThresholdMetrics,
    pub manhattan: ThresholdMetrics,
    /// Main score.
    pub max_ap: f64,
    pub max_accuracy: f64,
    pub max_f1: f64,
}

/// `scores` with binary `labels` (1 = same meaning); `higher_is_similar` false for distances.
pub fn threshold_metrics(
    scores: &[f64],
    labels: &[bool],
    higher_is_similar: bool,
) -> Result<ThresholdMetrics> {
    if scores.len() != labels.len() || scores.len() < 2 {
        return Err(QzhouError::InvalidOption(format!(
            "{} scores for {} labels (need at least 2 pairs)",
            scores.len(),
            labels.len()
        )));
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(QzhouError::InvalidOption(
            "a pair score is NaN or infinite".into(),
        ));
    }
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        return Err(QzhouError::InvalidOption(
            "pair classification needs both positive and negative pairs".into(),
        ));
    }
    // Most similar first; ties keep their input order (Python's stable sort).
    let mut rows: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    if higher_is_similar {
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    } else {
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let n = rows.len();
    let (mut accuracy, mut f1, mut precision, mut recall) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut tp, mut remaining_negatives) = (0usize, n - positives);
    for i in 0..n - 1 {
        if rows[i].1 {
            tp += 1;
        } else {
            remaining_negatives -= 1;
        }
        // A threshold cannot split tied scores.
        if rows[i].0 == rows[i + 1].0 {
            continue;
        }
        accuracy = accuracy.max((tp + remaining_negatives) as f64 / n as f64);
        if tp > 0 {
            let p = tp as f64 / (i + 1) as f64;
            let r = tp as f64 / positives as f64;
            let f = 2.0 * p * r / (p + r);
            if f > f1 {
                (f1, precision, recall) = (f, p, r);
            }
        }
    }
    // Average precision over distinct score values (sklearn): Σ (R_t − R_{t−1}) · P_t.
    let (mut ap, mut tp, mut seen, mut last_recall) = (0.0f64, 0usize, 0usize, 0.0f64);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && rows[j].0 == rows[i].0 {
            tp += usize::from(rows[j].1);
            seen += 1;
            j += 1;
        }
        let r = tp as f64 / positives as f64;
        ap += (r - last_recall) * (tp as f64 / seen as f64);
        last_recall = r;
        i = j;
    }
    Ok(ThresholdMetrics {
        accuracy,
        f1,
        precision,
        recall,
        ap,
    })
}

/// MTEB's pair-classification scores for embedding pairs `(first[i], second[i])`.
pub fn pair_classification_scores(
    first: &[Vec<f32>],
    second: &[Vec<f32>],
    labels: &[bool],
) -> Result<PairClassificationScores> {
    if first.len() != second.len() || first.len() != labels.len() {
        return Err(QzhouError::InvalidOption(format!(
            "{} first texts, {} second texts and {} labels",
            first.len(),
            second.len(),
            labels.len()
        )));
    }
    let p = paired_similarities(first, second)?;
    let cosine = threshold_metrics(&p.cosine, labels, true)?;
    let dot = threshold_metrics(&p.dot, labels, true)?;
    let euclidean = threshold_metrics(&p.euclidean, labels, false)?;
    let manhattan = threshold_metrics(&p.manhattan, labels, false)?;
    let all = [cosine, dot, euclidean, manhattan];
    let max = |f: fn(&ThresholdMetrics) -> f64| all.iter().map(f).fold(f64::MIN, f64::max);
    Ok(PairClassificationScores {
        max_ap: max(|m| m.ap),
        max_accuracy: max(|m| m.accuracy),
        max_f1: max(|m| m.f1),
        cosine,
        dot,
        euclidean,
        manhattan,
    })
}
