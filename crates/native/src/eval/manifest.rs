//! Task manifests: one TOML file per evaluation task naming its type, data file(s), columns and
//! instruction, so `qzhou eval` reads local MTEB-style data without Python.
//!
//! ```toml
//! name = "STSBenchmark-test"        # result name (file name of the result JSON)
//! task = "STSBenchmark"             # QZhou instruction preset (qzhou_core::prompts), optional
//! type = "sts"                      # sts | pair_classification | retrieval | reranking | classification | clustering
//! path = "../data/stsbenchmark.tsv.gz"   # relative to the manifest; .gz is decompressed
//! format = "tsv"                    # tsv | jsonl | parquet (default: from the extension)
//! columns = { text1 = "sentence1", text2 = "sentence2", score = "score" }
//! filter = { split = "test" }       # keep rows whose column has this value
//! limit = 200                       # first N kept rows (optional)
//! instruction = "..."               # explicit instruction, with apply_to = "query" | "all";
//!                                   # apply_to = "none": no instruction or query prompt at all
//! split = "test"                    # reported split name
//! languages = ["eng-Latn"]
//! fetch = "python3 scripts/fetch-registry-data.py"   # shown if a data file is missing
//! ```
//!
//! Columns per type: `sts` text1, text2, score; `pair_classification` text1, text2, label
//! (1/0, true/false, yes/no); `retrieval` and `reranking` query, pos, neg (JSONL strings or
//! arrays of strings: every query's positives and negatives form the corpus; reranking ranks
//! each query's own candidates); `classification` and `clustering` text, label
//! (classification trains on the rows of `train_filter`, 8 per label × 10 experiments as
//! MTEB; clustering: mteb's 10 bootstrap samples of 16,384, mini-batch k-means with k = number
//! of labels, mean V-measure). TSV columns are header
//! names, or 0-based indices with `header = false`.
//!
//! Retrieval also reads the BEIR / MTEB layout instead of `path` + `columns`:
//!
//! ```toml
//! type = "retrieval"
//! corpus = "bbc/corpus.jsonl"       # _id, title (optional), text; title + " " + text is embedded
//! queries = "bbc/queries.jsonl"     # _id, text
//! qrels = "bbc/qrels/test.tsv"      # query-id, corpus-id, score (> 0 = relevant)
//! ```
//!
//! each file TSV (with a header), JSONL or Parquet. Only queries with judgments are evaluated;
//! a judgment naming an id absent from the corpus or the queries is an error. Reranking in this
//! layout (MTEB v2) adds `top_ranked = "top_ranked.jsonl"` (`query-id`, `corpus-ids` list): each
//! query ranks only its own candidates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qzhou_core::metrics::Qrels;
use serde::Deserialize;

use super::table::{for_each_record, Column, Format};

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
    /// The data file (every type but BEIR-layout retrieval).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `tsv` | `jsonl` | `parquet`; default from each file's extension.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default = "yes")]
    pub header: bool,
    #[serde(default)]
    pub columns: BTreeMap<String, toml::Value>,
    /// BEIR-layout retrieval: corpus (`_id`, `title`, `text`), queries (`_id`, `text`) and
    /// qrels (`query-id`, `corpus-id`, `score`) files.
    #[serde(default)]
    pub corpus: Option<PathBuf>,
    #[serde(default)]
    pub queries: Option<PathBuf>,
    #[serde(default)]
    pub qrels: Option<PathBuf>,
    /// Reranking in the same layout (MTEB v2): each query's candidates, `query-id` +
    /// `corpus-ids` (a list) per record.
    #[serde(default)]
    pub top_ranked: Option<PathBuf>,
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
    /// How to obtain the data files, shown when one is missing (e.g. a fetch script).
    #[serde(default)]
    pub fetch: Option<String>,
    /// With an explicit instruction: `query` (default) or `all` inputs get it; `none`: no
    /// instruction and no query prompt anywhere (every text embedded as a document, as a model
    /// trained without instructions sees its queries).
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

/// A BEIR-layout retrieval set: the judged queries, the corpus and the judgments.
pub struct BeirSet {
    /// (id, text) of each query that has judgments, in file order.
    pub queries: Vec<(String, String)>,
    /// (id, title + " " + text) of each document, in file order.
    pub corpus: Vec<(String, String)>,
    pub qrels: Qrels,
    /// Reranking: each query's candidate document ids (`top_ranked`), empty for retrieval.
    pub candidates: BTreeMap<String, Vec<String>>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read task manifest {}", path.display()))?;
        let mut m: Manifest = toml::from_str(&text)
            .with_context(|| format!("{}: invalid task manifest", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut m.path,
            &mut m.corpus,
            &mut m.queries,
            &mut m.qrels,
            &mut m.top_ranked,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        let at = path.display();
        let beir = [&m.corpus, &m.queries, &m.qrels];
        if beir.iter().any(|f| f.is_some()) {
            match (m.kind, &m.top_ranked) {
                (EvalType::Retrieval, None) | (EvalType::Reranking, Some(_)) => {}
                (EvalType::Reranking, None) => bail!(
                    "{at}: a BEIR-layout reranking task needs `top_ranked` (each query's candidates)"
                ),
                (EvalType::Retrieval, Some(_)) => {
                    bail!("{at}: `top_ranked` is for type = \"reranking\"")
                }
                _ => bail!(
                    "{at}: corpus/queries/qrels are for type = \"retrieval\" or \"reranking\""
                ),
            }
            for (key, f) in ["corpus", "queries", "qrels"].iter().zip(beir) {
                if f.is_none() {
                    bail!("{at}: `{key}` is missing (a BEIR-layout task needs corpus, queries and qrels)");
                }
            }
            if m.path.is_some() {
                bail!("{at}: give either `path` or corpus/queries/qrels, not both");
            }
            if m.format
                .as_deref()
                .is_some_and(|f| f != "parquet" && f != "jsonl" && f != "tsv")
            {
                bail!("{at}: format must be tsv, jsonl or parquet");
            }
            return Ok(m);
        }
        let data = m.path.as_ref().with_context(|| {
            format!(
                "{at}: `path` (the data file) is missing (or, for retrieval, corpus/queries/qrels)"
            )
        })?;
        Format::resolve(m.format.as_deref(), data, m.header).with_context(|| at.to_string())?;
        let needed: &[&str] = match m.kind {
            EvalType::Sts => &["text1", "text2", "score"],
            EvalType::PairClassification => &["text1", "text2", "label"],
            EvalType::Retrieval | EvalType::Reranking => &["query", "pos", "neg"],
            EvalType::Classification | EvalType::Clustering => &["text", "label"],
        };
        for c in needed {
            if !m.columns.contains_key(*c) {
                bail!(
                    "{at}: columns.{c} is missing (a {:?} task needs {needed:?})",
                    m.kind
                );
            }
        }
        for key in m.columns.keys() {
            m.column(key)?;
        }
        if m.kind == EvalType::Classification && m.train_filter.is_none() {
            bail!("{at}: a classification task needs train_filter (the rows that train the classifier)");
        }
        if let Some(side) = &m.apply_to {
            if !["query", "all", "none"].contains(&side.as_str()) {
                bail!("{at}: apply_to must be `query`, `all` or `none`");
            }
            if side == "none" && (m.instruction.is_some() || m.task.is_some()) {
                bail!("{at}: apply_to = \"none\" embeds without an instruction; drop `instruction` and `task`");
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

    /// A clear error for a missing data file, with the manifest's `fetch` hint.
    fn require_files(&self) -> Result<()> {
        for file in [
            &self.path,
            &self.corpus,
            &self.queries,
            &self.qrels,
            &self.top_ranked,
        ]
        .into_iter()
        .flatten()
        {
            if !file.exists() {
                match &self.fetch {
                    Some(hint) => bail!(
                        "task {}: {} does not exist (get it with: {hint})",
                        self.name,
                        file.display()
                    ),
                    None => bail!(
                        "task {}: cannot open {} (no such file)",
                        self.name,
                        file.display()
                    ),
                }
            }
        }
        Ok(())
    }

    /// The rows (after filter and limit), each with the mapped columns.
    pub fn rows(&self) -> Result<Vec<Row>> {
        self.require_files()?;
        let path = self
            .path
            .as_ref()
            .with_context(|| format!("task {}: no data `path`", self.name))?;
        let format = Format::resolve(self.format.as_deref(), path, self.header)?;
        let filter = self
            .filter
            .iter()
            .map(|(col, want)| Ok((self.column(col)?, want)))
            .collect::<Result<Vec<_>>>()?;
        let columns = self
            .columns
            .keys()
            .map(|k| Ok((k.clone(), self.column(k)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut rows = Vec::new();
        for_each_record(path, format, |record| {
            for (col, want) in &filter {
                if record.get(col)?.first() != Some(*want) {
                    return Ok(true);
                }
            }
            let mut row = Row::new();
            for (key, col) in &columns {
                row.insert(key.clone(), record.get(col)?);
            }
            rows.push(row);
            Ok(self.limit.is_none_or(|l| rows.len() < l))
        })?;
        if rows.is_empty() {
            bail!(
                "task {}: no rows in {} (after filter {:?})",
                self.name,
                path.display(),
                self.filter
            );
        }
        Ok(rows)
    }

    /// Where column `key` lives: its configured name or index, or its own name if unmapped
    /// (filter columns).
    fn column(&self, key: &str) -> Result<Column> {
        match self.columns.get(key) {
            None => Ok(Column::Name(key.to_string())),
            Some(toml::Value::String(name)) => Ok(Column::Name(name.clone())),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Column::Index(*i as usize)),
            Some(other) => bail!(
                "task {}: column {key} = {other} is neither a name nor a 0-based index",
                self.name
            ),
        }
    }

    /// Reads a BEIR-layout retrieval set (`limit` caps the judged queries).
    pub fn beir(&self) -> Result<BeirSet> {
        self.require_files()?;
        let (Some(corpus_path), Some(queries_path), Some(qrels_path)) =
            (&self.corpus, &self.queries, &self.qrels)
        else {
            bail!("task {}: not a BEIR-layout task", self.name);
        };
        let format = |p: &Path| Format::resolve(self.format.as_deref(), p, true);
        let name = |n: &str| Column::Name(n.to_string());
        let mut qrels = Qrels::new();
        for_each_record(qrels_path, format(qrels_path)?, |r| {
            let q = first(r.get(&name("query-id"))?, &r.at)?;
            let d = first(r.get(&name("corpus-id"))?, &r.at)?;
            let score = first(r.get(&name("score"))?, &r.at)?;
            let score: i32 = score
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && v.fract() == 0.0)
                .with_context(|| format!("{}: score `{score}` is not an integer", r.at))?
                as i32;
            qrels.entry(q).or_default().insert(d, score);
            Ok(true)
        })?;
        if qrels.is_empty() {
            bail!(
                "task {}: {} has no judgments",
                self.name,
                qrels_path.display()
            );
        }
        if let Some(limit) = self.limit {
            let keep: BTreeSet<String> = qrels.keys().take(limit).cloned().collect();
            qrels.retain(|q, _| keep.contains(q));
        }
        let mut queries = Vec::new();
        let mut seen = BTreeSet::new();
        for_each_record(queries_path, format(queries_path)?, |r| {
            let id = first(r.get(&name("_id"))?, &r.at)?;
            if qrels.contains_key(&id) {
                if !seen.insert(id.clone()) {
                    bail!("{}: query id `{id}` appears twice", r.at);
                }
                queries.push((id, first(r.get(&name("text"))?, &r.at)?));
            }
            Ok(true)
        })?;
        if let Some(missing) = qrels.keys().find(|q| !seen.contains(*q)) {
            bail!(
                "task {}: {} judges query `{missing}`, which is not in {}",
                self.name,
                qrels_path.display(),
                queries_path.display()
            );
        }
        let mut corpus = Vec::new();
        let mut ids = BTreeSet::new();
        for_each_record(corpus_path, format(corpus_path)?, |r| {
            let id = first(r.get(&name("_id"))?, &r.at)?;
            if !ids.insert(id.clone()) {
                bail!("{}: document id `{id}` appears twice", r.at);
            }
            let text = first(r.get(&name("text"))?, &r.at)?;
            let title = match r.get_optional(&name("title"))? {
                Some(t) => first(t, &r.at)?,
                None => String::new(),
            };
            // mteb: (title + " " + text).strip()
            corpus.push((id, format!("{title} {text}").trim().to_string()));
            Ok(true)
        })?;
        if corpus.is_empty() {
            bail!(
                "task {}: {} has no documents",
                self.name,
                corpus_path.display()
            );
        }
        for (q, judged) in &qrels {
            if let Some(d) = judged.keys().find(|d| !ids.contains(*d)) {
                bail!(
                    "task {}: {} judges document `{d}` for query `{q}`, but it is not in {}",
                    self.name,
                    qrels_path.display(),
                    corpus_path.display()
                );
            }
        }
        let mut candidates: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(path) = &self.top_ranked {
            for_each_record(path, format(path)?, |r| {
                let q = first(r.get(&name("query-id"))?, &r.at)?;
                if !qrels.contains_key(&q) {
                    return Ok(true); // an unjudged query is not evaluated
                }
                let ids_here = r.get(&name("corpus-ids"))?;
                if let Some(d) = ids_here.iter().find(|d| !ids.contains(*d)) {
                    bail!(
                        "{}: candidate `{d}` of query `{q}` is not in {}",
                        r.at,
                        corpus_path.display()
                    );
                }
                if candidates.insert(q.clone(), ids_here).is_some() {
                    bail!("{}: query `{q}` has a second candidate list", r.at);
                }
                Ok(true)
            })?;
            if let Some(q) = qrels.keys().find(|q| !candidates.contains_key(*q)) {
                bail!(
                    "task {}: query `{q}` has judgments but no candidates in {}",
                    self.name,
                    path.display()
                );
            }
        }
        Ok(BeirSet {
            queries,
            corpus,
            qrels,
            candidates,
        })
    }
}

/// The single value of a scalar field.
fn first(values: Vec<String>, at: &str) -> Result<String> {
    match <[String; 1]>::try_from(values) {
        Ok([v]) => Ok(v),
        Err(v) => bail!("{at}: expected one value, got {}", v.len()),
    }
}
