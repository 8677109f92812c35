//! The periodic evaluation hook: held-out retrieval accuracy and `qzhou eval` task manifests
//! (MTEB main scores) scored with the model being trained.

use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};
use qzhou_core::data::jsonl::{for_each_record, Malformed};
use qzhou_core::data::TrainingSample;
use qzhou_core::fs::{read_optional, read_required};
use qzhou_core::model::QwenEncoder;
use qzhou_core::prompts::{format_query, PromptStyle};
use qzhou_core::sentence_transformers::SentenceTransformersFiles;
use qzhou_core::training::embed_texts;
use qzhou_core::{Embedder, KernelBackend, LoadOptions};

use crate::eval::manifest::Manifest;
use crate::eval::text_pool::TextPool;
use crate::eval::{score_task, Encoder};
use serde::Serialize;

use super::config::EvalSection;
use super::Folder;

/// What the trainer evaluates, and how often.
pub struct Evaluator {
    pub every: usize,
    held_out: Option<HeldOut>,
    tasks: Vec<Manifest>,
    /// The model folder's config.json, tokenizer.json and sentence-transformers files.
    model_files: (Vec<u8>, Vec<u8>, SentenceTransformersFiles),
}

impl Evaluator {
    pub fn load(section: &EvalSection, model_dir: &Path) -> Result<Self> {
        if section.path.is_none() && section.tasks.is_empty() {
            bail!("[eval] needs a held-out `path`, task manifests in `tasks`, or both");
        }
        let held_out = match &section.path {
            Some(p) => Some(HeldOut::load(p, section.instruction.as_ref())?),
            None => None,
        };
        let tasks = section
            .tasks
            .iter()
            .map(|p| Manifest::load(p))
            .collect::<Result<Vec<_>>>()?;
        let st = SentenceTransformersFiles::gather(|name| read_optional(model_dir.join(name)))?;
        Ok(Self {
            every: section.every,
            held_out,
            tasks,
            model_files: (
                read_required(model_dir, "config.json")?,
                read_required(model_dir, "tokenizer.json")?,
                st,
            ),
        })
    }

    /// Scores of `model` (no autodiff): the held-out fields and `tasks` = {name: main score}.
    pub(super) fn evaluate<B: KernelBackend>(
        &self,
        model: &QwenEncoder<B>,
        folder: &Folder,
        device: &B::Device,
    ) -> Result<serde_json::Value> {
        let mut out = match &self.held_out {
            Some(h) => serde_json::to_value(h.evaluate(model, folder, device)?)?,
            None => serde_json::json!({}),
        };
        if !self.tasks.is_empty() {
            let (config, tokenizer, st) = &self.model_files;
            let options = LoadOptions {
                pooling: Some(folder.pooling),
                ..LoadOptions::default()
            };
            let embedder =
                Embedder::from_model(model.clone(), config, tokenizer, st, device, &options)?;
            let mut encoder = Encoder::uncached(&embedder, PromptStyle::Space);
            let mut scores = serde_json::Map::new();
            for m in &self.tasks {
                let (_, main) = score_task::<B>(m, &mut encoder, device)
                    .with_context(|| format!("eval task {}", m.name))?;
                scores.insert(m.name.clone(), serde_json::json!(main));
            }
            out["tasks"] = serde_json::Value::Object(scores);
        }
        Ok(out)
    }
}

/// Queries and the pooled candidate documents of a retrieval JSONL.
struct HeldOut {
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

impl HeldOut {
    fn load(path: &Path, instruction: Option<&String>) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("eval set: cannot open {}", path.display()))?;
        let mut queries = Vec::new();
        let mut positives = Vec::new();
        let mut documents = TextPool::default();
        for_each_record(
            BufReader::new(file),
            &path.display().to_string(),
            Malformed::Fail,
            |s: TrainingSample| {
                let TrainingSample::Retrieval(r) = s else {
                    return Err(format!(
                        "a `{}` record; the eval set holds retrieval records",
                        s.kind()
                    ));
                };
                let instruction = r.instruction.as_ref().or(instruction);
                queries.push(match instruction {
                    Some(i) => format_query(i, &r.query, PromptStyle::Space),
                    None => r.query,
                });
                positives.push(documents.id(&r.pos));
                for n in &r.negs {
                    documents.id(n);
                }
                Ok(())
            },
        )?;
        if queries.is_empty() {
            bail!("eval set {} has no records", path.display());
        }
        Ok(Self {
            queries,
            positives,
            documents: documents.into_texts(),
        })
    }

    /// Score `model` (no autodiff) on the set.
    fn evaluate<B: KernelBackend>(
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
