//! Similarities of embedding pairs `(first[i], second[i])` as sklearn's paired functions and
//! MTEB compute them (in f64): cosine (rows normalised first, zero rows stay zero), dot
//! product, and Euclidean and Manhattan distances.

use crate::error::{QzhouError, Result};

/// One value per pair for each similarity (distances as distances, not negated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairedSimilarities {
    pub cosine: Vec<f64>,
    pub dot: Vec<f64>,
    pub euclidean: Vec<f64>,
    pub manhattan: Vec<f64>,
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    let norm = na.sqrt() * nb.sqrt();
    if norm > 0.0 {
        d / norm
    } else {
        0.0
    }
}

/// The similarities of every pair; `first` and `second` have equal lengths (the caller checks
/// them against its labels), each pair equal non-zero dimensions and finite values.
pub fn paired_similarities(first: &[Vec<f32>], second: &[Vec<f32>]) -> Result<PairedSimilarities> {
    let mut out = PairedSimilarities::default();
    for (i, (a, b)) in first.iter().zip(second).enumerate() {
        if a.len() != b.len() || a.is_empty() {
            return Err(QzhouError::InvalidOption(format!(
                "pair {i}: embeddings of {} and {} dimensions",
                a.len(),
                b.len()
            )));
        }
        if a.iter().chain(b).any(|v| !v.is_finite()) {
            return Err(QzhouError::NonFinite { index: i });
        }
        let (mut d, mut l1, mut l2) = (0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (x as f64, y as f64);
            d += x * y;
            l1 += (x - y).abs();
            l2 += (x - y) * (x - y);
        }
        out.cosine.push(cosine(a, b));
        out.dot.push(d);
        out.euclidean.push(l2.sqrt());
        out.manhattan.push(l1);
    }
    Ok(out)
}
