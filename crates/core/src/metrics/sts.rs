//! Semantic textual similarity: how well embedding similarities order sentence pairs like
//! human scores. Correlations as scipy computes them (`pearsonr`, `spearmanr` with average
//! ranks for ties); similarities as MTEB's STS evaluator: cosine, and negated Manhattan and
//! Euclidean distances. MTEB's main score is the cosine Spearman.

use super::paired::paired_similarities;
use crate::error::{QzhouError, Result};

/// Correlations of each similarity with the gold scores.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StsScores {
    pub cosine_pearson: f64,
    pub cosine_spearman: f64,
    pub manhattan_pearson: f64,
    pub manhattan_spearman: f64,
    pub euclidean_pearson: f64,
    pub euclidean_spearman: f64,
}

fn check(x: &[f64], y: &[f64]) -> Result<()> {
    if x.len() != y.len() {
        return Err(QzhouError::InvalidOption(format!(
            "correlation of {} values with {}",
            x.len(),
            y.len()
        )));
    }
    if x.len() < 2 {
        return Err(QzhouError::InvalidOption(
            "a correlation needs at least 2 pairs".into(),
        ));
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(QzhouError::InvalidOption(
            "a correlation input is NaN or infinite".into(),
        ));
    }
    Ok(())
}

/// Pearson's r of `x` and `y` (equal lengths ≥ 2, finite, neither constant).
pub fn pearson(x: &[f64], y: &[f64]) -> Result<f64> {
    check(x, y)?;
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return Err(QzhouError::InvalidOption(
            "a correlation input is constant (undefined correlation)".into(),
        ));
    }
    Ok((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// Ranks 1..=n with ties given their average rank (scipy's `rankdata(method="average")`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].partial_cmp(&x[b]).expect("finite values"));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let average = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = average;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's ρ: Pearson's r of the average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64> {
    check(x, y)?;
    pearson(&average_ranks(x), &average_ranks(y))
}

/// MTEB's STS scores for pairs `(first[i], second[i])` of embeddings with gold `scores`.
pub fn sts_scores(first: &[Vec<f32>], second: &[Vec<f32>], gold: &[f64]) -> Result<StsScores> {
    if first.len() != second.len() || first.len() != gold.len() {
        return Err(QzhouError::InvalidOption(format!(
            "{} first texts, {} second texts and {} gold scores",
            first.len(),
            second.len(),
            gold.len()
        )));
    }
    let p = paired_similarities(first, second)?;
    let (cos, man, euc) = (
        p.cosine,
        p.manhattan.iter().map(|d| -d).collect::<Vec<_>>(),
        p.euclidean.iter().map(|d| -d).collect::<Vec<_>>(),
    );
    Ok(StsScores {
        cosine_pearson: pearson(&cos, gold)?,
        cosine_spearman: spearman(&cos, gold)?,
        manhattan_pearson: pearson(&man, gold)?,
        manhattan_spearman: spearman(&man, gold)?,
        euclidean_pearson: pearson(&euc, gold)?,
        euclidean_spearman: spearman(&euc, gold)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_correlations_by_hand() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap() - 1.0).abs() < 1e-15);
        assert!((spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]).unwrap() + 1.0).abs() < 1e-15);
        assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_err());
        assert!(pearson(&[1.0], &[1.0]).is_err());
        assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
    }
}
