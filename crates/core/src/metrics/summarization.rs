//! Summarization as MTEB scores it (SummEval): each machine summary's predicted quality is its
//! best cosine (and dot product) against the text's human summaries; per text, Spearman and
//! Pearson of those predictions with the human quality scores; the scores are the means over
//! texts. A text whose human scores or predictions are all equal is skipped (its correlation
//! is undefined), as MTEB does. Main score: the cosine Spearman.

use super::sts::{pearson, spearman};
use crate::error::{QzhouError, Result};

/// Mean correlations over the scored texts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SummarizationScores {
    pub cosine_spearman: f64,
    pub cosine_pearson: f64,
    pub dot_spearman: f64,
    pub dot_pearson: f64,
    /// Texts scored (the others had constant scores).
    pub texts: usize,
}

/// One text: embeddings of its human summaries, of its machine summaries, and the human
/// quality score of each machine summary.
pub struct SummarizationText<'a> {
    pub human: &'a [Vec<f32>],
    pub machine: &'a [Vec<f32>],
    pub gold: &'a [f64],
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn all_equal(x: &[f64]) -> bool {
    x.windows(2).all(|w| w[0] == w[1])
}

/// MTEB's summarization scores over `texts`.
pub fn summarization_scores(texts: &[SummarizationText<'_>]) -> Result<SummarizationScores> {
    let (mut cs, mut cp, mut ds, mut dp) = (vec![], vec![], vec![], vec![]);
    for (i, t) in texts.iter().enumerate() {
        if t.machine.len() != t.gold.len() || t.human.is_empty() {
            return Err(QzhouError::InvalidOption(format!(
                "text {i}: {} machine summaries, {} gold scores, {} human summaries",
                t.machine.len(),
                t.gold.len(),
                t.human.len()
            )));
        }
        if t.human
            .iter()
            .chain(t.machine)
            .flatten()
            .any(|v| !v.is_finite())
        {
            return Err(QzhouError::NonFinite { index: i });
        }
        let (mut cos, mut dots) = (vec![], vec![]);
        for m in t.machine {
            let nm = dot(m, m).sqrt();
            let (mut best_cos, mut best_dot) = (f64::MIN, f64::MIN);
            for h in t.human {
                let d = dot(m, h);
                let norm = (nm * dot(h, h).sqrt()).max(1e-8);
                best_cos = best_cos.max(d / norm);
                best_dot = best_dot.max(d);
            }
            cos.push(best_cos);
            dots.push(best_dot);
        }
        if all_equal(t.gold) || all_equal(&cos) || all_equal(&dots) {
            continue;
        }
        cs.push(spearman(t.gold, &cos)?);
        cp.push(pearson(t.gold, &cos)?);
        ds.push(spearman(t.gold, &dots)?);
        dp.push(pearson(t.gold, &dots)?);
    }
    if cs.is_empty() {
        return Err(QzhouError::InvalidOption(
            "no text has varying scores: summarization correlations are undefined".into(),
        ));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(SummarizationScores {
        cosine_spearman: mean(&cs),
        cosine_pearson: mean(&cp),
        dot_spearman: mean(&ds),
        dot_pearson: mean(&dp),
        texts: cs.len(),
    })
}
