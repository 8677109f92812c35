//! Training-data converters on the real datasets in `../shared/data` (CI has them there too;
//! `QZHOU_DATA` overrides the folder): every pair in both directions, counts equal to the
//! files' line counts, malformed lines named by file:line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use qzhou_core::data::convert::{
    classification_samples, for_each_delimited_pair, nli_score, parse_score, PairColumns,
};
use qzhou_core::data::jsonl::{for_each_record, Malformed};
use qzhou_core::data::{PairSample, RetrievalSample, TrainingSample};

fn data(path: &str) -> PathBuf {
    std::env::var_os("QZHOU_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
        .join(path)
}

fn lines(path: &str) -> usize {
    BufReader::new(File::open(data(path)).unwrap())
        .lines()
        .filter(|l| !l.as_ref().unwrap().trim().is_empty())
        .count()
}

fn pairs(
    path: &str,
    columns: PairColumns,
    score: fn(&str) -> qzhou_core::Result<f32>,
) -> Vec<PairSample> {
    let mut out = Vec::new();
    let report = for_each_delimited_pair(
        BufReader::new(File::open(data(path)).unwrap()),
        path,
        columns,
        Malformed::Fail,
        score,
        |[a, b]| out.extend([a, b]),
    )
    .unwrap();
    assert_eq!(report.skipped, 0);
    assert_eq!(out.len(), 2 * report.records);
    out
}

#[test]
fn sts_b_zh_pairs_both_directions() {
    let cols = PairColumns {
        text1: 0,
        text2: 1,
        score: 2,
        header: false,
    };
    let got = pairs("sts-b-zh/STS-B.test.data", cols, parse_score);
    assert_eq!(got.len(), 2 * lines("sts-b-zh/STS-B.test.data"));
    assert_eq!(got[0].text1, "一个女孩在给她的头发做发型。");
    assert_eq!(
        (got[1].text1.as_str(), got[1].score),
        ("一个女孩在梳头。", 2.0)
    );
    assert!(got.iter().all(|p| (0.0..=5.0).contains(&p.score)));
}

#[test]
fn sick_relatedness_and_entailment_labels() {
    let related = PairColumns {
        text1: 1,
        text2: 2,
        score: 3,
        header: true,
    };
    let got = pairs("sick/SICK_train.txt", related, parse_score);
    assert_eq!(got.len(), 2 * (lines("sick/SICK_train.txt") - 1));
    assert_eq!(got[0].score, 4.5);
    let nli = PairColumns {
        text1: 1,
        text2: 2,
        score: 4,
        header: true,
    };
    let got = pairs("sick/SICK_train.txt", nli, nli_score);
    assert_eq!(got[0].score, 1.0, "pair 1 is NEUTRAL");
    for s in [0.0, 1.0, 2.0] {
        assert!(got.iter().any(|p| p.score == s), "no pair scored {s}");
    }
}

#[test]
fn msrp_binary_labels_with_a_byte_order_mark_header() {
    let cols = PairColumns {
        text1: 3,
        text2: 4,
        score: 0,
        header: true,
    };
    let got = pairs("msrp/msr-para-train.tsv", cols, parse_score);
    assert_eq!(got.len(), 2 * (lines("msrp/msr-para-train.tsv") - 1));
    assert!(got.iter().all(|p| p.score == 0.0 || p.score == 1.0));
    assert!(got[0].text1.starts_with("Amrozi accused his brother"));
}

#[test]
fn chinese_retrieval_triples_stream_as_retrieval_samples() {
    #[derive(serde::Deserialize)]
    struct Bge {
        query: String,
        pos: Vec<String>,
        neg: Vec<String>,
    }
    let mut samples = Vec::new();
    let path = "retrieval-zh/bge_finetune_data.jsonl";
    let report = for_each_record::<Bge, _, _>(
        BufReader::new(File::open(data(path)).unwrap()),
        path,
        Malformed::Fail,
        |b| {
            for pos in b.pos {
                samples.push(TrainingSample::Retrieval(RetrievalSample {
                    query: b.query.clone(),
                    pos,
                    negs: b.neg.clone(),
                    instruction: None,
                }));
            }
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(report.records, 2701);
    assert!(samples.len() >= 2701);
    // The unified format round-trips through JSON.
    let line = serde_json::to_string(&samples[0]).unwrap();
    assert!(
        line.starts_with(r#"{"type":"retrieval","query":"一架飞机要起飞了。""#),
        "{line}"
    );
    assert_eq!(
        serde_json::from_str::<TrainingSample>(&line).unwrap(),
        samples[0]
    );
}

#[test]
fn chinese_nli_file_as_binary_pairs_and_malformed_lines_are_located() {
    #[derive(serde::Deserialize)]
    struct Nli {
        text1: String,
        text2: String,
        label: i64,
    }
    let path = "nli-zh/snli_zh_50.jsonl";
    let mut got = Vec::new();
    let report = for_each_record::<Nli, _, _>(
        BufReader::new(File::open(data(path)).unwrap()),
        path,
        Malformed::Fail,
        |r| {
            // Numeric labels: this file has only 0/1, so it is treated as a binary pair label.
            let [a, b] =
                qzhou_core::data::convert::both_directions(&r.text1, &r.text2, r.label as f32)
                    .map_err(|e| e.to_string())?;
            got.extend([a, b]);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(report.records, lines(path));
    assert_eq!(got.len(), 2 * report.records);

    // The same file with one corrupted line: fatal names it, skip counts it.
    let mut text = std::fs::read_to_string(data(path)).unwrap();
    text.insert_str(0, "{\"text1\": \"truncated\n");
    let err = for_each_record::<Nli, _, _>(text.as_bytes(), path, Malformed::Fail, |_| Ok(()))
        .unwrap_err();
    assert!(
        err.to_string().starts_with("nli-zh/snli_zh_50.jsonl:1: "),
        "{err}"
    );
    let report =
        for_each_record::<Nli, _, _>(text.as_bytes(), path, Malformed::Skip, |_| Ok(())).unwrap();
    assert_eq!((report.skipped, report.records), (1, lines(path)));
}

#[test]
fn classification_triples_from_sick_entailment_labels() {
    let items: Vec<(String, String)> =
        BufReader::new(File::open(data("sick/SICK_train.txt")).unwrap())
            .lines()
            .skip(1)
            .take(300)
            .map(|l| {
                let l = l.unwrap();
                let f: Vec<&str> = l.split('\t').collect();
                (f[1].to_string(), f[4].to_string())
            })
            .collect();
    let (samples, skipped) = classification_samples(&items, 3, 42).unwrap();
    assert_eq!(samples.len() + skipped, 300);
    assert!(samples
        .iter()
        .all(|s| s.neg_labels.iter().all(|l| *l != s.label)));
}
