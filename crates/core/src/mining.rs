//! Hard-negative selection from a retriever's ranking, positive-aware (NV-Retriever's
//! TopK-PercPos, arXiv 2407.15831): candidates scoring above a fraction of the positive's
//! score are likely unlabelled positives and are dropped; negatives are drawn from a window of
//! ranks (FlagEmbedding's `range_for_sampling`), seeded.

use serde::{Deserialize, Serialize};

use crate::data::rng::SplitMix64;
use crate::error::{QzhouError, Result};

/// How negatives are picked from one query's ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiningOptions {
    /// Ranks eligible for sampling, 0-based, `start..end` over the retrieved list (positives
    /// included in the count, as FlagEmbedding counts them).
    pub window: std::ops::Range<usize>,
    /// Negatives to draw per query (fewer when fewer candidates survive).
    pub negatives: usize,
    /// Drop candidates scoring above this fraction of the positive's score (NV-Retriever:
    /// 0.95). Positive scores ≤ 0 disable the filter's meaning; they are an error.
    pub max_positive_ratio: f32,
}

impl Default for MiningOptions {
    fn default() -> Self {
        Self {
            window: 10..100,
            negatives: 7,
            max_positive_ratio: 0.95,
        }
    }
}

/// One chosen negative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MinedNegative {
    /// Document index in the corpus.
    pub doc: usize,
    /// 0-based rank in the retrieved list.
    pub rank: usize,
    /// Retriever score (cosine).
    pub score: f32,
}

/// Picks negatives for one query.
///
/// `ranked`: (document, score) by descending score (the retriever's top-k); `positives`: every
/// document that must never be a negative (the labelled positives and any document with the
/// same text); `positive_score`: the query's score with its (lowest-scoring) positive. Returns
/// up to `options.negatives` candidates from the window whose score is at most
/// `max_positive_ratio × positive_score`, drawn uniformly without replacement by `rng`, in rank
/// order.
pub fn select_negatives(
    ranked: &[(usize, f32)],
    positives: &[usize],
    positive_score: f32,
    options: &MiningOptions,
    rng: &mut SplitMix64,
) -> Result<Vec<MinedNegative>> {
    if !(positive_score.is_finite() && positive_score > 0.0) {
        return Err(QzhouError::InvalidOption(format!(
            "positive score {positive_score} is not positive: the percentage-of-positive filter needs a score above 0"
        )));
    }
    if !(options.max_positive_ratio > 0.0 && options.max_positive_ratio.is_finite()) {
        return Err(QzhouError::InvalidOption(format!(
            "max positive ratio {} must be above 0",
            options.max_positive_ratio
        )));
    }
    let ceiling = options.max_positive_ratio * positive_score;
    let mut eligible: Vec<MinedNegative> = ranked
        .iter()
        .enumerate()
        .skip(options.window.start)
        .take(options.window.end.saturating_sub(options.window.start))
        .filter(|(_, (doc, score))| !positives.contains(doc) && *score <= ceiling)
        .map(|(rank, &(doc, score))| MinedNegative { doc, rank, score })
        .collect();
    // Partial Fisher-Yates: the first `negatives` slots become a uniform sample.
    let take = options.negatives.min(eligible.len());
    for i in 0..take {
        let j = i + (rng.next() % (eligible.len() - i) as u64) as usize;
        eligible.swap(i, j);
    }
    eligible.truncate(take);
    eligible.sort_by_key(|n| n.rank);
    Ok(eligible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_positives_and_ceiling() {
        // Scores 0.99, 0.98, ... for docs 0..50.
        let ranked: Vec<(usize, f32)> = (0..50).map(|d| (d, 0.99 - d as f32 * 0.01)).collect();
        let options = MiningOptions {
            window: 2..30,
            negatives: 100,
            max_positive_ratio: 0.95,
        };
        let got = select_negatives(&ranked, &[5, 7], 0.9, &options, &mut SplitMix64(1)).unwrap();
        // Ceiling 0.855: ranks ≥ 14 (score 0.85); window ends at rank 29; 5 and 7 never.
        assert_eq!(got.first().unwrap().rank, 14);
        assert_eq!(got.last().unwrap().rank, 29);
        assert_eq!(got.len(), 16);
        assert!(got
            .iter()
            .all(|n| n.score <= 0.855 && ![5, 7].contains(&n.doc)));
        let few = MiningOptions {
            negatives: 3,
            ..options.clone()
        };
        let a = select_negatives(&ranked, &[], 0.9, &few, &mut SplitMix64(9)).unwrap();
        let b = select_negatives(&ranked, &[], 0.9, &few, &mut SplitMix64(9)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert!(select_negatives(&ranked, &[], 0.0, &few, &mut SplitMix64(9)).is_err());
    }
}
