//! Training datasets in memory and the texts + loss of one batch.

use std::collections::HashMap;
use std::io::BufReader;

use anyhow::{bail, Context, Result};
use qzhou_core::data::jsonl::{for_each_record, ReadReport};
use qzhou_core::data::rng::SplitMix64;
use qzhou_core::data::sampler::{Batch, DatasetSpec, TaskKind};
use qzhou_core::data::TrainingSample;
use qzhou_core::prompts::{format_query, PromptStyle};

use super::config::DatasetSection;

/// One dataset's usable samples (all of one problem type).
pub struct Dataset {
    pub section: DatasetSection,
    pub kind: TaskKind,
    pub samples: Vec<TrainingSample>,
    /// Samples dropped for having fewer hard negatives than `negatives`.
    pub short_of_negatives: usize,
    pub report: ReadReport,
}

impl Dataset {
    /// Read `section.path` (streaming JSONL), keeping samples with enough negatives.
    pub fn load(section: &DatasetSection) -> Result<Self> {
        let file = std::fs::File::open(&section.path).with_context(|| {
            format!(
                "dataset `{}`: cannot open {}",
                section.name,
                section.path.display()
            )
        })?;
        let source = section.path.display().to_string();
        let mut kind: Option<TaskKind> = None;
        let mut samples = Vec::new();
        let mut short = 0usize;
        let want = section.negatives;
        let report = for_each_record(
            BufReader::new(file),
            &source,
            section.on_malformed.into(),
            |s: TrainingSample| {
                let k = match &s {
                    TrainingSample::Retrieval(_) => TaskKind::Retrieval,
                    TrainingSample::Pair(_) => TaskKind::Pair,
                    TrainingSample::Classification(_) => TaskKind::Classification,
                };
                match kind {
                    None => kind = Some(k),
                    Some(first) if first != k => {
                        return Err(format!(
                            "a `{}` record in a {first:?} dataset (one problem type per dataset)",
                            s.kind()
                        ))
                    }
                    _ => {}
                }
                if let TrainingSample::Classification(c) = &s {
                    if c.neg_labels.len() != c.negs.len() {
                        return Err(format!(
                            "{} negatives but {} neg_labels",
                            c.negs.len(),
                            c.neg_labels.len()
                        ));
                    }
                }
                let negatives = match &s {
                    TrainingSample::Retrieval(r) => r.negs.len(),
                    TrainingSample::Classification(c) => c.negs.len(),
                    TrainingSample::Pair(_) => usize::MAX,
                };
                if negatives < want {
                    short += 1;
                } else {
                    samples.push(s);
                }
                Ok(())
            },
        )
        .with_context(|| format!("dataset `{}`", section.name))?;
        let Some(kind) = kind else {
            bail!("dataset `{}`: {} has no records", section.name, source);
        };
        if samples.len() < section.batch_size {
            bail!(
                "dataset `{}`: {} usable samples (of {}; {short} with fewer than {want} negatives) \
                 is less than one batch of {}",
                section.name,
                samples.len(),
                report.records,
                section.batch_size
            );
        }
        Ok(Self {
            section: section.clone(),
            kind,
            samples,
            short_of_negatives: short,
            report,
        })
    }

    /// The sampler's view of this dataset.
    pub fn spec(&self) -> DatasetSpec {
        DatasetSpec {
            name: self.section.name.clone(),
            kind: self.kind,
            len: self.samples.len(),
            weight: self.section.weight,
            batch_size: self.section.batch_size,
            instruction: self.section.instruction.clone(),
        }
    }

    fn instruct_all(&self) -> bool {
        match self.section.instruction_side.as_deref() {
            Some(side) => side == "all",
            None => self.kind != TaskKind::Retrieval,
        }
    }

    fn with_instruction(&self, text: &str, is_query: bool) -> String {
        match &self.section.instruction {
            Some(i) if is_query || self.instruct_all() => format_query(i, text, PromptStyle::Space),
            _ => text.to_string(),
        }
    }
}

/// The texts of one batch, in loss order, and what the loss needs besides embeddings.
pub struct BatchTexts {
    /// `(text, is_query)`: queries use the query length limit, the rest the passage limit.
    pub texts: Vec<(String, bool)>,
    pub loss: LossInput,
}

/// Non-embedding inputs of each loss.
pub enum LossInput {
    /// Rows: `n` queries, then per query its positive and `k` negatives.
    Retrieval { n: usize, k: usize },
    /// Rows: `n` first texts, then `n` second texts.
    Pair { scores: Vec<f32> },
    /// Rows: `n` anchors, `n` positives, then `n·k` negatives.
    Classification {
        n: usize,
        k: usize,
        labels: Vec<usize>,
        negative_labels: Vec<usize>,
    },
}

/// `k` of `0..len` chosen by a generator seeded from (seed, step, row): the same on resume.
fn choose(len: usize, k: usize, seed: u64, step: u64, row: usize) -> Vec<usize> {
    if len == k {
        return (0..k).collect();
    }
    // SplitMix64 over a mixed seed; partial Fisher–Yates.
    let mut rng =
        SplitMix64(seed ^ step.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ (row as u64).rotate_left(29));
    let mut idx: Vec<usize> = (0..len).collect();
    for i in 0..k {
        let j = i + (rng.next() % (len - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// Texts and loss inputs of `batch` from `datasets`, for update `step` of a run seeded `seed`.
pub fn batch_texts(datasets: &[Dataset], batch: &Batch, seed: u64, step: u64) -> BatchTexts {
    let d = &datasets[batch.dataset];
    let k = d.section.negatives;
    let samples: Vec<&TrainingSample> = batch.indices.iter().map(|&i| &d.samples[i]).collect();
    let n = samples.len();
    let mut texts = Vec::new();
    match d.kind {
        TaskKind::Retrieval => {
            let rs: Vec<_> = samples
                .iter()
                .map(|s| match s {
                    TrainingSample::Retrieval(r) => r,
                    _ => unreachable!("dataset kinds are checked at load"),
                })
                .collect();
            for r in &rs {
                let instruction = r.instruction.as_ref().or(d.section.instruction.as_ref());
                let q = match instruction {
                    Some(i) => format_query(i, &r.query, PromptStyle::Space),
                    None => r.query.clone(),
                };
                texts.push((q, true));
            }
            for (row, r) in rs.iter().enumerate() {
                texts.push((d.with_instruction(&r.pos, false), false));
                for j in choose(r.negs.len(), k, seed, step, row) {
                    texts.push((d.with_instruction(&r.negs[j], false), false));
                }
            }
            BatchTexts {
                texts,
                loss: LossInput::Retrieval { n, k },
            }
        }
        TaskKind::Pair => {
            let ps: Vec<_> = samples
                .iter()
                .map(|s| match s {
                    TrainingSample::Pair(p) => p,
                    _ => unreachable!("dataset kinds are checked at load"),
                })
                .collect();
            for p in &ps {
                texts.push((d.with_instruction(&p.text1, true), true));
            }
            for p in &ps {
                texts.push((d.with_instruction(&p.text2, false), false));
            }
            BatchTexts {
                texts,
                loss: LossInput::Pair {
                    scores: ps.iter().map(|p| p.score).collect(),
                },
            }
        }
        TaskKind::Classification => {
            let cs: Vec<_> = samples
                .iter()
                .map(|s| match s {
                    TrainingSample::Classification(c) => c,
                    _ => unreachable!("dataset kinds are checked at load"),
                })
                .collect();
            let mut ids: HashMap<String, usize> = HashMap::new();
            let mut id = |l: &str| -> usize {
                let next = ids.len();
                *ids.entry(l.to_string()).or_insert(next)
            };
            let labels: Vec<usize> = cs.iter().map(|c| id(&c.label)).collect();
            for c in &cs {
                texts.push((d.with_instruction(&c.query, true), true));
            }
            for c in &cs {
                texts.push((d.with_instruction(&c.pos, false), false));
            }
            let mut negative_labels = Vec::with_capacity(n * k);
            for (row, c) in cs.iter().enumerate() {
                for j in choose(c.negs.len(), k, seed, step, row) {
                    texts.push((d.with_instruction(&c.negs[j], false), false));
                    negative_labels.push(id(&c.neg_labels[j]));
                }
            }
            BatchTexts {
                texts,
                loss: LossInput::Classification {
                    n,
                    k,
                    labels,
                    negative_labels,
                },
            }
        }
    }
}
