//! Exact top-k retrieval by cosine similarity without the full score matrix: the corpus is
//! scored one block at a time (`[queries, block]` on the device), the block's scores come back
//! and a linear-time selection keeps a running top k per query on the host. Memory is
//! `queries × block` scores plus `queries × k` candidates, whatever the corpus size.

use burn::prelude::*;

use crate::error::{QzhouError, Result};
use crate::kernels::KernelBackend;

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

    /// Per query, `(corpus index, score)` best first.
    pub fn into_results(self) -> Vec<Vec<(usize, f32)>> {
        self.best
            .into_iter()
            .map(|l| l.into_iter().map(|(s, i)| (i, s)).collect())
            .collect()
    }
}

/// L2 norm of each row of `x` `[n, d]`, at least 1e-12 (so zero rows score 0), on the host.
fn row_norms<B: KernelBackend>(x: Tensor<B, 2>) -> Result<Vec<f32>> {
    B::row_norms(x)
        .clamp_min(1e-12)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| QzhouError::Backend(format!("{e:?}")))
}

/// Score `queries` `[nq, d]` against one corpus block `[nb, d]` whose first row is corpus
/// index `offset`, merging each query's best `k` into `top`.
///
/// The device computes only the raw products `queries · blockᵀ`; the cosine
/// `(q · c) / (‖q‖ ‖c‖)` is finished on the host in the same pass that selects candidates
/// (normalising the block on the device cost a full extra pass over it per block — on the CPU
/// backend a strided broadcast division slower than the product itself). Queries are
/// independent and split over threads natively.
pub fn add_block<B: KernelBackend>(
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
    let query_norms = row_norms(queries.clone())?;
    let block_norms = row_norms(block.clone())?;
    let products = queries
        .matmul(block.transpose())
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| QzhouError::Backend(format!("{e:?}")))?;
    let k = top.k;
    let merge_query = |q: usize, list: &mut Vec<(f32, usize)>| -> Result<()> {
        let row = &products[q * nb..(q + 1) * nb];
        let floor = if list.len() == k {
            list.last().map_or(f32::NEG_INFINITY, |w| w.0)
        } else {
            f32::NEG_INFINITY
        };
        let mut candidates = Vec::new();
        for (j, (&p, &n)) in row.iter().zip(&block_norms).enumerate() {
            let v = p / (query_norms[q] * n);
            if !v.is_finite() {
                return Err(QzhouError::NonFinite { index: q });
            }
            if v >= floor {
                candidates.push((v, offset + j));
            }
        }
        if candidates.len() > k {
            candidates.select_nth_unstable_by(k - 1, by_score);
            candidates.truncate(k);
        }
        list.extend(candidates);
        list.sort_by(by_score);
        list.truncate(k);
        Ok(())
    };
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        top.best
            .par_iter_mut()
            .enumerate()
            .try_for_each(|(q, list)| merge_query(q, list))
    }
    #[cfg(target_family = "wasm")]
    {
        top.best
            .iter_mut()
            .enumerate()
            .try_for_each(|(q, list)| merge_query(q, list))
    }
}

/// Best first: higher score, then — on equal scores — the larger corpus index, as trec_eval
/// prefers the larger id (a total order, so results depend on neither block size nor threads).
fn by_score(a: &(f32, usize), b: &(f32, usize)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(b.1.cmp(&a.1))
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
