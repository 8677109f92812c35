//! Task manifests: one TOML file per evaluation task naming its type, data file, columns and
//! instruction, so `qzhou eval` reads local MTEB-style data without Python.
//!
//! ```toml
//! name = "STSBenchmark-test"        # result name (file name of the result JSON)
//! task = "STSBenchmark"             # QZhou instruction preset (qzhou_core::prompts), optional
//! type = "sts"                      # sts | pair_classification | retrieval | reranking
//! path = "../data/stsbenchmark.tsv.gz"   # relative to the manifest; .gz is decompressed
//! format = "tsv"                    # tsv (header row unless header = false) | jsonl
//! columns = { text1 = "sentence1", text2 = "sentence2", score = "score" }
//! filter = { split = "test" }       # keep rows whose column has this value
//! limit = 200                       # first N kept rows (optional)
//! split = "test"                    # reported split name
//! languages = ["eng-Latn"]
//! ```
//!
//! Columns per type: `sts` text1, text2, score; `pair_classification` text1, text2, label
//! (1/0, true/false, yes/no); `retrieval` and `reranking` query, pos, neg (JSONL strings or
//! arrays of strings: every query's positives and negatives form the corpus; reranking ranks
//! each query's own candidates); `classification` and `clustering` text, label
//! (classification trains on the rows of `train_filter`, 8 per label × 10 experiments as
//! MTEB; clustering runs k-means with k = number of labels, 10 seeds). TSV columns are header names, or 0-based indices with
//! `header = false`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Task types `qzhou eval` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalType {
    Sts,
    PairClassification,
    Retrieval,
    Reranking,
    Classification,
    Clustering,
}

impl EvalType {
    /// MTEB's category name.
    pub fn mteb_name(self) -> &'static str {
        match self {
            Self::Sts => "STS",
            Self::PairClassification => "PairClassification",
            Self::Retrieval => "Retrieval",
            Self::Reranking => "Reranking",
            Self::Classification => "Classification",
            Self::Clustering => "Clustering",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub task: Option<String>,
    #[serde(rename = "type")]
    pub kind: EvalType,
    pub path: PathBuf,
    pub format: String,
    #[serde(default = "yes")]
    pub header: bool,
    pub columns: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Classification: the rows that train the classifier (the evaluated rows are `filter`'s).
    #[serde(default)]
    pub train_filter: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default = "test")]
    pub split: String,
    #[serde(default)]
    pub languages: Vec<String>,
    /// Explicit instruction (wins over the `task` preset).
    #[serde(default)]
    pub instruction: Option<String>,
    /// With an explicit instruction: `query` (default) or `all` inputs get it.
    #[serde(default)]
    pub apply_to: Option<String>,
}

fn yes() -> bool {
    true
}
fn test() -> String {
    "test".into()
}

/// One row: column name → value(s).
pub type Row = BTreeMap<String, Vec<String>>;

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read task manifest {}", path.display()))?;
        let mut m: Manifest = toml::from_str(&text)
            .with_context(|| format!("{}: invalid task manifest", path.display()))?;
        if m.path.is_relative() {
            m.path = path.parent().unwrap_or(Path::new(".")).join(&m.path);
        }
        let needed: &[&str] = match m.kind {
            EvalType::Sts => &["text1", "text2", "score"],
            EvalType::PairClassification => &["text1", "text2", "label"],
            EvalType::Retrieval | EvalType::Reranking => &["query", "pos", "neg"],
            EvalType::Classification | EvalType::Clustering => &["text", "label"],
        };
        for c in needed {
            if !m.columns.contains_key(*c) {
                bail!(
                    "{}: columns.{c} is missing (a {:?} task needs {needed:?})",
                    path.display(),
                    m.kind
                );
            }
        }
        if m.kind == EvalType::Classification && m.train_filter.is_none() {
            bail!(
                "{}: a classification task needs train_filter (the rows that train the classifier)",
                path.display()
            );
        }
        if m.format != "tsv" && m.format != "jsonl" {
            bail!(
                "{}: format must be tsv or jsonl, got `{}`",
                path.display(),
                m.format
            );
        }
        if let Some(side) = &m.apply_to {
            if side != "query" && side != "all" {
                bail!("{}: apply_to must be `query` or `all`", path.display());
            }
        }
        Ok(m)
    }

    /// The classifier's training rows (`train_filter`, same limit).
    pub fn train_rows(&self) -> Result<Vec<Row>> {
        let filter = self.train_filter.clone().unwrap_or_default();
        Manifest {
            filter,
            ..self.clone()
        }
        .rows()
    }

    /// The rows (after filter and limit), each with the mapped columns.
    pub fn rows(&self) -> Result<Vec<Row>> {
        let file = std::fs::File::open(&self.path)
            .with_context(|| format!("task {}: cannot open {}", self.name, self.path.display()))?;
        let reader: Box<dyn Read> = if self.path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let source = self.path.display().to_string();
        let mut rows = Vec::new();
        let mut lines = BufReader::new(reader).lines().enumerate();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        if self.format == "tsv" && self.header {
            let (_, header) = lines.next().with_context(|| format!("{source} is empty"))?;
            let header = header.with_context(|| format!("{source}: cannot read"))?;
            for (i, name) in header
                .trim_start_matches('\u{feff}')
                .split('\t')
                .enumerate()
            {
                index.insert(name.trim().to_string(), i);
            }
        }
        for (n, line) in lines {
            let line = line.with_context(|| format!("{source}:{}: cannot read", n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let at = |what: &str| format!("{source}:{}: {what}", n + 1);
            let get = |key: &str| -> Result<Vec<String>> {
                match self.format.as_str() {
                    "tsv" => {
                        let fields: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
                        let i = self.column_index(key, &index)?;
                        let v = fields
                            .get(i)
                            .with_context(|| at(&format!("no column {i} ({key})")))?;
                        Ok(vec![v.to_string()])
                    }
                    _ => {
                        let v: serde_json::Value =
                            serde_json::from_str(&line).with_context(|| at("malformed JSON"))?;
                        let name = self.column_name(key)?;
                        match v.get(&name) {
                            Some(serde_json::Value::String(s)) => Ok(vec![s.clone()]),
                            Some(serde_json::Value::Array(a)) => a
                                .iter()
                                .map(|x| match x {
                                    serde_json::Value::String(s) => Ok(s.clone()),
                                    other => Ok(other.to_string()),
                                })
                                .collect(),
                            Some(other) => Ok(vec![other.to_string()]),
                            None => bail!(at(&format!("no field `{name}`"))),
                        }
                    }
                }
            };
            let mut keep = true;
            for (col, want) in &self.filter {
                if get(col)?.first() != Some(want) {
                    keep = false;
                    break;
                }
            }
            if !keep {
                continue;
            }
            let mut row = Row::new();
            for key in self.columns.keys() {
                row.insert(key.clone(), get(key)?);
            }
            rows.push(row);
            if self.limit.is_some_and(|l| rows.len() >= l) {
                break;
            }
        }
        if rows.is_empty() {
            bail!(
                "task {}: no rows in {} (after filter {:?})",
                self.name,
                source,
                self.filter
            );
        }
        Ok(rows)
    }

    /// A TSV column: the header position of its configured name, or its configured index.
    fn column_index(&self, key: &str, header: &BTreeMap<String, usize>) -> Result<usize> {
        match self.columns.get(key) {
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(*i as usize),
            Some(toml::Value::String(name)) => header.get(name).copied().with_context(|| {
                format!(
                    "task {}: no column `{name}` in the header of {}",
                    self.name,
                    self.path.display()
                )
            }),
            // Filter columns not in `columns` are looked up by their own name.
            None => header.get(key).copied().with_context(|| {
                format!(
                    "task {}: no column `{key}` in the header of {}",
                    self.name,
                    self.path.display()
                )
            }),
            Some(other) => bail!(
                "task {}: column {key} = {other} is neither a name nor an index",
                self.name
            ),
        }
    }

    fn column_name(&self, key: &str) -> Result<String> {
        match self.columns.get(key) {
            Some(toml::Value::String(name)) => Ok(name.clone()),
            None => Ok(key.to_string()),
            Some(other) => bail!(
                "task {}: JSONL column {key} = {other} must be a field name",
                self.name
            ),
        }
    }
}
