//! `qzhou data convert`: public dataset files → qzhou training JSONL (`qzhou_core::data`).
//!
//! Pair kinds write every pair in both directions (the paper's pair format); retrieval kinds
//! one record per query–positive; `classification` draws a same-label positive and
//! other-label negatives with a seeded generator. Inputs are read streaming (classification
//! and BEIR keep their texts in memory: the draw and the joins need them); the output is
//! written atomically, so a failed conversion leaves no partial file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use qzhou_core::data::convert::{
    beir_samples, both_directions, classification_samples, for_each_delimited_pair_where,
    nli_score, parse_score, question_answer, reading_comprehension, title_body, PairColumns,
};
use qzhou_core::data::jsonl::{for_each_record, Malformed, ReadReport};
use qzhou_core::data::{RetrievalSample, TrainingSample};
use serde_json::Value;

use crate::output::atomic_write;

/// What the input files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// STS Benchmark TSV (.gz ok) with a header: `sentence1`, `sentence2`, `score` (0–5);
    /// `--split train` keeps one value of its `split` column. → pair, both directions.
    StsB,
    /// SICK: header `sentence_A`, `sentence_B`, `relatedness_score` (1–5); `--labels nli
    /// --field score=entailment_judgment` scores the entailment label instead. → pair.
    Sick,
    /// MSRP: header `Quality` (1 paraphrase, 0 not), `#1 String`, `#2 String`. → pair.
    Msrp,
    /// Chinese STS-B (`STS-B.*.data`): no header, `text1 \t text2 \t score`. → pair.
    StsZh,
    /// Any TSV of scored pairs: header names `text1`, `text2`, `score` (rename with
    /// `--field`, or `--no-header` and 0-based column numbers). → pair.
    PairsTsv,
    /// JSONL `{text1, text2, score}`, graded or binary (true/false, yes/no). → pair.
    PairsJsonl,
    /// NLI JSONL `{text1, text2, label}`: entailment/neutral/contradiction → 2/1/0
    /// (`--label-map` for numeric labels, e.g. `1=entailment,0=contradiction`). → pair.
    Nli,
    /// FlagEmbedding triples JSONL `{query, pos: str | [str], neg: [str]}` (optional
    /// `instruction`). → retrieval, one record per positive.
    Triples,
    /// A BEIR folder: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
    /// `text`), `qrels/<split>.tsv` or `qrels.tsv` (`query-id`, `corpus-id`, `score`). →
    /// retrieval, one record per relevant pair.
    Beir,
    /// JSONL `{title, body}`: the title retrieves its body. → retrieval.
    TitleBody,
    /// JSONL `{question, answer}` (user turn → assistant answer). → retrieval.
    Qa,
    /// JSONL `{context, question, answer}`: query = context + QZhou's reading-comprehension
    /// prompt + question, positive = answer. → retrieval.
    ReadingComprehension,
    /// JSONL `{text, label}`: a same-label positive and `--negatives` other-label negatives
    /// per text, drawn with `--seed`. → classification.
    Classification,
}

/// How a pair file's score column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Labels {
    /// A number, true/false or yes/no.
    Score,
    /// An NLI label: entailment 2, neutral 1, contradiction 0.
    Nli,
}

#[derive(Args, Debug)]
#[command(after_long_help = KINDS_HELP)]
pub struct ConvertArgs {
    /// What the inputs are (see the table below).
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// Input files (a folder for `beir`); `.gz` files are decompressed.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output training JSONL (written atomically).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Rename a column or field: `ROLE=NAME`, roles `text1`, `text2`, `score`, `label`,
    /// `query`, `pos`, `neg`, `title`, `body`, `question`, `answer`, `context`, `text`
    /// (with `--no-header`, NAME is a 0-based column number).
    #[arg(long = "field", value_name = "ROLE=NAME")]
    pub fields: Vec<String>,
    /// Keep only the rows whose `--split-column` has this value (STS-B: train, dev, test).
    #[arg(long)]
    pub split: Option<String>,
    /// The column `--split` looks at.
    #[arg(long, default_value = "split")]
    pub split_column: String,
    /// The TSV has no header line (columns are numbers).
    #[arg(long)]
    pub no_header: bool,
    /// How a pair file's score column is read.
    #[arg(long, value_enum, default_value_t = Labels::Score)]
    pub labels: Labels,
    /// Map raw labels before scoring: `1=entailment,0=contradiction` or `pos=1,neg=0`.
    #[arg(long, value_delimiter = ',')]
    pub label_map: Vec<String>,
    /// Negatives per classification record.
    #[arg(long, default_value_t = 3)]
    pub negatives: usize,
    /// Seed of the classification draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// BEIR split (`qrels/<split>.tsv`).
    #[arg(long, default_value = "train")]
    pub beir_split: String,
    /// `fail` on the first malformed line (default) or `skip` it (counted; first reasons shown).
    #[arg(long, default_value = "fail")]
    pub on_malformed: String,
}

const KINDS_HELP: &str = "\
Kinds and what they read (→ record type; pairs are written in both directions):
  sts-b                  TSV+header: sentence1, sentence2, score [split]       → pair
  sick                   TSV+header: sentence_A, sentence_B, relatedness_score → pair
  msrp                   TSV+header: Quality, #1 String, #2 String             → pair
  sts-zh                 TSV, no header: text1, text2, score                   → pair
  pairs-tsv              TSV+header: text1, text2, score                       → pair
  pairs-jsonl            JSONL: text1, text2, score                            → pair
  nli                    JSONL: text1, text2, label (entailment/neutral/contradiction) → pair 2/1/0
  triples                JSONL: query, pos (string or list), neg (list)       → retrieval
  beir                   folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv → retrieval
  title-body             JSONL: title, body                                    → retrieval
  qa                     JSONL: question, answer                               → retrieval
  reading-comprehension  JSONL: context, question, answer                      → retrieval
  classification         JSONL: text, label                                    → classification
Rename any column or field with --field ROLE=NAME (e.g. --field score=entailment_judgment).
Examples:
  qzhou data convert --kind sts-b stsbenchmark.tsv.gz --split train -o stsb.jsonl
  qzhou data convert --kind nli snli_zh.jsonl --label-map 1=entailment,0=contradiction -o nli.jsonl";

/// Column/field names by role, the kind's defaults overridden by `--field`.
struct Fields(BTreeMap<String, String>);

impl Fields {
    fn new(defaults: &[(&str, &str)], overrides: &[String]) -> Result<Self> {
        let mut map: BTreeMap<String, String> = defaults
            .iter()
            .map(|(r, n)| (r.to_string(), n.to_string()))
            .collect();
        for o in overrides {
            let (role, name) = o
                .split_once('=')
                .with_context(|| format!("--field `{o}` is not ROLE=NAME"))?;
            if !map.contains_key(role) {
                bail!(
                    "--field `{o}`: this kind has no role `{role}` (roles: {})",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            map.insert(role.to_string(), name.to_string());
        }
        Ok(Self(map))
    }
    fn get(&self, role: &str) -> &str {
        &self.0[role]
    }
}

fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// The first line of a TSV (a byte-order mark dropped).
fn header(path: &Path) -> Result<Vec<String>> {
    let mut line = String::new();
    open(path)?
        .read_line(&mut line)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(line
        .trim_start_matches('\u{feff}')
        .trim_end_matches(['\r', '\n'])
        .split('\t')
        .map(str::to_string)
        .collect())
}

/// Column number of `name` in `header` (or `name` itself as a number without a header).
fn column(header: Option<&[String]>, name: &str, path: &Path) -> Result<usize> {
    match header {
        Some(h) => h.iter().position(|c| c == name).with_context(|| {
            format!(
                "{}: no column `{name}` in the header ({})",
                path.display(),
                h.join(", ")
            )
        }),
        None => name
            .parse()
            .with_context(|| format!("column `{name}` must be a 0-based number with --no-header")),
    }
}

/// A string field of a JSON record.
fn text<'a>(record: &'a Value, field: &str) -> std::result::Result<&'a str, String> {
    match record.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("field `{field}` is {other}, not a string")),
        None => Err(format!("no field `{field}`")),
    }
}

/// A list-of-strings field (a lone string counts as a list of one; absent = empty).
fn texts(record: &Value, field: &str) -> std::result::Result<Vec<String>, String> {
    match record.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("field `{field}` holds {v}, not a string"))
            })
            .collect(),
        Some(other) => Err(format!("field `{field}` is {other}, not a list of strings")),
    }
}

/// A JSON scalar as the text a label map or score parser reads.
fn scalar(record: &Value, field: &str) -> std::result::Result<String, String> {
    match record.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        Some(other) => Err(format!("field `{field}` is {other}, not a label or score")),
        None => Err(format!("no field `{field}`")),
    }
}

/// Converts rows to samples and writes them, counting per input.
struct Writer<'a> {
    out: &'a mut dyn Write,
    written: usize,
}

impl Writer<'_> {
    fn put(&mut self, sample: TrainingSample) -> std::io::Result<()> {
        serde_json::to_writer(&mut *self.out, &sample)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let policy = match args.on_malformed.as_str() {
        "fail" => Malformed::Fail,
        "skip" => Malformed::Skip,
        other => bail!("--on-malformed `{other}` (expected fail or skip)"),
    };
    let label_map: HashMap<String, String> = args
        .label_map
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .with_context(|| format!("--label-map entry `{m}` is not RAW=LABEL"))
        })
        .collect::<Result<_>>()?;
    let labels = if args.kind == Kind::Nli {
        Labels::Nli
    } else {
        args.labels
    };
    let score = move |raw: &str| -> qzhou_core::Result<f32> {
        let raw = raw.trim();
        let mapped = label_map.get(raw).map(String::as_str).unwrap_or(raw);
        match labels {
            Labels::Score => parse_score(mapped),
            Labels::Nli => nli_score(mapped),
        }
    };
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut reports: Vec<(String, ReadReport, usize)> = Vec::new();
    atomic_write(&args.out, |w| {
        let mut writer = Writer { out: w, written: 0 };
        for input in &args.inputs {
            let before = writer.written;
            let report = convert_one(&args, input, policy, &score, &mut writer)?;
            reports.push((input.display().to_string(), report, writer.written - before));
        }
        if writer.written == 0 {
            bail!("the inputs gave no records; nothing written");
        }
        Ok(())
    })?;
    let mut total = 0;
    for (input, report, written) in &reports {
        total += written;
        let mut line = format!("{input}: {} rows -> {written} records", report.records);
        if report.filtered > 0 {
            line += &format!(", {} rows of other splits left out", report.filtered);
        }
        if report.skipped > 0 {
            line += &format!(", {} malformed rows skipped", report.skipped);
        }
        println!("{line}");
        for p in &report.problems {
            eprintln!("  skipped {p}");
        }
        if report.skipped > report.problems.len() {
            eprintln!("  ... and {} more", report.skipped - report.problems.len());
        }
    }
    println!("wrote {total} records to {}", args.out.display());
    Ok(())
}

fn convert_one(
    args: &ConvertArgs,
    input: &Path,
    policy: Malformed,
    score: &dyn Fn(&str) -> qzhou_core::Result<f32>,
    w: &mut Writer,
) -> Result<ReadReport> {
    let name = input.display().to_string();
    let io_err = |e: std::io::Error| e.to_string();
    let tsv_defaults: Option<(&[(&str, &str)], bool)> = match args.kind {
        Kind::StsB => Some((
            &[
                ("text1", "sentence1"),
                ("text2", "sentence2"),
                ("score", "score"),
            ],
            true,
        )),
        Kind::Sick => Some((
            &[
                ("text1", "sentence_A"),
                ("text2", "sentence_B"),
                ("score", "relatedness_score"),
            ],
            true,
        )),
        Kind::Msrp => Some((
            &[
                ("text1", "#1 String"),
                ("text2", "#2 String"),
                ("score", "Quality"),
            ],
            true,
        )),
        Kind::StsZh => Some((&[("text1", "0"), ("text2", "1"), ("score", "2")], false)),
        Kind::PairsTsv => Some((
            &[("text1", "text1"), ("text2", "text2"), ("score", "score")],
            !args.no_header,
        )),
        _ => None,
    };
    if let Some((defaults, has_header)) = tsv_defaults {
        let fields = Fields::new(defaults, &args.fields)?;
        let head = if has_header {
            Some(header(input)?)
        } else {
            None
        };
        let col = |role: &str| column(head.as_deref(), fields.get(role), input);
        let columns = PairColumns {
            text1: col("text1")?,
            text2: col("text2")?,
            score: col("score")?,
            header: has_header,
        };
        let keep = match &args.split {
            Some(value) => Some((
                column(head.as_deref(), &args.split_column, input)?,
                value.as_str(),
            )),
            None => None,
        };
        let mut io_failure = None;
        let report = for_each_delimited_pair_where(
            open(input)?,
            &name,
            columns,
            keep,
            policy,
            score,
            |pair| {
                for p in pair {
                    if let Err(e) = w.put(TrainingSample::Pair(p)) {
                        io_failure.get_or_insert(e);
                    }
                }
            },
        )?;
        if let Some(e) = io_failure {
            return Err(e).context("writing the output");
        }
        return Ok(report);
    }
    if args.split.is_some() {
        bail!("--split applies to TSV kinds (sts-b, sick, msrp, pairs-tsv)");
    }
    match args.kind {
        Kind::Beir => beir(args, input, w),
        Kind::Classification => {
            let fields = Fields::new(&[("text", "text"), ("label", "label")], &args.fields)?;
            let mut items = Vec::new();
            let report = for_each_record::<Value, _, _>(open(input)?, &name, policy, |r| {
                let t = text(&r, fields.get("text"))?;
                let l = scalar(&r, fields.get("label"))?;
                if t.trim().is_empty() || l.trim().is_empty() {
                    return Err("empty text or label".into());
                }
                items.push((t.to_string(), l));
                Ok(())
            })?;
            let (samples, lonely) = classification_samples(&items, args.negatives, args.seed)?;
            if lonely > 0 {
                eprintln!("{name}: {lonely} texts are the only one of their label (no positive): left out");
            }
            for s in samples {
                w.put(TrainingSample::Classification(s))?;
            }
            Ok(report)
        }
        kind => {
            let defaults: &[(&str, &str)] = match kind {
                Kind::PairsJsonl => &[("text1", "text1"), ("text2", "text2"), ("score", "score")],
                Kind::Nli => &[("text1", "text1"), ("text2", "text2"), ("label", "label")],
                Kind::Triples => &[("query", "query"), ("pos", "pos"), ("neg", "neg")],
                Kind::TitleBody => &[("title", "title"), ("body", "body")],
                Kind::Qa => &[("question", "question"), ("answer", "answer")],
                Kind::ReadingComprehension => &[
                    ("context", "context"),
                    ("question", "question"),
                    ("answer", "answer"),
                ],
                _ => unreachable!("TSV kinds, beir and classification are handled above"),
            };
            let f = Fields::new(defaults, &args.fields)?;
            let report = for_each_record::<Value, _, _>(open(input)?, &name, policy, |r| {
                let samples: Vec<TrainingSample> = match kind {
                    Kind::PairsJsonl | Kind::Nli => {
                        let raw =
                            scalar(&r, f.get(if kind == Kind::Nli { "label" } else { "score" }))?;
                        let s = score(&raw).map_err(|e| e.to_string())?;
                        both_directions(text(&r, f.get("text1"))?, text(&r, f.get("text2"))?, s)
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .map(TrainingSample::Pair)
                            .collect()
                    }
                    Kind::Triples => {
                        let query = text(&r, f.get("query"))?;
                        let pos = texts(&r, f.get("pos"))?;
                        let negs = texts(&r, f.get("neg"))?;
                        let instruction = r
                            .get("instruction")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        if query.trim().is_empty()
                            || pos.is_empty()
                            || pos.iter().any(|p| p.trim().is_empty())
                        {
                            return Err("empty query or no (non-empty) positive".into());
                        }
                        pos.into_iter()
                            .map(|p| {
                                TrainingSample::Retrieval(RetrievalSample {
                                    query: query.to_string(),
                                    pos: p,
                                    negs: negs.clone(),
                                    instruction: instruction.clone(),
                                })
                            })
                            .collect()
                    }
                    Kind::TitleBody => vec![TrainingSample::Retrieval(
                        title_body(text(&r, f.get("title"))?, text(&r, f.get("body"))?)
                            .map_err(|e| e.to_string())?,
                    )],
                    Kind::Qa => vec![TrainingSample::Retrieval(
                        question_answer(text(&r, f.get("question"))?, text(&r, f.get("answer"))?)
                            .map_err(|e| e.to_string())?,
                    )],
                    Kind::ReadingComprehension => vec![TrainingSample::Retrieval(
                        reading_comprehension(
                            text(&r, f.get("context"))?,
                            text(&r, f.get("question"))?,
                            text(&r, f.get("answer"))?,
                        )
                        .map_err(|e| e.to_string())?,
                    )],
                    _ => unreachable!(),
                };
                for s in samples {
                    w.put(s).map_err(io_err)?;
                }
                Ok(())
            })?;
            Ok(report)
        }
    }
}

/// A BEIR folder: corpus and queries by id, then qrels (`qrels/<split>.tsv` or `qrels.tsv`).
fn beir(args: &ConvertArgs, dir: &Path, w: &mut Writer) -> Result<ReadReport> {
    if !dir.is_dir() {
        bail!("{}: --kind beir takes a BEIR folder", dir.display());
    }
    let policy = Malformed::Fail;
    let mut corpus = HashMap::new();
    let corpus_path = dir.join("corpus.jsonl");
    for_each_record::<Value, _, _>(
        open(&corpus_path)?,
        &corpus_path.display().to_string(),
        policy,
        |r| {
            let id = scalar(&r, "_id")?;
            let title = r
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            corpus.insert(id, (title, text(&r, "text")?.to_string()));
            Ok(())
        },
    )?;
    let mut queries = HashMap::new();
    let queries_path = dir.join("queries.jsonl");
    for_each_record::<Value, _, _>(
        open(&queries_path)?,
        &queries_path.display().to_string(),
        policy,
        |r| {
            queries.insert(scalar(&r, "_id")?, text(&r, "text")?.to_string());
            Ok(())
        },
    )?;
    let split_file = dir.join("qrels").join(format!("{}.tsv", args.beir_split));
    let qrels_path = if split_file.exists() {
        split_file
    } else {
        dir.join("qrels.tsv")
    };
    let mut qrels = Vec::new();
    let reader = open(&qrels_path)?;
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", qrels_path.display()))?;
        if i == 0 && line.starts_with("query-id") || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = (f.len() >= 3)
            .then(|| f[2].trim().parse::<i64>().ok())
            .flatten();
        let Some(score) = parsed else {
            bail!(
                "{}:{}: expected `query-id \\t corpus-id \\t score`",
                qrels_path.display(),
                i + 1
            );
        };
        qrels.push((f[0].to_string(), f[1].to_string(), score));
    }
    let samples =
        beir_samples(&corpus, &queries, &qrels).with_context(|| format!("{}", dir.display()))?;
    let report = ReadReport {
        records: qrels.len(),
        ..Default::default()
    };
    for s in samples {
        w.put(TrainingSample::Retrieval(s))?;
    }
    Ok(report)
}
