//! Retrieval metrics as `trec_eval` computes them (the numbers MTEB reports through
//! pytrec_eval) — nDCG@k, MAP@k, Recall@k, P@k, success (hit rate) — plus MTEB's own MRR@k.
//!
//! Definitions, for one query with judged relevances `rel(d)` (relevant: `rel ≥ 1`) and its
//! retrieved documents ranked by score descending, **ties broken by document id descending**
//! (byte order, as `trec_eval`; MTEB's MRR does the same):
//!
//! * `nDCG@k = DCG@k / IDCG@k`, `DCG@k = Σ_{i ≤ k} max(rel(d_i), 0) / log2(i + 1)` (linear
//!   gain), IDCG over the judged relevances sorted descending, cut at `k`;
//! * `MAP@k = Σ_{i ≤ k, d_i relevant} P@i / R`, `R` = relevant documents judged for the query;
//! * `Recall@k` = relevant in the top `k` / `R`; `P@k` = relevant in the top `k` / `k`;
//! * `MRR@k` = 1 / rank of the first relevant document in the top `k` (0 if none);
//! * `HitRate@k` = 1 if any relevant document is in the top `k`.
//!
//! A query with no relevant judgement scores 0 everywhere. Averages run over the queries
//! present in both the run and the qrels, as `trec_eval` does.

use std::collections::BTreeMap;

use crate::error::{QzhouError, Result};

/// Judged relevance: query id → document id → grade (≥ 1 relevant, ≤ 0 not).
pub type Qrels = BTreeMap<String, BTreeMap<String, i32>>;

/// Retrieved documents: query id → `(document id, score)` in any order.
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

/// One query's metrics at each cutoff (same order as the `ks` asked for).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryScores {
    pub ndcg: Vec<f64>,
    pub map: Vec<f64>,
    pub recall: Vec<f64>,
    pub precision: Vec<f64>,
    pub mrr: Vec<f64>,
    pub hit_rate: Vec<f64>,
}

/// Means over the evaluated queries, and each query's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalScores {
    /// The cutoffs.
    pub ks: Vec<usize>,
    /// Mean of each metric at each cutoff.
    pub mean: QueryScores,
    /// Per query (queries in both run and qrels).
    pub per_query: BTreeMap<String, QueryScores>,
}

/// Rank `docs` as `trec_eval` does: score descending, then document id descending.
fn rank(docs: &mut [(String, f64)]) {
    docs.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .expect("scores are checked finite")
            .then_with(|| b.0.as_bytes().cmp(a.0.as_bytes()))
    });
}

/// Scores of one query: `judged` its qrels, `retrieved` its run (any order).
pub fn query_scores(
    judged: &BTreeMap<String, i32>,
    retrieved: &[(String, f64)],
    ks: &[usize],
) -> Result<QueryScores> {
    if let Some((d, s)) = retrieved.iter().find(|(_, s)| !s.is_finite()) {
        return Err(QzhouError::InvalidOption(format!(
            "document `{d}` has score {s}; scores must be finite"
        )));
    }
    let mut ranked = retrieved.to_vec();
    rank(&mut ranked);
    let rel = |d: &str| judged.get(d).copied().unwrap_or(0);
    let relevant = judged.values().filter(|&&r| r >= 1).count();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&r| r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = QueryScores {
        ndcg: Vec::with_capacity(ks.len()),
        map: Vec::with_capacity(ks.len()),
        recall: Vec::with_capacity(ks.len()),
        precision: Vec::with_capacity(ks.len()),
        mrr: Vec::with_capacity(ks.len()),
        hit_rate: Vec::with_capacity(ks.len()),
    };
    for &k in ks {
        let top = &ranked[..k.min(ranked.len())];
        let (mut dcg, mut hits, mut ap, mut first) = (0.0f64, 0usize, 0.0f64, None);
        for (i, (d, _)) in top.iter().enumerate() {
            let r = rel(d);
            if r > 0 {
                dcg += r as f64 / ((i + 2) as f64).log2();
            }
            if r >= 1 {
                hits += 1;
                ap += hits as f64 / (i + 1) as f64;
                first.get_or_insert(i + 1);
            }
        }
        let idcg: f64 = ideal
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, &r)| r as f64 / ((i + 2) as f64).log2())
            .sum();
        let per_relevant = |x: f64| {
            if relevant == 0 {
                0.0
            } else {
                x / relevant as f64
            }
        };
        out.ndcg.push(if idcg > 0.0 { dcg / idcg } else { 0.0 });
        out.map.push(per_relevant(ap));
        out.recall.push(per_relevant(hits as f64));
        out.precision.push(hits as f64 / k as f64);
        out.mrr.push(first.map_or(0.0, |r| 1.0 / r as f64));
        out.hit_rate.push(if hits > 0 { 1.0 } else { 0.0 });
    }
    Ok(out)
}

/// Evaluate `run` against `qrels` at cutoffs `ks` (each ≥ 1).
pub fn evaluate_retrieval(qrels: &Qrels, run: &Run, ks: &[usize]) -> Result<RetrievalScores> {
    if ks.is_empty() || ks.contains(&0) {
        return Err(QzhouError::InvalidOption(
            "cutoffs must be at least 1 (e.g. 1,3,5,10,100,1000)".into(),
        ));
    }
    let mut per_query = BTreeMap::new();
    for (qid, retrieved) in run {
        if let Some(judged) = qrels.get(qid) {
            let scores = query_scores(judged, retrieved, ks)
                .map_err(|e| QzhouError::InvalidOption(format!("query `{qid}`: {e}")))?;
            per_query.insert(qid.clone(), scores);
        }
    }
    if per_query.is_empty() {
        return Err(QzhouError::InvalidOption(
            "no query of the run has relevance judgements (qrels)".into(),
        ));
    }
    let n = per_query.len() as f64;
    let mean_of = |f: fn(&QueryScores) -> &Vec<f64>| -> Vec<f64> {
        (0..ks.len())
            .map(|i| per_query.values().map(|q| f(q)[i]).sum::<f64>() / n)
            .collect()
    };
    let mean = QueryScores {
        ndcg: mean_of(|q| &q.ndcg),
        map: mean_of(|q| &q.map),
        recall: mean_of(|q| &q.recall),
        precision: mean_of(|q| &q.precision),
        mrr: mean_of(|q| &q.mrr),
        hit_rate: mean_of(|q| &q.hit_rate),
    };
    Ok(RetrievalScores {
        ks: ks.to_vec(),
        mean,
        per_query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    fn docs(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    #[test]
    fn hand_computed_query() {
        // Scores c 0.9, b 0.5, a 0.5: the a/b tie goes to the larger id, so c, b, a.
        let j = judged(&[("a", 0), ("b", 1), ("c", 2), ("d", 1)]);
        let r = docs(&[("a", 0.5), ("b", 0.5), ("c", 0.9)]);
        let s = query_scores(&j, &r, &[1, 2, 3]).unwrap();
        let l2 = |i: f64| (i + 1.0).log2();
        let idcg2 = 2.0 / l2(1.0) + 1.0 / l2(2.0);
        assert!((s.ndcg[1] - (2.0 / l2(1.0) + 1.0 / l2(2.0)) / idcg2).abs() < 1e-12);
        // MAP@3: hits at ranks 1, 2 → (1/1 + 2/2) / 3 relevant.
        assert!((s.map[2] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.recall, vec![1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]);
        assert_eq!(s.precision[2], 2.0 / 3.0);
        assert_eq!(s.mrr, vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn nan_scores_and_empty_cutoffs_are_errors() {
        let q: Qrels = [("q".to_string(), judged(&[("a", 1)]))].into();
        let run: Run = [("q".to_string(), docs(&[("a", f64::NAN)]))].into();
        assert!(evaluate_retrieval(&q, &run, &[10]).is_err());
        let ok: Run = [("q".to_string(), docs(&[("a", 1.0)]))].into();
        assert!(evaluate_retrieval(&q, &ok, &[]).is_err());
        assert!(evaluate_retrieval(&q, &ok, &[0]).is_err());
        let other: Run = [("x".to_string(), docs(&[("a", 1.0)]))].into();
        assert!(evaluate_retrieval(&q, &other, &[1]).is_err());
    }
}
