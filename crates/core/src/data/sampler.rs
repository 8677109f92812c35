//! Homogeneous batch sampling over several datasets: every batch is drawn from one dataset
//! (so one task type and one loss), datasets are picked in proportion to configured weights,
//! and each dataset is walked in a fresh seeded permutation per epoch. The whole state is a
//! few integers ([`SamplerState`]), so a resumed run continues with exactly the same batches.
//!
//! The paper does not state its mixing (NOT FOUND in `qzhou-paper.md` §4); single-task,
//! single-dataset batches follow from its per-type losses and batch sizes, as in GTE and
//! Qwen3-Embedding.

use serde::{Deserialize, Serialize};

use super::rng::SplitMix64;
use crate::error::{QzhouError, Result};

/// The problem type of a dataset (decides its loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Retrieval InfoNCE.
    Retrieval,
    /// CoSENT.
    Pair,
    /// Classification InfoNCE.
    Classification,
}

/// One dataset in the mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Name (for logs and checkpoints).
    pub name: String,
    /// Problem type.
    pub kind: TaskKind,
    /// Number of samples.
    pub len: usize,
    /// Relative sampling weight (> 0).
    pub weight: f64,
    /// Samples per batch (≤ `len`).
    pub batch_size: usize,
    /// Instruction for this dataset's queries, if any.
    #[serde(default)]
    pub instruction: Option<String>,
}

/// One batch: sample indices into one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Index of the dataset in the sampler's list.
    pub dataset: usize,
    /// Sample indices within that dataset (distinct).
    pub indices: Vec<usize>,
}

/// Everything needed to continue sampling exactly where a run stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// Seed of the run.
    pub seed: u64,
    /// State of the generator that picks datasets.
    pub picker: u64,
    /// Per dataset: epochs started.
    pub epochs: Vec<u64>,
    /// Per dataset: position in the current epoch's permutation.
    pub cursors: Vec<usize>,
}

/// Seeded, resumable batch sampler; see the module docs.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    specs: Vec<DatasetSpec>,
    cumulative: Vec<f64>,
    state: SamplerState,
    orders: Vec<Vec<usize>>,
}

impl BatchSampler {
    /// A sampler over `specs` starting at epoch 0 with `seed`.
    pub fn new(specs: Vec<DatasetSpec>, seed: u64) -> Result<Self> {
        let n = specs.len();
        Self::resume(
            specs,
            SamplerState {
                seed,
                picker: seed ^ 0x5151_5151_5151_5151,
                epochs: vec![0; n],
                cursors: vec![0; n],
            },
        )
    }

    /// Continue from a saved `state` (same `specs` as the run that saved it).
    pub fn resume(specs: Vec<DatasetSpec>, state: SamplerState) -> Result<Self> {
        if specs.is_empty() {
            return Err(QzhouError::InvalidOption(
                "no datasets to sample from".into(),
            ));
        }
        for s in &specs {
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(QzhouError::InvalidOption(format!(
                    "dataset `{}`: weight must be a positive number, got {}",
                    s.name, s.weight
                )));
            }
            if s.batch_size == 0 || s.batch_size > s.len {
                return Err(QzhouError::InvalidOption(format!(
                    "dataset `{}`: batch size {} must be between 1 and its {} samples",
                    s.name, s.batch_size, s.len
                )));
            }
        }
        if state.epochs.len() != specs.len() || state.cursors.len() != specs.len() {
            return Err(QzhouError::InvalidOption(format!(
                "sampler state is for {} datasets, the run has {}",
                state.epochs.len(),
                specs.len()
            )));
        }
        let total: f64 = specs.iter().map(|s| s.weight).sum();
        let mut acc = 0.0;
        let cumulative = specs
            .iter()
            .map(|s| {
                acc += s.weight / total;
                acc
            })
            .collect();
        let orders = (0..specs.len())
            .map(|d| permutation(specs[d].len, state.seed, d, state.epochs[d]))
            .collect();
        Ok(Self {
            specs,
            cumulative,
            state,
            orders,
        })
    }

    /// The datasets.
    pub fn specs(&self) -> &[DatasetSpec] {
        &self.specs
    }

    /// The state to save with a checkpoint.
    pub fn state(&self) -> &SamplerState {
        &self.state
    }

    /// The next batch. A dataset's epoch ends when fewer than a batch of its samples remain
    /// (the remainder is dropped); the next epoch uses a new permutation.
    pub fn next_batch(&mut self) -> Batch {
        let mut picker = SplitMix64(self.state.picker);
        let u = (picker.next() >> 11) as f64 / (1u64 << 53) as f64;
        self.state.picker = picker.0;
        let d = self
            .cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.specs.len() - 1);
        let size = self.specs[d].batch_size;
        if self.state.cursors[d] + size > self.specs[d].len {
            self.state.epochs[d] += 1;
            self.state.cursors[d] = 0;
            self.orders[d] =
                permutation(self.specs[d].len, self.state.seed, d, self.state.epochs[d]);
        }
        let start = self.state.cursors[d];
        self.state.cursors[d] += size;
        Batch {
            dataset: d,
            indices: self.orders[d][start..start + size].to_vec(),
        }
    }
}

/// The seeded Fisher–Yates permutation of `0..len` for (`seed`, dataset, epoch).
fn permutation(len: usize, seed: u64, dataset: usize, epoch: u64) -> Vec<usize> {
    let mut rng = SplitMix64(
        seed ^ (dataset as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ epoch.rotate_left(32),
    );
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<DatasetSpec> {
        vec![
            DatasetSpec {
                name: "retrieval".into(),
                kind: TaskKind::Retrieval,
                len: 100,
                weight: 3.0,
                batch_size: 8,
                instruction: Some("Given a query, retrieve passages".into()),
            },
            DatasetSpec {
                name: "sts".into(),
                kind: TaskKind::Pair,
                len: 50,
                weight: 1.0,
                batch_size: 16,
                instruction: None,
            },
        ]
    }

    #[test]
    fn batches_are_single_dataset_and_epochs_cover_each_sample_once() {
        let mut s = BatchSampler::new(specs(), 1).unwrap();
        let mut seen = [vec![0usize; 100], vec![0usize; 50]];
        let mut batches = [0usize; 2];
        // Stop before either dataset starts a second epoch: 12 batches of 8, 3 of 16.
        while batches[0] < 12 || batches[1] < 3 {
            let b = s.next_batch();
            if (b.dataset == 0 && batches[0] == 12) || (b.dataset == 1 && batches[1] == 3) {
                continue;
            }
            assert_eq!(b.indices.len(), s.specs()[b.dataset].batch_size);
            for &i in &b.indices {
                seen[b.dataset][i] += 1;
            }
            batches[b.dataset] += 1;
        }
        assert!(
            seen.iter().flatten().all(|&c| c <= 1),
            "a sample repeated within an epoch"
        );
        assert_eq!(seen[0].iter().sum::<usize>(), 96);
        assert_eq!(seen[1].iter().sum::<usize>(), 48);
    }

    #[test]
    fn datasets_are_picked_in_proportion_to_their_weights() {
        let mut s = BatchSampler::new(specs(), 9).unwrap();
        let n = 20_000;
        let first = (0..n).filter(|_| s.next_batch().dataset == 0).count();
        let share = first as f64 / n as f64;
        // Expected 0.75; the binomial standard deviation is 0.003.
        assert!((share - 0.75).abs() < 0.015, "share {share}");
    }

    #[test]
    fn same_seed_same_batches_and_resume_continues_exactly() {
        let mut a = BatchSampler::new(specs(), 5).unwrap();
        let mut b = BatchSampler::new(specs(), 5).unwrap();
        let first: Vec<Batch> = (0..40).map(|_| a.next_batch()).collect();
        assert_eq!(first, (0..40).map(|_| b.next_batch()).collect::<Vec<_>>());
        let saved = serde_json::to_string(a.state()).unwrap();
        let rest: Vec<Batch> = (0..40).map(|_| a.next_batch()).collect();
        let state: SamplerState = serde_json::from_str(&saved).unwrap();
        let mut resumed = BatchSampler::resume(specs(), state).unwrap();
        assert_eq!(
            rest,
            (0..40).map(|_| resumed.next_batch()).collect::<Vec<_>>()
        );
        let mut other = BatchSampler::new(specs(), 6).unwrap();
        assert_ne!(
            first,
            (0..40).map(|_| other.next_batch()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_specs_are_errors() {
        let mut bad = specs();
        bad[1].batch_size = 51;
        let err = BatchSampler::new(bad, 0).unwrap_err();
        assert!(err.to_string().contains("`sts`"), "{err}");
        let mut bad = specs();
        bad[0].weight = 0.0;
        assert!(BatchSampler::new(bad, 0).is_err());
        assert!(BatchSampler::new(Vec::new(), 0).is_err());
        let state = BatchSampler::new(specs(), 0).unwrap().state().clone();
        assert!(BatchSampler::resume(specs()[..1].to_vec(), state).is_err());
    }
}
