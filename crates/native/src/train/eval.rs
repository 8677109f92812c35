//! The periodic evaluation hook: held-out retrieval accuracy during training (the full MTEB
//! evaluators are `qzhou eval`).

use std::io::BufReader;

use anyhow::{bail, Context, Result};
use qzhou_core::data::jsonl::{for_each_record, Malformed};
use qzhou_core::data::TrainingSample;
use qzhou_core::model::QwenEncoder;
use qzhou_core::prompts::{format_query, PromptStyle};
use qzhou_core::training::embed_texts;
use qzhou_core::KernelBackend;
use serde::Serialize;

use super::config::EvalSection;
use super::Folder;

/// Queries and the pooled candidate documents of a retrieval JSONL.
pub struct Evaluator {
    pub every: usize,
    queries: Vec<String>,
    /// Index of each query's positive in `documents`.
    positives: Vec<usize>,
    documents: Vec<String>,
}

/// What one evaluation measured.
#[derive(Debug, Serialize)]
pub struct EvalScores {
    /// Fraction of queries whose positive ranks first among all documents.
    #[serde(rename = "accuracy@1")]
    pub accuracy_at_1: f64,
    /// Mean reciprocal rank of the positive.
    pub mrr: f64,
    pub queries: usize,
    pub documents: usize,
}

impl Evaluator {
    pub fn load(section: &EvalSection) -> Result<Self> {
        let file = std::fs::File::open(&section.path)
            .with_context(|| format!("eval set: cannot open {}", section.path.display()))?;
        let mut queries = Vec::new();
        let mut positives = Vec::new();
        let mut documents: Vec<String> = Vec::new();
        let mut index = std::collections::HashMap::<String, usize>::new();
        let mut doc_id = |text: &str, documents: &mut Vec<String>| -> usize {
            *index.entry(text.to_string()).or_insert_with(|| {
                documents.push(text.to_string());
                documents.len() - 1
            })
        };
        for_each_record(
            BufReader::new(file),
            &section.path.display().to_string(),
            Malformed::Fail,
            |s: TrainingSample| {
                let TrainingSample::Retrieval(r) = s else {
                    return Err(format!(
                        "a `{}` record; the eval set holds retrieval records",
                        s.kind()
                    ));
                };
                let instruction = r.instruction.as_ref().or(section.instruction.as_ref());
                queries.push(match instruction {
                    Some(i) => format_query(i, &r.query, PromptStyle::Space),
                    None => r.query,
                });
                positives.push(doc_id(&r.pos, &mut documents));
                for n in &r.negs {
                    doc_id(n, &mut documents);
                }
                Ok(())
            },
        )?;
        if queries.is_empty() {
            bail!("eval set {} has no records", section.path.display());
        }
        Ok(Self {
            every: section.every,
            queries,
            positives,
            documents,
        })
    }

    /// Score `model` (no autodiff) on the set.
    pub(super) fn evaluate<B: KernelBackend>(
        &self,
        model: &QwenEncoder<B>,
        folder: &Folder,
        device: &B::Device,
    ) -> Result<EvalScores> {
        let embed = |texts: &[String], is_query: bool| -> Result<Vec<Vec<f32>>> {
            let pairs: Vec<(String, bool)> = texts.iter().map(|t| (t.clone(), is_query)).collect();
            let ids = folder.tokenize(&pairs)?;
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(32) {
                let seqs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                let e = embed_texts(
                    model,
                    &seqs,
                    folder.query_tokenizer.pad_id(),
                    folder.pooling,
                    device,
                );
                let d = e.dims()[1];
                let values = e
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                for row in values.chunks(d) {
                    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    out.push(row.iter().map(|x| x / norm).collect());
                }
            }
            Ok(out)
        };
        let q = embed(&self.queries, true)?;
        let docs = embed(&self.documents, false)?;
        let (mut hits, mut rr) = (0usize, 0f64);
        for (qi, qv) in q.iter().enumerate() {
            let score = |d: &Vec<f32>| qv.iter().zip(d).map(|(a, b)| a * b).sum::<f32>();
            let p = self.positives[qi];
            let positive = score(&docs[p]);
            // Rank: 1 + other documents scoring at least as high (ties count against, so a
            // collapsed model that embeds everything alike scores no hits).
            let rank = 1 + docs
                .iter()
                .enumerate()
                .filter(|&(j, d)| j != p && score(d) >= positive)
                .count();
            hits += usize::from(rank == 1);
            rr += 1.0 / rank as f64;
        }
        let n = q.len() as f64;
        Ok(EvalScores {
            accuracy_at_1: hits as f64 / n,
            mrr: rr / n,
            queries: q.len(),
            documents: docs.len(),
        })
    }
}
