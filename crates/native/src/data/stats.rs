//! `qzhou data stats`: what a training JSONL holds — records per type, negatives per record,
//! and each text field's length in tokens (percentiles), the figures to look at before
//! choosing `query_max_len`, `passage_max_len` and batch sizes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use qzhou_core::data::jsonl::{for_each_record, Malformed};
use qzhou_core::data::TrainingSample;
use qzhou_core::{TextTokenizer, Truncation};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Training JSONL files (`qzhou data convert` output or hand-written).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The tokenizer lengths are counted in: a `tokenizer.json` or a model folder holding one.
    #[arg(long)]
    pub tokenizer: PathBuf,
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Token lengths of one field's texts, tokenised in batches as they stream past (only the
/// lengths are kept, not the texts).
struct FieldLengths {
    pending: Vec<String>,
    lengths: Vec<usize>,
}

impl FieldLengths {
    const BATCH: usize = 256;

    fn new() -> Self {
        Self {
            pending: Vec::with_capacity(Self::BATCH),
            lengths: Vec::new(),
        }
    }

    fn add(&mut self, text: &str, tokenizer: &TextTokenizer) -> qzhou_core::Result<()> {
        self.pending.push(text.to_string());
        if self.pending.len() == Self::BATCH {
            self.flush(tokenizer)?;
        }
        Ok(())
    }

    fn flush(&mut self, tokenizer: &TextTokenizer) -> qzhou_core::Result<()> {
        if !self.pending.is_empty() {
            let ids = tokenizer.encode(&self.pending)?;
            self.lengths.extend(ids.iter().map(Vec::len));
            self.pending.clear();
        }
        Ok(())
    }
}

pub fn run(args: StatsArgs) -> Result<()> {
    let path = if args.tokenizer.is_dir() {
        args.tokenizer.join("tokenizer.json")
    } else {
        args.tokenizer.clone()
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let tokenizer = TextTokenizer::from_json(&bytes, 1 << 24, Truncation::Truncate)?;
    for file in &args.files {
        let mut types: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut fields: BTreeMap<&'static str, FieldLengths> = BTreeMap::new();
        let mut negatives: Vec<usize> = Vec::new();
        let mut with_instruction = 0;
        let reader = BufReader::new(
            File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        );
        let name = file.display().to_string();
        for_each_record::<TrainingSample, _, _>(reader, &name, Malformed::Fail, |s| {
            *types.entry(s.kind()).or_default() += 1;
            let mut add = |field: &'static str, t: &str| {
                fields
                    .entry(field)
                    .or_insert_with(FieldLengths::new)
                    .add(t, &tokenizer)
                    .map_err(|e| e.to_string())
            };
            match s {
                TrainingSample::Retrieval(r) => {
                    add("query", &r.query)?;
                    add("pos", &r.pos)?;
                    for n in &r.negs {
                        add("neg", n)?;
                    }
                    negatives.push(r.negs.len());
                    with_instruction += r.instruction.is_some() as usize;
                }
                TrainingSample::Pair(p) => {
                    add("text1", &p.text1)?;
                    add("text2", &p.text2)?;
                }
                TrainingSample::Classification(c) => {
                    add("query", &c.query)?;
                    add("pos", &c.pos)?;
                    for n in &c.negs {
                        add("neg", n)?;
                    }
                    negatives.push(c.negs.len());
                }
            }
            Ok(())
        })?;
        let total: usize = types.values().sum();
        println!("{name}: {total} records");
        for (t, n) in &types {
            println!("  {t:<15} {n}");
        }
        if !negatives.is_empty() {
            negatives.sort_unstable();
            println!(
                "  negatives per record: min {}, median {}, max {}; {} with an instruction",
                negatives[0],
                percentile(&negatives, 50.0),
                negatives[negatives.len() - 1],
                with_instruction
            );
        }
        println!(
            "  {:<8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7}   (tokens)",
            "field", "texts", "mean", "p50", "p90", "p95", "p99", "max"
        );
        for (field, mut f) in fields {
            f.flush(&tokenizer)?;
            let mut lengths = f.lengths;
            lengths.sort_unstable();
            let mean = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
            println!(
                "  {field:<8} {:>8} {mean:>6.1} {:>6} {:>6} {:>6} {:>6} {:>7}",
                lengths.len(),
                percentile(&lengths, 50.0),
                percentile(&lengths, 90.0),
                percentile(&lengths, 95.0),
                percentile(&lengths, 99.0),
                lengths.last().copied().unwrap_or(0)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<usize> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 90.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
