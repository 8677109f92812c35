//! `qzhou eval`: MTEB-style evaluation of a model on local task manifests, offline, with an
//! on-disk embedding cache; results in MTEB's result-file format plus a printed table.
//!
//! Task types: STS, pair classification, retrieval, reranking, classification (logistic
//! regression, MTEB's protocol) and clustering (k-means, V-measure); summarization's metric is
//! in `qzhou_core::metrics` but has no manifest format yet. Instructions: a task's QZhou preset (`task = "STSBenchmark"`) with
//! its side rule, or the manifest's own `instruction` / `apply_to`.

mod cache;
pub use cache::model_fingerprint;
pub mod manifest;
mod table;
pub(crate) mod text_pool;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use clap::Args;
use qzhou_core::metrics::{
    add_block, classification_draws, classification_experiments, clustering_experiments, cosine,
    evaluate_retrieval, pair_classification_scores, sts_scores, Qrels, RetrievalScores, Run, TopK,
};
use qzhou_core::prompts::{task_instruction, InstructionSide};
use qzhou_core::{EmbedOptions, Embedder, KernelBackend, LoadOptions, PromptStyle, TextKind};
use serde_json::{json, Value};

use crate::backend::{BackendJob, ComputeArgs};
use crate::hub::ModelArgs;
use crate::model_form::FormOverrides;
use cache::EmbeddingCache;
use manifest::{EvalType, Manifest, Row};

/// Cutoffs reported for retrieval and reranking (mteb's).
const KS: [usize; 6] = [1, 3, 5, 10, 100, 1000];

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    /// Folder of task manifests (`*.toml`; see `tasks/`).
    #[arg(long)]
    pub manifest_dir: PathBuf,
    /// Only these tasks (manifest `name`s), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Results folder: one `<task>.json` per task (MTEB's format) and `summary.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Embedding cache folder (default: OUT/cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    #[command(flatten)]
    pub load: CachedModelArgs,
    /// Query template: `space` = "Query: {text}" (QZhou evaluation) or `no-space`.
    #[arg(long, default_value = "space", value_parser = ["space", "no-space"])]
    pub prompt_style: String,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let mut manifests = Vec::new();
    let entries = std::fs::read_dir(&args.manifest_dir).with_context(|| {
        format!(
            "cannot read manifest folder {}",
            args.manifest_dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for p in paths {
        manifests.push(Manifest::load(&p)?);
    }
    for wanted in &args.tasks {
        if !manifests.iter().any(|m| &m.name == wanted) {
            let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
            bail!(
                "no task `{wanted}` in {} (have: {})",
                args.manifest_dir.display(),
                names.join(", ")
            );
        }
    }
    if !args.tasks.is_empty() {
        manifests.retain(|m| args.tasks.contains(&m.name));
    }
    if manifests.is_empty() {
        bail!(
            "no task manifests (*.toml) in {}",
            args.manifest_dir.display()
        );
    }
    let model_dir = args.source.resolve()?;
    let compute = args.compute;
    compute.dispatch(EvalJob {
        args,
        manifests,
        model_dir,
    })
}

struct EvalJob {
    args: EvalArgs,
    manifests: Vec<Manifest>,
    model_dir: PathBuf,
}

/// Loading flags of the commands that embed through the cache (`eval`, `mine`).
#[derive(Args, Debug)]
pub struct CachedModelArgs {
    /// Padded-token budget of one forward pass.
    #[arg(long, default_value_t = qzhou_core::embedder::DEFAULT_BATCH_TOKENS)]
    pub batch_tokens: usize,
    /// Max tokens per text (default: the model's).
    #[arg(long)]
    pub max_length: Option<usize>,
    #[command(flatten)]
    pub form: FormOverrides,
}

impl CachedModelArgs {
    /// The model of `model_dir` on `device`, and its embedding cache in `cache_dir`.
    pub(crate) fn load<B: KernelBackend>(
        &self,
        model_dir: &std::path::Path,
        cache_dir: &std::path::Path,
        device: &B::Device,
    ) -> Result<(Embedder<B>, EmbeddingCache)> {
        let load = LoadOptions {
            batch_tokens: self.batch_tokens,
            max_length: self.max_length,
            attention: self.form.attention()?,
            pooling: self.form.pooling()?,
            ..LoadOptions::default()
        };
        let embedder = Embedder::<B>::from_dir(model_dir, device, &load)
            .with_context(|| format!("loading {}", model_dir.display()))?;
        // The same files in another form (overrides, max length) give other vectors.
        let form = format!(
            "attention={} pooling={} normalize={} max_length={}",
            embedder.attention(),
            embedder.pooling(),
            embedder.normalize(),
            embedder.tokenizer().max_length()
        );
        let cache = EmbeddingCache::open(cache_dir, &model_fingerprint(model_dir, &form)?)?;
        Ok((embedder, cache))
    }
}

/// Embeds through the cache, if any.
pub(crate) struct Encoder<'a, B: KernelBackend> {
    embedder: &'a Embedder<B>,
    cache: Option<&'a mut EmbeddingCache>,
    style: PromptStyle,
    fresh: usize,
}

impl<'a, B: KernelBackend> Encoder<'a, B> {
    /// An encoder of `embedder` through `cache`.
    pub(crate) fn cached(
        embedder: &'a Embedder<B>,
        cache: &'a mut EmbeddingCache,
        style: PromptStyle,
    ) -> Self {
        Self {
            embedder,
            cache: Some(cache),
            style,
            fresh: 0,
        }
    }

    /// Write the cache's new entries to disk.
    pub(crate) fn flush(&mut self) -> Result<()> {
        match self.cache.as_deref_mut() {
            Some(c) => c.flush(),
            None => Ok(()),
        }
    }

    /// An encoder of `embedder` without a cache (a model whose weights change).
    pub(crate) fn uncached(embedder: &'a Embedder<B>, style: PromptStyle) -> Self {
        Self {
            embedder,
            cache: None,
            style,
            fresh: 0,
        }
    }

    /// Embeddings of `texts` with `options`, from the cache where possible.
    pub(crate) fn embed(
        &mut self,
        texts: &[String],
        options: &EmbedOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let options = EmbedOptions {
            prompt_style: self.style,
            ..options.clone()
        };
        let Some(cache) = self.cache.as_deref_mut() else {
            self.fresh += texts.len();
            return embed_checked(
                self.embedder,
                texts,
                &options,
                &(0..texts.len()).collect::<Vec<_>>(),
            );
        };
        let prefix = self.embedder.prefix(&options)?;
        let keys: Vec<_> = texts
            .iter()
            .map(|t| cache.key(&format!("{prefix}{t}")))
            .collect();
        let mut missing: Vec<usize> = (0..texts.len())
            .filter(|&i| cache.get(&keys[i]).is_none())
            .collect();
        let mut unique = std::collections::HashSet::new();
        missing.retain(|&i| unique.insert(keys[i]));
        // A progress bar on a terminal (indicatif draws nothing when stderr is not one).
        let bar = if missing.len() > 256 {
            indicatif::ProgressBar::new(missing.len() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "embedding {bar:30} {pos}/{len} texts  {per_sec}  ETA {eta}",
            )
            .expect("a valid template"),
        );
        for chunk in missing.chunks(256) {
            let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
            let got = embed_checked(self.embedder, &batch, &options, chunk)?;
            for (&i, v) in chunk.iter().zip(got) {
                cache.put(keys[i], v);
            }
            self.fresh += chunk.len();
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(keys
            .iter()
            .map(|k| cache.get(k).expect("just embedded").clone())
            .collect())
    }
}

/// `embedder.embed`, with errors naming the text by its position `positions[i]` in the task.
fn embed_checked<B: KernelBackend>(
    embedder: &Embedder<B>,
    texts: &[String],
    options: &EmbedOptions,
    positions: &[usize],
) -> Result<Vec<Vec<f32>>> {
    embedder.embed(texts, options).map_err(|e| match e {
        qzhou_core::QzhouError::EmptyText { index } => {
            anyhow::anyhow!("text {} is empty", positions[index])
        }
        qzhou_core::QzhouError::NonFinite { index } => anyhow::anyhow!(
            "the embedding of text {} is not finite (NaN or infinity): the model's weights or arithmetic overflowed",
            positions[index]
        ),
        other => other.into(),
    })
}

/// Options for the two sides of a task: (query side, document side).
fn sides(m: &Manifest) -> Result<(EmbedOptions, EmbedOptions)> {
    if m.apply_to.as_deref() == Some("none") {
        // No instruction anywhere: queries embed like documents.
        let document = EmbedOptions {
            kind: TextKind::Document,
            ..EmbedOptions::default()
        };
        return Ok((document.clone(), document));
    }
    let (instruction, side) = match (&m.instruction, &m.task) {
        (Some(i), _) => (
            Some(i.clone()),
            if m.apply_to.as_deref() == Some("all") {
                InstructionSide::All
            } else {
                InstructionSide::Query
            },
        ),
        (None, Some(task)) => {
            let t = task_instruction(task).with_context(|| format!("task {}", m.name))?;
            (Some(t.instruction.clone()), t.apply_to)
        }
        (None, None) => (None, InstructionSide::Query),
    };
    let query = EmbedOptions {
        kind: TextKind::Query,
        instruction: instruction.clone(),
        ..EmbedOptions::default()
    };
    let document = match side {
        InstructionSide::All => query.clone(),
        InstructionSide::Query => EmbedOptions {
            kind: TextKind::Document,
            ..EmbedOptions::default()
        },
    };
    Ok((query, document))
}

fn first(row: &Row, key: &str) -> String {
    row[key].first().cloned().unwrap_or_default()
}

/// The first value of column `key` in every row.
fn column(rows: &[Row], key: &str) -> Vec<String> {
    rows.iter().map(|r| first(r, key)).collect()
}

/// Column `key` of a row as a number (true/yes = 1, false/no = 0).
fn number(row: &Row, key: &str) -> Result<f64> {
    let s = first(row, key);
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Ok(1.0),
        "false" | "no" => Ok(0.0),
        t => t
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .with_context(|| format!("{key} `{s}` is not a number")),
    }
}

/// Each query's top `k` documents by cosine, best first, scored on `device` in corpus blocks of
/// 16,384 (memory: queries × block, never the full score matrix).
pub(crate) fn search_top_k<E: KernelBackend>(
    queries: &[Vec<f32>],
    corpus: &[Vec<f32>],
    k: usize,
    device: &E::Device,
) -> Result<Vec<Vec<(usize, f32)>>> {
    let dim = corpus.first().map_or(0, Vec::len);
    let qt = Tensor::<E, 2>::from_data(
        TensorData::new(queries.concat(), [queries.len(), dim]),
        device,
    );
    let mut top = TopK::new(queries.len(), k);
    for (b, block) in corpus.chunks(16_384).enumerate() {
        let ct =
            Tensor::<E, 2>::from_data(TensorData::new(block.concat(), [block.len(), dim]), device);
        add_block(&mut top, qt.clone(), ct, b * 16_384)?;
    }
    Ok(top.into_results())
}

/// Queries, documents and judgments of a retrieval or reranking task.
struct RetrievalSet {
    query_ids: Vec<String>,
    query_texts: Vec<String>,
    doc_ids: Vec<String>,
    doc_texts: Vec<String>,
    qrels: Qrels,
    /// Reranking: each query's own candidates (indices into the documents).
    candidates: Vec<Vec<usize>>,
}

impl RetrievalSet {
    fn from_beir(set: manifest::BeirSet) -> Self {
        let (query_ids, query_texts): (Vec<String>, Vec<String>) = set.queries.into_iter().unzip();
        let (doc_ids, doc_texts): (Vec<String>, Vec<String>) = set.corpus.into_iter().unzip();
        let position: BTreeMap<&str, usize> = doc_ids
            .iter()
            .enumerate()
            .map(|(i, d)| (d.as_str(), i))
            .collect();
        // Reranking: each query's candidates as document indices (ids checked on reading).
        let candidates = if set.candidates.is_empty() {
            Vec::new()
        } else {
            query_ids
                .iter()
                .map(|q| {
                    set.candidates[q]
                        .iter()
                        .map(|d| position[d.as_str()])
                        .collect()
                })
                .collect()
        };
        Self {
            query_ids,
            query_texts,
            doc_ids,
            doc_texts,
            qrels: set.qrels,
            candidates,
        }
    }

    /// Triples: every distinct positive and negative forms the corpus; each query's positives
    /// are relevant (1), its negatives judged non-relevant (0).
    fn from_triples(m: &Manifest, rows: &[Row]) -> Result<Self> {
        let mut docs = text_pool::TextPool::default();
        let mut qrels = Qrels::new();
        let mut candidates: Vec<Vec<usize>> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let mut judged = BTreeMap::new();
            let mut mine = Vec::new();
            for p in &r["pos"] {
                let j = docs.id(p);
                judged.insert(format!("d{j}"), 1);
                mine.push(j);
            }
            for n in &r["neg"] {
                let j = docs.id(n);
                judged.entry(format!("d{j}")).or_insert(0);
                mine.push(j);
            }
            if !judged.values().any(|&v| v > 0) {
                bail!("task {}: query {i} has no positive", m.name);
            }
            qrels.insert(format!("q{i}"), judged);
            candidates.push(mine);
        }
        Ok(Self {
            query_ids: (0..rows.len()).map(|i| format!("q{i}")).collect(),
            query_texts: column(rows, "query"),
            doc_ids: (0..docs.len()).map(|j| format!("d{j}")).collect(),
            doc_texts: docs.into_texts(),
            qrels,
            candidates,
        })
    }
}

fn retrieval_json(s: &RetrievalScores) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (i, k) in s.ks.iter().enumerate() {
        out.insert(format!("ndcg_at_{k}"), json!(s.mean.ndcg[i]));
        out.insert(format!("map_at_{k}"), json!(s.mean.map[i]));
        out.insert(format!("recall_at_{k}"), json!(s.mean.recall[i]));
        out.insert(format!("precision_at_{k}"), json!(s.mean.precision[i]));
        out.insert(format!("mrr_at_{k}"), json!(s.mean.mrr[i]));
        out.insert(format!("hit_rate_at_{k}"), json!(s.mean.hit_rate[i]));
    }
    out
}

/// Scores of task `m` (MTEB's fields) and its main score.
pub(crate) fn score_task<E: KernelBackend>(
    m: &Manifest,
    enc: &mut Encoder<'_, E>,
    device: &E::Device,
) -> Result<(serde_json::Map<String, Value>, f64)> {
    {
        // BEIR-layout retrieval reads its own three files.
        let rows = if m.corpus.is_some() {
            Vec::new()
        } else {
            m.rows()?
        };
        let (q, d) = sides(m)?;
        Ok(match m.kind {
            EvalType::Sts => {
                let a = enc.embed(&column(&rows, "text1"), &q)?;
                let b = enc.embed(&column(&rows, "text2"), &d)?;
                let gold = rows
                    .iter()
                    .map(|r| number(r, "score"))
                    .collect::<Result<Vec<_>>>()?;
                let s = sts_scores(&a, &b, &gold)?;
                let mut out = serde_json::to_value(s)?
                    .as_object()
                    .cloned()
                    .expect("an object");
                out.insert("pearson".into(), json!(s.cosine_pearson));
                out.insert("spearman".into(), json!(s.cosine_spearman));
                (out, s.cosine_spearman)
            }
            EvalType::PairClassification => {
                let a = enc.embed(&column(&rows, "text1"), &q)?;
                let b = enc.embed(&column(&rows, "text2"), &d)?;
                let labels = rows
                    .iter()
                    .map(|r| number(r, "label").map(|v| v >= 0.5))
                    .collect::<Result<Vec<_>>>()?;
                let s = pair_classification_scores(&a, &b, &labels)?;
                let mut out = serde_json::Map::new();
                for (name, t) in [
                    ("cosine", s.cosine),
                    ("dot", s.dot),
                    ("euclidean", s.euclidean),
                    ("manhattan", s.manhattan),
                ] {
                    for (metric, v) in [
                        ("accuracy", t.accuracy),
                        ("f1", t.f1),
                        ("precision", t.precision),
                        ("recall", t.recall),
                        ("ap", t.ap),
                    ] {
                        out.insert(format!("{name}_{metric}"), json!(v));
                    }
                }
                out.insert("max_ap".into(), json!(s.max_ap));
                out.insert("max_accuracy".into(), json!(s.max_accuracy));
                out.insert("max_f1".into(), json!(s.max_f1));
                (out, s.max_ap)
            }
            EvalType::Classification => {
                let train = m.train_rows()?;
                let train_labels = column(&train, "label");
                // Embed only the rows the 10 draws pick (the rest are never read).
                let drawn: std::collections::BTreeSet<usize> =
                    classification_draws(&train_labels, 8, 10, 42)
                        .into_iter()
                        .flatten()
                        .collect();
                let texts: Vec<String> = drawn.iter().map(|&i| first(&train[i], "text")).collect();
                let mut x_train = vec![Vec::new(); train.len()];
                for (&i, v) in drawn.iter().zip(enc.embed(&texts, &q)?) {
                    x_train[i] = v;
                }
                let x_test = enc.embed(&column(&rows, "text"), &q)?;
                // MTEB: 8 training texts per label, 10 experiments, seed 42.
                let s = classification_experiments(
                    &x_train,
                    &train_labels,
                    &x_test,
                    &column(&rows, "label"),
                    8,
                    10,
                    42,
                )?;
                let out = serde_json::to_value(s)?
                    .as_object()
                    .cloned()
                    .expect("an object");
                (out, s.accuracy)
            }
            EvalType::Clustering => {
                let x = enc.embed(&column(&rows, "text"), &q)?;
                let mut ids: BTreeMap<String, usize> = BTreeMap::new();
                let truth: Vec<usize> = rows
                    .iter()
                    .map(|r| {
                        let next = ids.len();
                        *ids.entry(first(r, "label")).or_insert(next)
                    })
                    .collect();
                if ids.len() < 2 {
                    bail!("task {}: clustering needs at least 2 labels", m.name);
                }
                // mteb: 10 bootstrap samples of 16,384, mini-batch k-means (batch 512), seed 42.
                let scores = clustering_experiments(&x, &truth, 10, 16_384, 512, 42)?;
                let mean = scores.iter().sum::<f64>() / scores.len() as f64;
                let sd = (scores.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                    / scores.len() as f64)
                    .sqrt();
                let mut out = serde_json::Map::new();
                out.insert("v_measure".into(), json!(mean));
                out.insert("v_measure_std".into(), json!(sd));
                out.insert("v_measures".into(), json!(scores));
                (out, mean)
            }
            EvalType::Retrieval | EvalType::Reranking => {
                let set = if m.corpus.is_some() {
                    RetrievalSet::from_beir(m.beir()?)
                } else {
                    RetrievalSet::from_triples(m, &rows)?
                };
                let RetrievalSet {
                    query_ids,
                    query_texts,
                    doc_ids,
                    doc_texts,
                    qrels,
                    candidates,
                } = set;
                let queries = enc.embed(&query_texts, &q)?;
                let corpus = enc.embed(&doc_texts, &d)?;
                let mut run = Run::new();
                if m.kind == EvalType::Retrieval {
                    let ranked = search_top_k::<E>(&queries, &corpus, 1000, device)?;
                    for (i, hits) in ranked.into_iter().enumerate() {
                        run.insert(
                            query_ids[i].clone(),
                            hits.into_iter()
                                .map(|(j, s)| (doc_ids[j].clone(), s as f64))
                                .collect(),
                        );
                    }
                } else {
                    for (i, mine) in candidates.iter().enumerate() {
                        let scored = mine
                            .iter()
                            .map(|&j| (doc_ids[j].clone(), cosine(&queries[i], &corpus[j])))
                            .collect();
                        run.insert(query_ids[i].clone(), scored);
                    }
                }
                let scores = evaluate_retrieval(&qrels, &run, &KS)?;
                let out = retrieval_json(&scores);
                let main = if m.kind == EvalType::Retrieval {
                    "ndcg_at_10"
                } else {
                    "map_at_1000"
                };
                let value = out[main].as_f64().expect("a number");
                (out, value)
            }
        })
    }
}

impl BackendJob for EvalJob {
    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let a = &self.args;
        let cache_dir = a.cache.clone().unwrap_or_else(|| a.out.join("cache"));
        let (embedder, mut cache) = a.load.load::<B>(&self.model_dir, &cache_dir, &device)?;
        std::fs::create_dir_all(&a.out)
            .with_context(|| format!("cannot create {}", a.out.display()))?;
        let mut enc = Encoder {
            embedder: &embedder,
            cache: Some(&mut cache),
            style: a.prompt_style.parse()?,
            fresh: 0,
        };
        let mut summary = Vec::new();
        eprintln!(
            "{:<32} {:<20} {:>10} {:>9}",
            "task", "type", "main", "seconds"
        );
        for m in &self.manifests {
            let start = Instant::now();
            let (mut scores, main) = score_task::<B>(m, &mut enc, &device)
                .with_context(|| format!("task {}", m.name))?;
            if let Some(cache) = enc.cache.as_deref_mut() {
                cache.flush()?;
            }
            let seconds = start.elapsed().as_secs_f64();
            scores.insert("main_score".into(), json!(main));
            scores.insert("hf_subset".into(), json!("default"));
            scores.insert("languages".into(), json!(m.languages));
            let result = json!({
                "dataset_revision": "local",
                "task_name": m.name,
                "mteb_version": format!("qzhou {}", env!("CARGO_PKG_VERSION")),
                "scores": { m.split.clone(): [Value::Object(scores)] },
                "evaluation_time": seconds,
                "kg_co2_emissions": null,
            });
            let path = a.out.join(format!("{}.json", m.name));
            std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "{:<32} {:<20} {:>10.5} {:>9.1}",
                m.name,
                m.kind.mteb_name(),
                main,
                seconds
            );
            summary.push((m.name.clone(), m.kind.mteb_name(), main));
        }
        // Mean per task type, then the mean over types (MTEB's "Mean (TaskType)").
        let mut by_type: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (_, t, v) in &summary {
            by_type.entry(t).or_default().push(*v);
        }
        let type_means: BTreeMap<&str, f64> = by_type
            .iter()
            .map(|(t, v)| (*t, v.iter().sum::<f64>() / v.len() as f64))
            .collect();
        let mean_over_types = type_means.values().sum::<f64>() / type_means.len() as f64;
        for (t, v) in &type_means {
            eprintln!("mean {t:<27} {:>31.5}", v);
        }
        eprintln!("mean over task types {:>40.5}", mean_over_types);
        eprintln!(
            "{} texts embedded this run; the cache holds {}",
            enc.fresh,
            enc.cache.as_ref().map_or(0, |c| c.len())
        );
        let summary_json = json!({
            "model": self.model_dir.display().to_string(),
            "tasks": summary.iter().map(|(n, t, v)| json!({"task": n, "type": t, "main_score": v})).collect::<Vec<_>>(),
            "mean_per_type": type_means,
            "mean_over_types": mean_over_types,
        });
        std::fs::write(
            a.out.join("summary.json"),
            serde_json::to_vec_pretty(&summary_json)?,
        )?;
        Ok(())
    }
}
