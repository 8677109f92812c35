//! `qzhou mine`: retriever hard-negative mining with a qzhou model. Embeds the queries and a
//! corpus (through the evaluation embedding cache), retrieves each query's top-k by cosine,
//! drops its positives (and any document with a positive's text), and draws negatives from a
//! rank window with NV-Retriever's positive-aware filter (`qzhou_core::mining`). Negatives
//! already in the input (e.g. from `qzhou synth hardneg`) are kept first unless
//! `--replace-negatives`. Writes trainer retrieval JSONL (atomically: temp file + rename).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use qzhou_core::data::rng::SplitMix64;
use qzhou_core::metrics::cosine;
use qzhou_core::mining::{select_negatives, MiningOptions};
use qzhou_core::{EmbedOptions, KernelBackend, TextKind};
use serde_json::{json, Value};

use crate::backend::{BackendJob, ComputeArgs};
use crate::eval::text_pool::TextPool;
use crate::eval::{search_top_k, CachedModelArgs, Encoder};
use crate::hub::ModelArgs;

#[derive(Args, Debug)]
pub struct MineArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    /// Retrieval JSONL: `query`, `pos` (a string or a list of positives), optional `negs` and
    /// `instruction` (qzhou training records or FlagEmbedding's format).
    #[arg(long)]
    pub input: PathBuf,
    /// Corpus to mine from: JSONL with a `text` field, or plain text (one document per line).
    /// Default: every positive and negative of the input, pooled.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Output JSONL (trainer retrieval records with a `mining` report per record).
    #[arg(long)]
    pub out: PathBuf,
    /// Documents retrieved per query.
    #[arg(long, default_value_t = 200)]
    pub top_k: usize,
    /// Rank window to sample from, 0-based `start..end` (FlagEmbedding's range_for_sampling).
    #[arg(long, default_value = "10..100")]
    pub window: String,
    /// Negatives mined per query.
    #[arg(long, default_value_t = 7)]
    pub negatives: usize,
    /// Drop candidates scoring above this fraction of the positive's score (NV-Retriever's
    /// TopK-PercPos; 1.0 keeps everything below the positive).
    #[arg(long, default_value_t = 0.95)]
    pub max_positive_ratio: f32,
    /// Seed of the draw from the window.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Drop the input's own negatives instead of keeping them before the mined ones.
    #[arg(long)]
    pub replace_negatives: bool,
    /// Query instruction for records without their own (default: the model's query prompt).
    #[arg(long)]
    pub instruction: Option<String>,
    /// Embedding cache folder (default: OUT.cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    #[command(flatten)]
    pub load: CachedModelArgs,
}

/// One input record.
struct Record {
    query: String,
    positives: Vec<String>,
    negs: Vec<String>,
    instruction: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_window(text: &str) -> Result<std::ops::Range<usize>> {
    let (a, b) = text
        .split_once("..")
        .or_else(|| text.split_once('-'))
        .with_context(|| format!("--window `{text}` is not START..END"))?;
    let (start, end): (usize, usize) = (
        a.trim()
            .parse()
            .with_context(|| format!("--window start `{a}`"))?,
        b.trim()
            .parse()
            .with_context(|| format!("--window end `{b}`"))?,
    );
    if start >= end {
        bail!("--window {start}..{end} is empty");
    }
    Ok(start..end)
}

fn read_records(path: &PathBuf) -> Result<Vec<Record>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        let line = line.with_context(|| format!("{}: cannot read", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("{}: malformed JSON", at()))?;
        let query = value["query"]
            .as_str()
            .with_context(|| format!("{}: no string `query`", at()))?
            .to_string();
        let positives = strings(&value["pos"]);
        if positives.is_empty() || query.trim().is_empty() {
            bail!("{}: needs a non-empty `query` and at least one `pos`", at());
        }
        out.push(Record {
            negs: strings(&value["negs"])
                .into_iter()
                .chain(strings(&value["neg"]))
                .collect(),
            instruction: value["instruction"].as_str().map(str::to_string),
            query,
            positives,
        });
    }
    if out.is_empty() {
        bail!("{} has no records", path.display());
    }
    Ok(out)
}

fn read_corpus(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read corpus {}", path.display()))?;
    let jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json");
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if jsonl {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: malformed JSON", path.display(), n + 1))?;
            let title = v["title"].as_str().unwrap_or("");
            let body = v["text"]
                .as_str()
                .with_context(|| format!("{}:{}: no string `text`", path.display(), n + 1))?;
            out.push(format!("{title} {body}").trim().to_string());
        } else {
            out.push(line.to_string());
        }
    }
    Ok(out)
}

pub fn run(args: MineArgs) -> Result<()> {
    let options = MiningOptions {
        window: parse_window(&args.window)?,
        negatives: args.negatives,
        max_positive_ratio: args.max_positive_ratio,
    };
    if args.top_k < options.window.end {
        bail!(
            "--top-k {} retrieves fewer documents than the window's end {}",
            args.top_k,
            options.window.end
        );
    }
    if !(args.max_positive_ratio > 0.0 && args.max_positive_ratio.is_finite()) {
        bail!("--max-positive-ratio must be above 0");
    }
    let records = read_records(&args.input)?;
    let model_dir = args.source.resolve()?;
    let compute = args.compute;
    compute.dispatch(MineJob {
        args,
        options,
        records,
        model_dir,
    })
}

struct MineJob {
    args: MineArgs,
    options: MiningOptions,
    records: Vec<Record>,
    model_dir: PathBuf,
}

impl BackendJob for MineJob {
    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let a = &self.args;
        // Corpus: distinct texts, positives included (so they can be recognised and dropped).
        let mut pool = TextPool::default();
        match &a.corpus {
            Some(path) => {
                for t in read_corpus(path)? {
                    pool.id(&t);
                }
            }
            None => {
                for r in &self.records {
                    for t in r.positives.iter().chain(&r.negs) {
                        pool.id(t);
                    }
                }
            }
        }
        let positive_ids: Vec<Vec<usize>> = self
            .records
            .iter()
            .map(|r| r.positives.iter().map(|p| pool.id(p)).collect())
            .collect();
        let docs = pool.into_texts();
        if docs.len() <= self.options.window.start {
            bail!(
                "the corpus has {} documents, not more than the window's start {}",
                docs.len(),
                self.options.window.start
            );
        }

        let cache_dir = a
            .cache
            .clone()
            .unwrap_or_else(|| crate::synth::store::sibling(&a.out, ".cache"));
        let (embedder, mut cache) = a.load.load::<B>(&self.model_dir, &cache_dir, &device)?;
        let mut enc = Encoder::cached(&embedder, &mut cache, qzhou_core::PromptStyle::Space);
        let doc_options = EmbedOptions {
            kind: TextKind::Document,
            ..EmbedOptions::default()
        };
        let corpus = enc.embed(&docs, &doc_options)?;
        // Queries grouped by instruction (one embed call per distinct instruction).
        let mut queries = vec![Vec::new(); self.records.len()];
        let mut by_instruction: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for (i, r) in self.records.iter().enumerate() {
            let instruction = r.instruction.clone().or_else(|| a.instruction.clone());
            by_instruction.entry(instruction).or_default().push(i);
        }
        for (instruction, members) in &by_instruction {
            let options = EmbedOptions {
                kind: TextKind::Query,
                instruction: instruction.clone(),
                ..EmbedOptions::default()
            };
            let texts: Vec<String> = members
                .iter()
                .map(|&i| self.records[i].query.clone())
                .collect();
            for (&i, v) in members.iter().zip(enc.embed(&texts, &options)?) {
                queries[i] = v;
            }
        }
        enc.flush()?;
        let ranked = search_top_k::<B>(&queries, &corpus, a.top_k.min(docs.len()), &device)?;

        let tmp = crate::synth::store::sibling(&a.out, ".part");
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?,
        );
        let (mut mined_total, mut short, mut unscorable) = (0usize, 0usize, 0usize);
        for (i, r) in self.records.iter().enumerate() {
            let positive_score = positive_ids[i]
                .iter()
                .map(|&p| cosine(&queries[i], &corpus[p]) as f32)
                .fold(f32::INFINITY, f32::min);
            let mut rng = SplitMix64(a.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // The model scores the positive at or below zero: "95 % of the positive" means
            // nothing, so nothing is mined for this record (reported, not guessed).
            let mined = if positive_score > 0.0 {
                select_negatives(
                    &ranked[i],
                    &positive_ids[i],
                    positive_score,
                    &self.options,
                    &mut rng,
                )
                .with_context(|| format!("{}: record {}", a.input.display(), i + 1))?
            } else {
                unscorable += 1;
                Vec::new()
            };
            if mined.len() < self.options.negatives {
                short += 1;
            }
            mined_total += mined.len();
            let mut negs: Vec<String> = if a.replace_negatives {
                Vec::new()
            } else {
                r.negs.clone()
            };
            for m in &mined {
                if !negs.contains(&docs[m.doc]) {
                    negs.push(docs[m.doc].clone());
                }
            }
            let mut record = json!({
                "type": "retrieval",
                "query": r.query,
                "pos": r.positives[0],
                "negs": negs,
                "mining": {
                    "positive_score": positive_score,
                    "mined": mined.iter().map(|m| json!({"rank": m.rank, "score": m.score})).collect::<Vec<_>>(),
                },
            });
            if let Some(i) = &r.instruction {
                record["instruction"] = json!(i);
            }
            writeln!(out, "{record}")?;
        }
        out.flush()?;
        out.into_inner()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .sync_all()?;
        std::fs::rename(&tmp, &a.out)
            .with_context(|| format!("cannot write {}", a.out.display()))?;
        eprintln!(
            "mined {mined_total} negatives for {} queries over {} documents ({short} short of {}, \
             {unscorable} skipped: the model scores their positive at or below 0); wrote {}",
            self.records.len(),
            docs.len(),
            self.options.negatives,
            a.out.display()
        );
        Ok(())
    }
}
