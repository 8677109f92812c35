//! Record-by-record reading of evaluation data files: TSV, JSONL and Parquet (MTEB datasets on
//! the Hub ship as Parquet), each optionally gzip-compressed (`.gz`, not for Parquet).
//!
//! A record's field is addressed by [`Column`]: a name (TSV header, JSON key, Parquet column)
//! or, for header-less TSV, a 0-based index. Values come back as strings; a JSON/Parquet list
//! gives one string per element.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// File formats of evaluation data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tab-separated; the first line names the columns when `header` is true.
    Tsv { header: bool },
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet (row groups read one at a time).
    Parquet,
}

impl Format {
    /// The format named `name` (`tsv`, `jsonl`, `parquet`), or else the one `path`'s extension
    /// says (`.tsv`/`.tab`, `.jsonl`/`.json`, `.parquet`, looking through `.gz`).
    pub fn resolve(name: Option<&str>, path: &Path, header: bool) -> Result<Self> {
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                let file = file.strip_suffix(".gz").unwrap_or(&file);
                match file.rsplit('.').next() {
                    Some("tsv" | "tab") => "tsv".into(),
                    Some("jsonl" | "json") => "jsonl".into(),
                    Some("parquet") => "parquet".into(),
                    _ => bail!(
                        "{}: cannot tell the format from the extension; set format = \"tsv\" | \"jsonl\" | \"parquet\"",
                        path.display()
                    ),
                }
            }
        };
        Ok(match name.as_str() {
            "tsv" => Self::Tsv { header },
            "jsonl" => Self::Jsonl,
            "parquet" => Self::Parquet,
            other => bail!("format must be tsv, jsonl or parquet, got `{other}`"),
        })
    }
}

/// Where a field lives in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Name(String),
    Index(usize),
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => write!(f, "`{n}`"),
            Self::Index(i) => write!(f, "column {i}"),
        }
    }
}

/// One record of a data file.
pub struct Record<'a> {
    /// `file:line` (TSV/JSONL) or `file:row` (Parquet, 1-based), for error messages.
    pub at: String,
    fields: Fields<'a>,
}

enum Fields<'a> {
    Tsv {
        values: Vec<&'a str>,
        header: &'a BTreeMap<String, usize>,
    },
    Object(serde_json::Map<String, Value>),
}

impl Record<'_> {
    /// The value(s) of `column`, or an error naming the record and column.
    pub fn get(&self, column: &Column) -> Result<Vec<String>> {
        match &self.fields {
            Fields::Tsv { values, header } => {
                let i = match column {
                    Column::Index(i) => *i,
                    Column::Name(n) => *header.get(n).with_context(|| {
                        format!("{}: no column {column} in the header", self.at)
                    })?,
                };
                let v = values.get(i).with_context(|| {
                    format!(
                        "{}: no {column} (the line has {} fields)",
                        self.at,
                        values.len()
                    )
                })?;
                Ok(vec![v.to_string()])
            }
            Fields::Object(map) => {
                let Column::Name(name) = column else {
                    bail!(
                        "{}: JSON and Parquet fields are named, not {column}",
                        self.at
                    );
                };
                let v = map
                    .get(name)
                    .with_context(|| format!("{}: no field {column}", self.at))?;
                Ok(match v {
                    Value::Array(items) => items.iter().map(text).collect(),
                    other => vec![text(other)],
                })
            }
        }
    }

    /// Like [`Record::get`], but `None` when a named field is absent or null.
    pub fn get_optional(&self, column: &Column) -> Result<Option<Vec<String>>> {
        if let (Fields::Object(map), Column::Name(n)) = (&self.fields, column) {
            if map.get(n).is_none_or(Value::is_null) {
                return Ok(None);
            }
        }
        if let (Fields::Tsv { header, .. }, Column::Name(n)) = (&self.fields, column) {
            if !header.contains_key(n) {
                return Ok(None);
            }
        }
        self.get(column).map(Some)
    }
}

/// A JSON value as text: strings unquoted, numbers and the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Calls `visit` for each record of `path` in order until it returns `Ok(false)` or an error.
/// Blank lines are skipped; a malformed JSON line is an error naming `file:line`.
pub fn for_each_record(
    path: &Path,
    format: Format,
    mut visit: impl FnMut(&Record) -> Result<bool>,
) -> Result<()> {
    let source = path.display().to_string();
    if format == Format::Parquet {
        return for_each_parquet_row(path, &source, visit);
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {source}"))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut lines = BufReader::new(reader).lines().enumerate();
    let mut header = BTreeMap::new();
    if format == (Format::Tsv { header: true }) {
        let (_, first) = lines.next().with_context(|| format!("{source} is empty"))?;
        let first = first.with_context(|| format!("{source}: cannot read"))?;
        for (i, name) in first.trim_start_matches('\u{feff}').split('\t').enumerate() {
            header.insert(name.trim().to_string(), i);
        }
    }
    for (n, line) in lines {
        let line = line.with_context(|| format!("{source}:{}: cannot read", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{source}:{}", n + 1);
        let fields = match format {
            Format::Tsv { .. } => Fields::Tsv {
                values: line.trim_end_matches('\r').split('\t').collect(),
                header: &header,
            },
            _ => match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(map)) => Fields::Object(map),
                Ok(_) => bail!("{at}: not a JSON object"),
                Err(e) => bail!("{at}: malformed JSON ({e})"),
            },
        };
        if !visit(&Record { at, fields })? {
            break;
        }
    }
    Ok(())
}

fn for_each_parquet_row(
    path: &Path,
    source: &str,
    mut visit: impl FnMut(&Record) -> Result<bool>,
) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {source}"))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{source} is not a readable Parquet file"))?;
    let rows = reader
        .get_row_iter(None)
        .with_context(|| format!("{source}: cannot read rows"))?;
    for (n, row) in rows.enumerate() {
        let at = format!("{source}:row {}", n + 1);
        let row = row.with_context(|| format!("{at}: cannot decode"))?;
        let Value::Object(map) = row.to_json_value() else {
            unreachable!("a Parquet row converts to a JSON object")
        };
        if !visit(&Record {
            at,
            fields: Fields::Object(map),
        })? {
            break;
        }
    }
    Ok(())
}
