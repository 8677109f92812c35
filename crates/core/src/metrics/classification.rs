//! Classification scores as MTEB reports them (sklearn): accuracy, and precision, recall and
//! F1 averaged over labels (`macro`) or weighted by label support (`weighted`), over the
//! labels present in the truth or the predictions; a label with no prediction (or no truth)
//! contributes 0 for the undefined ratio, as sklearn's `zero_division` default does.

use std::collections::BTreeMap;

use crate::error::{QzhouError, Result};

/// Scores of one set of predictions.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClassificationScores {
    pub accuracy: f64,
    pub f1: f64,
    pub f1_weighted: f64,
    pub precision: f64,
    pub precision_weighted: f64,
    pub recall: f64,
    pub recall_weighted: f64,
}

/// sklearn's `accuracy_score`, `{precision,recall,f1}_score(average="macro"|"weighted")`.
pub fn classification_scores(truth: &[usize], predicted: &[usize]) -> Result<ClassificationScores> {
    if truth.len() != predicted.len() || truth.is_empty() {
        return Err(QzhouError::InvalidOption(format!(
            "{} true labels for {} predictions",
            truth.len(),
            predicted.len()
        )));
    }
    // label → (true positives, predicted count, true count)
    let mut per: BTreeMap<usize, (f64, f64, f64)> = BTreeMap::new();
    let mut correct = 0usize;
    for (&t, &p) in truth.iter().zip(predicted) {
        per.entry(t).or_default().2 += 1.0;
        per.entry(p).or_default().1 += 1.0;
        if t == p {
            per.entry(t).or_default().0 += 1.0;
            correct += 1;
        }
    }
    let n = truth.len() as f64;
    let labels = per.len() as f64;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let (mut p_m, mut r_m, mut f_m, mut p_w, mut r_w, mut f_w) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &(tp, predicted, support) in per.values() {
        let p = ratio(tp, predicted);
        let r = ratio(tp, support);
        let f = ratio(2.0 * p * r, p + r);
        p_m += p / labels;
        r_m += r / labels;
        f_m += f / labels;
        p_w += p * support / n;
        r_w += r * support / n;
        f_w += f * support / n;
    }
    Ok(ClassificationScores {
        accuracy: correct as f64 / n,
        f1: f_m,
        f1_weighted: f_w,
        precision: p_m,
        precision_weighted: p_w,
        recall: r_m,
        recall_weighted: r_w,
    })
}
