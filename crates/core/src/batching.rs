//! Length-sorted batching under a padded-token budget, with results returned in input order.

use burn::prelude::*;

/// Group text indices into batches: texts sorted by length (longest first), each batch padded
/// to its longest text, `batch_len × longest ≤ max_tokens` (a text longer than the budget gets
/// a batch of its own). Returns batches of indices into `lengths`.
pub fn plan_batches(lengths: &[usize], max_tokens: usize, max_batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = lengths[i].max(1);
        let new_longest = longest.max(len);
        if !current.is_empty()
            && ((current.len() + 1) * new_longest > max_tokens || current.len() >= max_batch)
        {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Right-padded token ids `[batch, longest]` and attention mask (1 = real) for `sequences`.
pub fn pad_batch<B: Backend>(
    sequences: &[&[u32]],
    pad_id: u32,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let b = sequences.len();
    let s = sequences.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad_id as i64; b * s];
    let mut mask = vec![0i64; b * s];
    for (row, seq) in sequences.iter().enumerate() {
        for (col, &id) in seq.iter().enumerate() {
            ids[row * s + col] = id as i64;
            mask[row * s + col] = 1;
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [b, s]), device),
        Tensor::from_data(TensorData::new(mask, [b, s]), device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_budget_and_cover_every_text_once() {
        let lengths = [5, 100, 7, 7, 60, 1, 30];
        let batches = plan_batches(&lengths, 128, 64);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() == 1 || b.len() * longest <= 128, "{b:?}");
        }
        assert_eq!(batches[0], vec![1]); // 100 tokens: alone
        assert_eq!(batches[1], vec![4, 6]); // 60 and 30 pad to 2 × 60 = 120 ≤ 128
        assert_eq!(batches[2], vec![2, 3, 0, 5]); // 4 × 7 = 28
    }

    #[test]
    fn max_batch_caps_the_count() {
        let batches = plan_batches(&[1; 10], 1000, 4);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
    }
}
