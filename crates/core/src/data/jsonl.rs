//! Streaming JSON-lines reading: one record at a time from any [`BufRead`], malformed lines
//! reported with `source:line` and either skipped (counted, first few kept) or fatal.

use std::io::BufRead;

use serde::de::DeserializeOwned;

use crate::error::{QzhouError, Result};

/// What to do with a line that is not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Malformed {
    /// Stop with an error naming `source:line` (default).
    #[default]
    Fail,
    /// Skip it, count it, keep the first [`MAX_KEPT_PROBLEMS`] reasons in the report.
    Skip,
}

/// How many skipped-line reasons a [`ReadReport`] keeps verbatim.
pub const MAX_KEPT_PROBLEMS: usize = 20;

/// What a read saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Records delivered.
    pub records: usize,
    /// Blank lines ignored.
    pub blank: usize,
    /// Lines left out by a filter (another split of the same file).
    pub filtered: usize,
    /// Malformed lines skipped (all of them, not only the kept ones).
    pub skipped: usize,
    /// `source:line: reason` of the first skipped lines.
    pub problems: Vec<String>,
}

impl ReadReport {
    /// A line `source:line` was rejected for `reason`: under [`Malformed::Fail`] that is the
    /// returned error; under [`Malformed::Skip`] it is counted (first reasons kept).
    pub fn reject(
        &mut self,
        policy: Malformed,
        source: &str,
        line: usize,
        reason: String,
    ) -> Result<()> {
        match policy {
            Malformed::Fail => Err(QzhouError::Data {
                input: source.to_string(),
                line,
                reason,
            }),
            Malformed::Skip => {
                self.skipped += 1;
                if self.problems.len() < MAX_KEPT_PROBLEMS {
                    self.problems.push(format!("{source}:{line}: {reason}"));
                }
                Ok(())
            }
        }
    }
}

/// What a line handler made of one line.
pub(crate) enum Line {
    /// A record, delivered.
    Record,
    /// A blank line, ignored.
    Blank,
    /// A line a filter left out.
    Filtered,
}

/// The line loop every reader here shares: read `reader` line by line (a read failure is an
/// error naming `source:line`), skip the first line when `skip_first`, hand each line to
/// `handle`, and count records and blanks; a line `handle` rejects follows `policy`.
pub(crate) fn for_each_line<R, F>(
    reader: R,
    source: &str,
    policy: Malformed,
    skip_first: bool,
    mut handle: F,
) -> Result<ReadReport>
where
    R: BufRead,
    F: FnMut(&str) -> std::result::Result<Line, String>,
{
    let mut report = ReadReport::default();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| QzhouError::Data {
            input: source.to_string(),
            line: line_no,
            reason: format!("read failed: {e}"),
        })?;
        if i == 0 && skip_first {
            continue;
        }
        match handle(&line) {
            Ok(Line::Record) => report.records += 1,
            Ok(Line::Blank) => report.blank += 1,
            Ok(Line::Filtered) => report.filtered += 1,
            Err(reason) => report.reject(policy, source, line_no, reason)?,
        }
    }
    Ok(report)
}

/// Read JSON lines of `T` from `reader`, calling `each` for every record in order. `source`
/// names the input in messages (a file path). Blank lines are ignored. `each` may refuse a
/// record (return an error); that error is treated like a malformed line.
pub fn for_each_record<T, R, F>(
    reader: R,
    source: &str,
    policy: Malformed,
    mut each: F,
) -> Result<ReadReport>
where
    T: DeserializeOwned,
    R: BufRead,
    F: FnMut(T) -> std::result::Result<(), String>,
{
    for_each_line(reader, source, policy, false, |line| {
        if line.trim().is_empty() {
            return Ok(Line::Blank);
        }
        serde_json::from_str::<T>(line)
            .map_err(|e| e.to_string())
            .and_then(&mut each)
            .map(|()| Line::Record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{RetrievalSample, TrainingSample};

    const INPUT: &str = concat!(
        r#"{"type":"retrieval","query":"q1","pos":"p1","negs":["n1"]}"#,
        "\n\n",
        r#"{"type":"pair","text1":"a","text2":"b","score":4.5}"#,
        "\n",
        r#"{"type":"retrieval","query":"q2"}"#,
        "\n",
        "not json\n",
        r#"{"type":"classification","query":"x","pos":"y","negs":[],"label":"L","neg_labels":[]}"#,
        "\n"
    );

    #[test]
    fn skip_counts_and_names_bad_lines() {
        let mut got = Vec::new();
        let report = for_each_record::<TrainingSample, _, _>(
            INPUT.as_bytes(),
            "train.jsonl",
            Malformed::Skip,
            |s| {
                got.push(s.kind());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, ["retrieval", "pair", "classification"]);
        assert_eq!((report.records, report.blank, report.skipped), (3, 1, 2));
        assert!(report.problems[0].starts_with("train.jsonl:4: missing field `pos`"));
        assert!(report.problems[1].starts_with("train.jsonl:5: "));
    }

    #[test]
    fn fail_stops_at_the_first_bad_line_with_its_location() {
        let err = for_each_record::<TrainingSample, _, _>(
            INPUT.as_bytes(),
            "train.jsonl",
            Malformed::Fail,
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("train.jsonl:4: missing field `pos`"),
            "{err}"
        );
    }

    #[test]
    fn a_refused_record_counts_as_malformed() {
        let input = r#"{"query":"q","pos":""}"#;
        let report =
            for_each_record::<RetrievalSample, _, _>(input.as_bytes(), "x", Malformed::Skip, |s| {
                if s.pos.is_empty() {
                    Err("empty pos".into())
                } else {
                    Ok(())
                }
            })
            .unwrap();
        assert_eq!(report.skipped, 1);
        assert_eq!(report.problems, ["x:1: empty pos"]);
    }
}
