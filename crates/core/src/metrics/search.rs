//! Exact top-k retrieval by cosine similarity without the full score matrix: the corpus is
//! scored one block at a time (`[queries, block]` on the device), the block's scores come back
//! and a linear-time selection keeps a running top k per query on the host. Memory is
//! `queries × block` scores plus `queries × k` candidates, whatever the corpus size.

use burn::prelude::*;

use crate::error::{QzhouError, Result};

/// Running best `k` candidates `(score, corpus index)` for each query.
pub struct TopK {
    k: usize,
    best: Vec<Vec<(f32, usize)>>,
}

impl TopK {
    /// Empty lists for `queries` queries.
    pub fn new(queries: usize, k: usize) -> Self {
        Self {
            k,
            best: vec![Vec::new(); queries],
        }
    }

    /// Merge candidates for query `q`, keeping the `k` best (score descending; on equal
    /// scores the larger index, as trec_eval prefers the larger id).
    fn merge(&mut self, q: usize, candidates: impl Iterator<Item = (f32, usize)>) {
        let list = &mut self.best[q];
        list.extend(candidates);
        list.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        list.truncate(self.k);
    }

    /// Per query, `(corpus index, score)` best first.
    pub fn into_results(self) -> Vec<Vec<(usize, f32)>> {
        self.best
            .into_iter()
            .map(|l| l.into_iter().map(|(s, i)| (i, s)).collect())
            .collect()
    }
}

/// Rows scaled to unit length (zero rows stay zero).
fn unit<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Score `queries` `[nq, d]` against one corpus block `[nb, d]` whose first row is corpus
/// index `offset`, merging each query's best `k` into `top`.
pub fn add_block<B: Backend>(
    top: &mut TopK,
    queries: Tensor<B, 2>,
    block: Tensor<B, 2>,
    offset: usize,
) -> Result<()> {
    let [nq, d] = queries.dims();
    let [nb, db] = block.dims();
    if d != db {
        return Err(QzhouError::InvalidOption(format!(
            "queries have {d} dimensions, the corpus {db}"
        )));
    }
    if nq != top.best.len() {
        return Err(QzhouError::InvalidOption(format!(
            "{nq} queries for a top-k of {}",
            top.best.len()
        )));
    }
    if nb == 0 {
        return Ok(());
    }
    let scores = unit(queries).matmul(unit(block).transpose());
    // Selection on the host: one pass per row keeps only scores that can enter the running
    // top k (a full device sort of every row, Burn's `topk`, was the bottleneck).
    let values = scores
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| QzhouError::Backend(format!("{e:?}")))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(QzhouError::NonFinite { index: i / nb });
    }
    for q in 0..nq {
        let row = &values[q * nb..(q + 1) * nb];
        let list = &top.best[q];
        // Below the current k-th best nothing can enter (ties may, by index order).
        let floor = if list.len() == top.k {
            list.last().map_or(f32::NEG_INFINITY, |w| w.0)
        } else {
            f32::NEG_INFINITY
        };
        let mut candidates: Vec<(f32, usize)> = row
            .iter()
            .enumerate()
            .filter(|(_, &v)| v >= floor)
            .map(|(j, &v)| (v, offset + j))
            .collect();
        if candidates.len() > top.k {
            candidates
                .select_nth_unstable_by(top.k - 1, |a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
            candidates.truncate(top.k);
        }
        top.merge(q, candidates.into_iter());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn blocked_top_k_equals_the_full_score_matrix() {
        let dev = Default::default();
        let q = Tensor::<Flex, 2>::random([7, 16], Distribution::Default, &dev);
        let corpus = Tensor::<Flex, 2>::random([103, 16], Distribution::Default, &dev);
        let mut blocked = TopK::new(7, 10);
        for start in (0..103).step_by(25) {
            let len = 25.min(103 - start);
            add_block(
                &mut blocked,
                q.clone(),
                corpus.clone().narrow(0, start, len),
                start,
            )
            .unwrap();
        }
        let mut whole = TopK::new(7, 10);
        add_block(&mut whole, q.clone(), corpus, 0).unwrap();
        let (a, b) = (blocked.into_results(), whole.into_results());
        for (x, y) in a.iter().zip(&b) {
            let ids = |v: &Vec<(usize, f32)>| v.iter().map(|p| p.0).collect::<Vec<_>>();
            assert_eq!(ids(x), ids(y));
            assert_eq!(x.len(), 10);
        }
        let mut bad = TopK::new(7, 10);
        let wrong = Tensor::<Flex, 2>::zeros([4, 8], &dev);
        assert!(add_block(&mut bad, q, wrong, 0).is_err());
    }
}
