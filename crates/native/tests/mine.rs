//! `qzhou mine` on the tiny fixture model over a slice of the real Chinese retrieval triples:
//! positives (and any document with a positive's text) are never chosen, every mined negative
//! scores at most the stated fraction of its positive and sits in the rank window, the input's
//! own negatives are kept first unless replaced, and a seed gives the same file every time.

mod common;

use common::{qzhou, read_jsonl as records, root};

use std::path::Path;

use serde_json::Value;

/// `qzhou mine` with top-k 60, window 2..40 and 4 negatives unless `extra` sets them.
fn mine(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let model = root().join("tests/fixtures/tiny-qwen2");
    let mut args = vec![
        "mine",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for (flag, value) in [
        ("--top-k", "60"),
        ("--window", "2..40"),
        ("--negatives", "4"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    qzhou(&args)
}

#[test]
fn mines_positive_aware_negatives_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let source =
        std::fs::read_to_string(root().join("../shared/data/retrieval-zh/bge_finetune_data.jsonl"))
            .unwrap();
    let slice: Vec<&str> = source.lines().take(40).collect();
    let input = tmp.path().join("triples.jsonl");
    std::fs::write(&input, slice.join("\n") + "\n").unwrap();
    let inputs: Vec<Value> = slice
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let out = tmp.path().join("mined.jsonl");
    let run = mine(
        &input,
        &out,
        &["--max-positive-ratio", "0.95", "--seed", "7"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = records(&out);
    assert_eq!(got.len(), 40);
    let mut mined_total = 0;
    for (r, src) in got.iter().zip(&inputs) {
        assert_eq!(r["type"], "retrieval");
        assert_eq!(r["query"], src["query"]);
        assert_eq!(r["pos"], src["pos"][0]);
        let positives: Vec<&str> = src["pos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let negs: Vec<&str> = r["negs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        // Merge: the input's own negatives first, then the mined ones (new texts only).
        let own: Vec<&str> = src["neg"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(&negs[..own.len()], &own[..]);
        assert!(
            negs.iter().all(|n| !positives.contains(n)),
            "a positive mined as negative"
        );
        let m = &r["mining"];
        let positive = m["positive_score"].as_f64().unwrap();
        let mined = m["mined"].as_array().unwrap();
        // A positive scored at or below 0 (the random model) leaves nothing to compare with.
        if positive <= 0.0 {
            assert!(mined.is_empty());
        }
        assert!(mined.len() <= 4);
        mined_total += mined.len();
        let mut last_rank = 0;
        for x in mined {
            let (rank, score) = (x["rank"].as_u64().unwrap(), x["score"].as_f64().unwrap());
            assert!((2..40).contains(&rank), "rank {rank} outside the window");
            assert!(
                score <= 0.95 * positive + 1e-6,
                "score {score} above 95% of {positive}"
            );
            assert!(rank >= last_rank);
            last_rank = rank;
        }
    }
    assert!(mined_total > 40, "too few mined: {mined_total}");

    // Same seed, same file; another seed draws differently.
    let again = tmp.path().join("again.jsonl");
    assert!(mine(
        &input,
        &again,
        &["--max-positive-ratio", "0.95", "--seed", "7"]
    )
    .status
    .success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let other = tmp.path().join("other.jsonl");
    assert!(mine(
        &input,
        &other,
        &["--max-positive-ratio", "0.95", "--seed", "8"]
    )
    .status
    .success());
    assert_ne!(std::fs::read(&out).unwrap(), std::fs::read(&other).unwrap());

    // A tighter ceiling only removes candidates; replacing drops the input's negatives.
    let tight = tmp.path().join("tight.jsonl");
    assert!(mine(
        &input,
        &tight,
        &["--max-positive-ratio", "0.5", "--replace-negatives"]
    )
    .status
    .success());
    for r in records(&tight) {
        let positive = r["mining"]["positive_score"].as_f64().unwrap();
        for x in r["mining"]["mined"].as_array().unwrap() {
            assert!(x["score"].as_f64().unwrap() <= 0.5 * positive + 1e-6);
        }
        assert_eq!(
            r["negs"].as_array().unwrap().len(),
            r["mining"]["mined"].as_array().unwrap().len()
        );
    }

    // Bad arguments and input are one-line errors.
    let fails = |extra: &[&str], needle: &str| {
        let run = mine(&input, &tmp.path().join("bad.jsonl"), extra);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{needle}");
        assert!(stderr.contains(needle), "`{needle}` not in {stderr}");
    };
    fails(&["--window", "30..2"], "--window 30..2 is empty");
    fails(
        &["--top-k", "10"],
        "--top-k 10 retrieves fewer documents than the window's end 40",
    );
    std::fs::write(&input, "{\"query\": \"q\"}\n").unwrap();
    fails(
        &[],
        "triples.jsonl:1: needs a non-empty `query` and at least one `pos`",
    );
}
