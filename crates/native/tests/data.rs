//! `qzhou data convert` on every kind — real files from `../shared/data` and the registry sets
//! where they exist, small hand-written ones for QA and reading comprehension — with record
//! counts computed here independently from the raw files, and every bad input an error that
//! names it and leaves no output; `qzhou data stats` against counts and lengths computed here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{ok, qzhou, read_jsonl as records, registry_data, root};
use serde_json::{json, Value};

fn shared(path: &str) -> PathBuf {
    root().join("../shared/data").join(path)
}

fn registry(path: &str) -> PathBuf {
    registry_data().join(path)
}

fn convert(args: &[&str], out: &Path) -> Output {
    let mut all = vec!["data", "convert"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap()]);
    qzhou(&all)
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Data rows of a tab-separated file (after a header), as fields.
fn tsv_rows(text: &str, header: bool) -> Vec<Vec<String>> {
    text.lines()
        .skip(header as usize)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim_end_matches('\r')
                .split('\t')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn pair_kinds_write_every_pair_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");

    // STS-B: the train split of the gzipped benchmark file.
    let raw = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(shared("sts-b-en/stsbenchmark.tsv.gz")).unwrap(),
        )
        .read_to_string(&mut s)
        .unwrap();
        s
    };
    let train: Vec<Vec<String>> = tsv_rows(&raw, true)
        .into_iter()
        .filter(|r| r[0] == "train")
        .collect();
    let stdout = ok(&convert(
        &[
            "--kind",
            "sts-b",
            shared("sts-b-en/stsbenchmark.tsv.gz").to_str().unwrap(),
            "--split",
            "train",
        ],
        &out,
    ));
    let got = records(&out);
    assert_eq!(got.len(), 2 * train.len(), "{stdout}");
    assert!(stdout.contains("rows of other splits left out"), "{stdout}");
    let score: f64 = train[0][5].parse().unwrap();
    assert_eq!(
        got[0],
        json!({"type": "pair", "text1": train[0][6], "text2": train[0][7], "score": score})
    );
    assert_eq!(
        got[1],
        json!({"type": "pair", "text1": train[0][7], "text2": train[0][6], "score": score})
    );

    // SICK relatedness, and its entailment label as an NLI score.
    let sick = std::fs::read_to_string(shared("sick/SICK_train.txt")).unwrap();
    let rows = tsv_rows(&sick, true);
    ok(&convert(
        &[
            "--kind",
            "sick",
            shared("sick/SICK_train.txt").to_str().unwrap(),
        ],
        &out,
    ));
    let got = records(&out);
    assert_eq!(got.len(), 2 * rows.len());
    assert_eq!(got[0]["score"], json!(rows[0][3].parse::<f64>().unwrap()));
    ok(&convert(
        &[
            "--kind",
            "sick",
            shared("sick/SICK_train.txt").to_str().unwrap(),
            "--labels",
            "nli",
            "--field",
            "score=entailment_judgment",
        ],
        &out,
    ));
    let expected = |label: &str| match label {
        "ENTAILMENT" => 2.0,
        "NEUTRAL" => 1.0,
        _ => 0.0,
    };
    for (pair, row) in records(&out).chunks(2).zip(&rows) {
        assert_eq!(pair[0]["score"].as_f64().unwrap(), expected(&row[4]));
    }

    // MSRP (a byte-order mark before the header), Chinese STS-B (no header).
    let msrp = std::fs::read_to_string(shared("msrp/msr-para-train.tsv")).unwrap();
    ok(&convert(
        &[
            "--kind",
            "msrp",
            shared("msrp/msr-para-train.tsv").to_str().unwrap(),
        ],
        &out,
    ));
    assert_eq!(records(&out).len(), 2 * tsv_rows(&msrp, true).len());
    let zh = std::fs::read_to_string(shared("sts-b-zh/STS-B.train.data")).unwrap();
    ok(&convert(
        &[
            "--kind",
            "sts-zh",
            shared("sts-b-zh/STS-B.train.data").to_str().unwrap(),
        ],
        &out,
    ));
    let zh_rows = tsv_rows(&zh, false);
    let got = records(&out);
    assert_eq!(got.len(), 2 * zh_rows.len());
    assert_eq!(got[0]["text1"], json!(zh_rows[0][0]));

    // Chinese NLI with numeric labels mapped; two inputs in one output.
    let nli = shared("nli-zh/snli_zh_50.jsonl");
    let lines = records(&nli);
    let stdout = ok(&convert(
        &[
            "--kind",
            "nli",
            nli.to_str().unwrap(),
            nli.to_str().unwrap(),
            "--label-map",
            "1=entailment,0=contradiction",
        ],
        &out,
    ));
    let got = records(&out);
    assert_eq!(got.len(), 4 * lines.len(), "{stdout}");
    for (pair, line) in got.chunks(2).zip(&lines) {
        assert_eq!(
            pair[0]["score"].as_f64().unwrap(),
            if line["label"] == 1 { 2.0 } else { 0.0 }
        );
    }

    // Any TSV / JSONL of pairs, columns renamed or numbered.
    let tsv = dir.path().join("p.tsv");
    std::fs::write(&tsv, "a\tb\tsim\nx\ty\t0.5\nu\tv\tyes\n").unwrap();
    ok(&convert(
        &[
            "--kind",
            "pairs-tsv",
            tsv.to_str().unwrap(),
            "--field",
            "text1=a",
            "--field",
            "text2=b",
            "--field",
            "score=sim",
        ],
        &out,
    ));
    assert_eq!(
        records(&out)[2],
        json!({"type": "pair", "text1": "u", "text2": "v", "score": 1.0})
    );
    ok(&convert(
        &[
            "--kind",
            "pairs-tsv",
            tsv.to_str().unwrap(),
            "--no-header",
            "--field",
            "text1=1",
            "--field",
            "text2=0",
            "--field",
            "score=2",
            "--on-malformed",
            "skip",
        ],
        &out,
    ));
    assert_eq!(
        records(&out).len(),
        4,
        "the header line is a malformed row, skipped"
    );
}

#[test]
fn retrieval_and_classification_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");

    // FlagEmbedding triples: one record per positive, negatives kept.
    let triples = shared("retrieval-zh/bge_finetune_data.jsonl");
    let lines = records(&triples);
    let positives: usize = lines
        .iter()
        .map(|l| l["pos"].as_array().unwrap().len())
        .sum();
    ok(&convert(
        &["--kind", "triples", triples.to_str().unwrap()],
        &out,
    ));
    let got = records(&out);
    assert_eq!(got.len(), positives);
    assert_eq!(got[0]["query"], lines[0]["query"]);
    assert_eq!(got[0]["negs"], lines[0]["neg"]);
    assert_eq!(got[0]["type"], "retrieval");

    // BBC News: title → body, a BEIR folder, and topic classification.
    let bbc = registry("bbc-news.jsonl");
    let articles = records(&bbc);
    ok(&convert(
        &["--kind", "title-body", bbc.to_str().unwrap()],
        &out,
    ));
    let got = records(&out);
    assert_eq!(got.len(), articles.len());
    assert_eq!(
        (&got[0]["query"], &got[0]["pos"]),
        (&articles[0]["title"], &articles[0]["body"])
    );
    ok(&convert(
        &[
            "--kind",
            "beir",
            registry("bbc-news-retrieval").to_str().unwrap(),
        ],
        &out,
    ));
    assert_eq!(records(&out).len(), articles.len());
    ok(&convert(
        &[
            "--kind",
            "classification",
            bbc.to_str().unwrap(),
            "--negatives",
            "2",
            "--seed",
            "7",
        ],
        &out,
    ));
    let got = records(&out);
    assert_eq!(got.len(), articles.len());
    let label_of: std::collections::HashMap<&str, &str> = articles
        .iter()
        .map(|a| (a["text"].as_str().unwrap(), a["label"].as_str().unwrap()))
        .collect();
    for r in &got {
        assert_eq!(
            label_of[r["pos"].as_str().unwrap()],
            r["label"].as_str().unwrap()
        );
        for (n, l) in r["negs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(r["neg_labels"].as_array().unwrap())
        {
            assert_eq!(label_of[n.as_str().unwrap()], l.as_str().unwrap());
            assert_ne!(l, &r["label"]);
        }
    }
    let first = std::fs::read(&out).unwrap();
    ok(&convert(
        &[
            "--kind",
            "classification",
            bbc.to_str().unwrap(),
            "--negatives",
            "2",
            "--seed",
            "7",
        ],
        &out,
    ));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        first,
        "seeded: the same draw again"
    );

    // The repository's BEIR fixture (qrels with a zero score).
    ok(&convert(
        &[
            "--kind",
            "beir",
            root().join("tests/fixtures/beir-mini").to_str().unwrap(),
            "--beir-split",
            "test",
        ],
        &out,
    ));
    let qrels = std::fs::read_to_string(root().join("tests/fixtures/beir-mini/qrels.tsv")).unwrap();
    let relevant = tsv_rows(&qrels, true)
        .iter()
        .filter(|r| r[2].trim().parse::<i64>().unwrap() > 0)
        .count();
    assert_eq!(records(&out).len(), relevant);

    // QA and reading comprehension (no public file here: written by hand).
    let qa = dir.path().join("qa.jsonl");
    std::fs::write(
        &qa,
        "{\"question\": \"2+2?\", \"answer\": \"4\"}\n{\"q\": \"x\", \"a\": \"y\"}\n",
    )
    .unwrap();
    ok(&convert(
        &[
            "--kind",
            "qa",
            qa.to_str().unwrap(),
            "--on-malformed",
            "skip",
        ],
        &out,
    ));
    assert_eq!(
        records(&out),
        vec![json!({"type": "retrieval", "query": "2+2?", "pos": "4", "negs": []})]
    );
    let rc = dir.path().join("rc.jsonl");
    std::fs::write(
        &rc,
        "{\"context\": \"文章。\", \"question\": \"问题？\", \"answer\": \"答案\"}\n",
    )
    .unwrap();
    ok(&convert(
        &["--kind", "reading-comprehension", rc.to_str().unwrap()],
        &out,
    ));
    assert_eq!(
        records(&out)[0]["query"],
        "文章。\n请阅读上述文章，回答下列问题：问题？"
    );
}

#[test]
fn bad_inputs_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, "precious\n").unwrap();
    let keep = |o: &Output, needle: &str| {
        let e = err(o);
        assert!(e.contains(needle), "`{needle}` not in: {e}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "precious\n",
            "output touched"
        );
    };
    let bad = dir.path().join("bad.tsv");
    std::fs::write(
        &bad,
        "sentence1\tsentence2\tscore\na\tb\t4\nc\td\tlots\ne\tf\n",
    )
    .unwrap();
    keep(
        &convert(&["--kind", "sts-b", bad.to_str().unwrap()], &out),
        "bad.tsv:3",
    );
    let o = convert(
        &[
            "--kind",
            "sts-b",
            bad.to_str().unwrap(),
            "--on-malformed",
            "skip",
        ],
        &dir.path().join("skip.jsonl"),
    );
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(ok(&o).contains("2 malformed rows skipped"));
    assert!(
        stderr.contains("bad.tsv:3") && stderr.contains("bad.tsv:4"),
        "{stderr}"
    );
    keep(
        &convert(
            &["--kind", "sts-b", bad.to_str().unwrap(), "--split", "train"],
            &out,
        ),
        "no column `split`",
    );
    keep(
        &convert(&["--kind", "sick", bad.to_str().unwrap()], &out),
        "no column `sentence_A`",
    );
    keep(
        &convert(
            &[
                "--kind",
                "sts-b",
                bad.to_str().unwrap(),
                "--field",
                "colour=red",
            ],
            &out,
        ),
        "no role `colour`",
    );
    keep(
        &convert(
            &[
                "--kind",
                "nli",
                shared("nli-zh/snli_zh_50.jsonl").to_str().unwrap(),
            ],
            &out,
        ),
        "snli_zh_50.jsonl:1",
    );
    keep(
        &convert(
            &[
                "--kind",
                "title-body",
                dir.path().join("missing.jsonl").to_str().unwrap(),
            ],
            &out,
        ),
        "missing.jsonl",
    );
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    keep(
        &convert(&["--kind", "qa", empty.to_str().unwrap()], &out),
        "no records",
    );
    keep(
        &convert(&["--kind", "beir", bad.to_str().unwrap()], &out),
        "BEIR folder",
    );
    let one_label = dir.path().join("one.jsonl");
    std::fs::write(
        &one_label,
        "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"x\"}\n",
    )
    .unwrap();
    keep(
        &convert(
            &["--kind", "classification", one_label.to_str().unwrap()],
            &out,
        ),
        "two labels",
    );
    let help = ok(&qzhou(&["data", "convert", "--help"]));
    for kind in [
        "sts-b",
        "sick",
        "msrp",
        "sts-zh",
        "pairs-tsv",
        "pairs-jsonl",
        "nli",
        "triples",
        "beir",
        "title-body",
        "qa",
        "reading-comprehension",
        "classification",
    ] {
        assert!(help.contains(kind), "--help lacks {kind}");
    }
    assert!(help.contains("sentence_A") && help.contains("corpus.jsonl"));
}

#[test]
fn stats_counts_types_and_token_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mix.jsonl");
    // Lengths in tokens of the real Qwen tokenizer: "Hello, world!" is 4 tokens, "a" 1.
    let mut lines = vec![
        json!({"type": "pair", "text1": "Hello, world!", "text2": "a", "score": 1.0}),
        json!({"type": "retrieval", "query": "a", "pos": "Hello, world!", "negs": ["a", "a"], "instruction": "i"}),
        json!({"type": "retrieval", "query": "Hello, world!", "pos": "a", "negs": []}),
    ];
    lines.push(json!({"type": "classification", "query": "a", "pos": "a", "negs": ["a"], "label": "x", "neg_labels": ["y"]}));
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&file, body.join("\n") + "\n").unwrap();
    let out = ok(&qzhou(&[
        "data",
        "stats",
        file.to_str().unwrap(),
        "--tokenizer",
        root().join("tests/fixtures/tiny-qwen2").to_str().unwrap(),
    ]));
    assert!(out.contains("4 records"), "{out}");
    let row = |field: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{field} ")))
            .unwrap_or_else(|| panic!("no {field} row in {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // field, texts, mean, p50, p90, p95, p99, max
    assert_eq!(row("retrieval")[1], "2");
    assert_eq!(row("query")[1..], ["3", "2.0", "1", "4", "4", "4", "4"]);
    assert_eq!(row("neg")[1..], ["3", "1.0", "1", "1", "1", "1", "1"]);
    assert_eq!(row("text1")[1..], ["1", "4.0", "4", "4", "4", "4", "4"]);
    assert!(
        out.contains("negatives per record: min 0, median 1, max 2; 1 with an instruction"),
        "{out}"
    );
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"type\": \"pair\"}\n").unwrap();
    let o = qzhou(&[
        "data",
        "stats",
        broken.to_str().unwrap(),
        "--tokenizer",
        root().join("tests/fixtures/tiny-qwen2").to_str().unwrap(),
    ]);
    assert!(err(&o).contains("broken.jsonl:1"));
}
