//! Converters from the raw shapes of public datasets to the unified records (paper §3).
//!
//! * retrieval: title → body, QA (user → assistant), reading comprehension
//!   (`context + READING_COMPREHENSION_PROMPT + question` → answer), BEIR corpus/queries/qrels;
//! * pair score: every pair in both directions; NLI labels entailment/neutral/contradiction →
//!   2/1/0; delimited files (STS-B, SICK, MSRP) through [`for_each_delimited_pair`];
//! * classification: `(text, label)` → a same-label positive and other-label negatives, drawn
//!   with a seeded generator.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use super::jsonl::{for_each_line, Line, Malformed, ReadReport};
use super::rng::SplitMix64;
use super::{ClassificationSample, PairSample, RetrievalSample};
use crate::error::{QzhouError, Result};

/// What QZhou puts between a reading-comprehension context and its question ("please read the
/// article above and answer the following question").
pub const READING_COMPREHENSION_PROMPT: &str = "\n请阅读上述文章，回答下列问题：";

fn invalid(what: &str) -> QzhouError {
    QzhouError::InvalidOption(what.to_string())
}

fn non_empty(text: &str, what: &str) -> Result<String> {
    if text.trim().is_empty() {
        Err(invalid(&format!("{what} is empty")))
    } else {
        Ok(text.to_string())
    }
}

fn retrieval(query: String, pos: String) -> RetrievalSample {
    RetrievalSample {
        query,
        pos,
        negs: Vec::new(),
        instruction: None,
    }
}

/// A title (query) and its body or abstract (positive).
pub fn title_body(title: &str, body: &str) -> Result<RetrievalSample> {
    Ok(retrieval(
        non_empty(title, "title")?,
        non_empty(body, "body")?,
    ))
}

/// A user turn (query) and the assistant's answer (positive).
pub fn question_answer(user: &str, assistant: &str) -> Result<RetrievalSample> {
    Ok(retrieval(
        non_empty(user, "user turn")?,
        non_empty(assistant, "assistant turn")?,
    ))
}

/// Reading comprehension: query `context + READING_COMPREHENSION_PROMPT + question`, positive
/// the answer.
pub fn reading_comprehension(
    context: &str,
    question: &str,
    answer: &str,
) -> Result<RetrievalSample> {
    let query = format!(
        "{}{READING_COMPREHENSION_PROMPT}{}",
        non_empty(context, "context")?,
        non_empty(question, "question")?
    );
    Ok(retrieval(query, non_empty(answer, "answer")?))
}

/// BEIR-style data: one sample per judged-relevant (score > 0) query–document pair, the
/// document text being `title + " " + text` when it has a title. Every id in `qrels` must
/// exist; queries without a relevant document produce nothing.
pub fn beir_samples(
    corpus: &HashMap<String, (String, String)>,
    queries: &HashMap<String, String>,
    qrels: &[(String, String, i64)],
) -> Result<Vec<RetrievalSample>> {
    let mut out = Vec::new();
    for (qid, did, score) in qrels {
        let query = queries
            .get(qid)
            .ok_or_else(|| invalid(&format!("qrels name query `{qid}`, absent from queries")))?;
        let (title, text) = corpus
            .get(did)
            .ok_or_else(|| invalid(&format!("qrels name document `{did}`, absent from corpus")))?;
        if *score <= 0 {
            continue;
        }
        let doc = if title.trim().is_empty() {
            text.clone()
        } else {
            format!("{title} {text}")
        };
        out.push(retrieval(
            non_empty(query, &format!("query `{qid}`"))?,
            non_empty(&doc, &format!("document `{did}`"))?,
        ));
    }
    Ok(out)
}

/// A scored pair as the two samples `(text1, text2)` and `(text2, text1)` with the same score.
pub fn both_directions(text1: &str, text2: &str, score: f32) -> Result<[PairSample; 2]> {
    if !score.is_finite() {
        return Err(invalid(&format!("score {score} is not a finite number")));
    }
    let (a, b) = (non_empty(text1, "text1")?, non_empty(text2, "text2")?);
    Ok([
        PairSample {
            text1: a.clone(),
            text2: b.clone(),
            score,
        },
        PairSample {
            text1: b,
            text2: a,
            score,
        },
    ])
}

/// The CoSENT score of an NLI label: entailment 2, neutral 1, contradiction 0 (names in any
/// case). Numeric labels are refused: datasets disagree on what 0/1/2 mean.
pub fn nli_score(label: &str) -> Result<f32> {
    match label.trim().to_ascii_lowercase().as_str() {
        "entailment" | "entails" => Ok(2.0),
        "neutral" => Ok(1.0),
        "contradiction" | "contradicts" => Ok(0.0),
        other => Err(invalid(&format!(
            "NLI label `{other}` (expected entailment, neutral or contradiction)"
        ))),
    }
}

/// A graded or binary score: a number, or true/false, yes/no.
pub fn parse_score(text: &str) -> Result<f32> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "true" | "yes" => return Ok(1.0),
        "false" | "no" => return Ok(0.0),
        _ => {}
    }
    t.parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            invalid(&format!(
                "score `{t}` is not a number, true/false or yes/no"
            ))
        })
}

/// Columns of a delimited pair file.
#[derive(Debug, Clone, Copy)]
pub struct PairColumns {
    /// Column of the first text (0-based).
    pub text1: usize,
    /// Column of the second text.
    pub text2: usize,
    /// Column of the score or label.
    pub score: usize,
    /// Whether the first line is a header.
    pub header: bool,
}

/// Read a tab-separated pair file (STS-B, SICK, MSRP) streaming; `score` turns the score
/// column into a number ([`parse_score`], [`nli_score`]); `each` gets both directions of every
/// pair. A UTF-8 byte-order mark is ignored. Malformed lines follow `policy`.
pub fn for_each_delimited_pair<R, S, F>(
    reader: R,
    source: &str,
    columns: PairColumns,
    policy: Malformed,
    score: S,
    each: F,
) -> Result<ReadReport>
where
    R: BufRead,
    S: Fn(&str) -> Result<f32>,
    F: FnMut([PairSample; 2]),
{
    for_each_delimited_pair_where(reader, source, columns, None, policy, score, each)
}

/// [`for_each_delimited_pair`] keeping only the lines whose column `keep.0` equals `keep.1`
/// (one split of a file that holds several, as STS-B's `split` column); the others are
/// counted in [`ReadReport::filtered`].
pub fn for_each_delimited_pair_where<R, S, F>(
    reader: R,
    source: &str,
    columns: PairColumns,
    keep: Option<(usize, &str)>,
    policy: Malformed,
    score: S,
    mut each: F,
) -> Result<ReadReport>
where
    R: BufRead,
    S: Fn(&str) -> Result<f32>,
    F: FnMut([PairSample; 2]),
{
    let needed = columns
        .text1
        .max(columns.text2)
        .max(columns.score)
        .max(keep.map_or(0, |(c, _)| c))
        + 1;
    for_each_line(reader, source, policy, columns.header, |line| {
        let line = line.trim_start_matches('\u{feff}').trim_end_matches('\r');
        if line.trim().is_empty() {
            return Ok(Line::Blank);
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < needed {
            return Err(format!(
                "{} tab-separated fields, need {needed}",
                fields.len()
            ));
        }
        if let Some((column, value)) = keep {
            if fields[column] != value {
                return Ok(Line::Filtered);
            }
        }
        let pair = score(fields[columns.score])
            .and_then(|s| both_directions(fields[columns.text1], fields[columns.text2], s))
            .map_err(|e| e.to_string())?;
        each(pair);
        Ok(Line::Record)
    })
}

/// Classification (and clustering) data made contrastive: for each `(text, label)`, a
/// positive drawn from the *other* texts with the same label and `negatives` texts drawn from
/// other labels (with replacement across labels, never the same text twice in one sample when
/// enough exist). Texts whose label has no other text are skipped; their count is returned.
/// Deterministic for a `seed`.
pub fn classification_samples(
    items: &[(String, String)],
    negatives: usize,
    seed: u64,
) -> Result<(Vec<ClassificationSample>, usize)> {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (text, label)) in items.iter().enumerate() {
        non_empty(text, &format!("text {i}"))?;
        non_empty(label, &format!("label of text {i}"))?;
        by_label.entry(label.as_str()).or_default().push(i);
    }
    if by_label.len() < 2 && negatives > 0 {
        return Err(invalid(&format!(
            "classification data needs at least two labels for negatives, found {}",
            by_label.len()
        )));
    }
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for (i, (text, label)) in items.iter().enumerate() {
        let same = &by_label[label.as_str()];
        if same.len() < 2 {
            skipped += 1;
            continue;
        }
        // A uniform draw among the other same-label texts.
        let mut pick = rng.below(same.len() - 1);
        if same[pick] == i {
            pick = same.len() - 1;
        }
        let pos = same[pick];
        let others = items.len() - same.len();
        let mut negs: Vec<usize> = Vec::with_capacity(negatives);
        while negs.len() < negatives {
            let j = rng.below(items.len());
            if items[j].1 == *label || (negs.contains(&j) && negs.len() < others) {
                continue;
            }
            negs.push(j);
        }
        out.push(ClassificationSample {
            query: text.clone(),
            pos: items[pos].0.clone(),
            negs: negs.iter().map(|&j| items[j].0.clone()).collect(),
            label: label.clone(),
            neg_labels: negs.iter().map(|&j| items[j].1.clone()).collect(),
        });
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_converters_build_queries_as_the_paper_shows() {
        let rc = reading_comprehension("文章。", "问题？", "答案").unwrap();
        assert_eq!(rc.query, "文章。\n请阅读上述文章，回答下列问题：问题？");
        assert_eq!(rc.pos, "答案");
        assert_eq!(title_body("T", "B").unwrap().query, "T");
        assert!(question_answer(" ", "a").is_err());
    }

    #[test]
    fn pairs_go_both_ways_and_nli_maps_to_2_1_0() {
        let [a, b] = both_directions("x", "y", 3.5).unwrap();
        assert_eq!(
            (a.text1.as_str(), b.text1.as_str(), b.score),
            ("x", "y", 3.5)
        );
        assert_eq!(b.text2, "x");
        assert_eq!(
            ["ENTAILMENT", "neutral", "Contradiction"].map(|l| nli_score(l).unwrap()),
            [2.0, 1.0, 0.0]
        );
        assert!(nli_score("1").unwrap_err().to_string().contains("`1`"));
        assert_eq!(parse_score("yes").unwrap(), 1.0);
        assert!(parse_score("NaN").is_err());
        assert!(both_directions("x", "y", f32::NAN).is_err());
    }

    #[test]
    fn beir_keeps_relevant_pairs_and_names_missing_ids() {
        let corpus = HashMap::from([
            ("d1".to_string(), ("Title".to_string(), "text".to_string())),
            ("d2".to_string(), (String::new(), "other".to_string())),
        ]);
        let queries = HashMap::from([("q1".to_string(), "query".to_string())]);
        let qrels = vec![
            ("q1".to_string(), "d1".to_string(), 1),
            ("q1".to_string(), "d2".to_string(), 0),
        ];
        let s = beir_samples(&corpus, &queries, &qrels).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].pos, "Title text");
        let bad = vec![("q1".to_string(), "d9".to_string(), 1)];
        let err = beir_samples(&corpus, &queries, &bad).unwrap_err();
        assert!(err.to_string().contains("`d9`"), "{err}");
    }

    #[test]
    fn classification_positives_share_the_label_and_negatives_do_not() {
        let items: Vec<(String, String)> = (0..30)
            .map(|i| (format!("text {i}"), format!("L{}", i % 3)))
            .chain([("lonely".to_string(), "L9".to_string())])
            .collect();
        let (samples, skipped) = classification_samples(&items, 4, 7).unwrap();
        assert_eq!((samples.len(), skipped), (30, 1));
        let label_of: HashMap<&str, &str> = items
            .iter()
            .map(|(t, l)| (t.as_str(), l.as_str()))
            .collect();
        for s in &samples {
            assert_ne!(s.pos, s.query);
            assert_eq!(label_of[s.pos.as_str()], s.label);
            assert_eq!(s.negs.len(), 4);
            for (n, l) in s.negs.iter().zip(&s.neg_labels) {
                assert_eq!(label_of[n.as_str()], l.as_str());
                assert_ne!(l, &s.label);
            }
        }
        assert_eq!(classification_samples(&items, 4, 7).unwrap().0, samples);
        assert_ne!(classification_samples(&items, 4, 8).unwrap().0, samples);
        let one_label = vec![
            ("a".to_string(), "L".to_string()),
            ("b".to_string(), "L".to_string()),
        ];
        assert!(classification_samples(&one_label, 1, 0).is_err());
    }
}
