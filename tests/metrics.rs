//! Evaluation metrics against the implementations MTEB uses (`scripts/make_metric_fixtures.py`
//! → `fixtures/metrics.json`): trec_eval through pytrec_eval and mteb's MRR for retrieval,
//! mteb's STS scoring (scipy + sklearn) for STS, mteb's pair-classification thresholds and
//! sklearn's average precision; every value within 1e-6.

mod common;

use common::{json_floats as floats, json_ints as ints, json_rows as rows};
use qzhou_core::metrics::{
    classification_experiments, classification_scores, clustering_experiments, evaluate_retrieval,
    pair_classification_scores, sts_scores, summarization_scores, v_measure, LogisticRegression,
    Qrels, Run, SummarizationText,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_slice(&std::fs::read(common::fixture("metrics.json")).unwrap()).unwrap()
}

#[test]
fn retrieval_metrics_match_pytrec_eval_and_mteb() {
    let f = &fixture()["retrieval"];
    let ks: Vec<usize> = f["ks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_u64().unwrap() as usize)
        .collect();
    let qrels: Qrels = serde_json::from_value(f["qrels"].clone()).unwrap();
    let run: Run = f["run"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(q, docs)| {
            let docs = docs
                .as_object()
                .unwrap()
                .iter()
                .map(|(d, s)| (d.clone(), s.as_f64().unwrap()))
                .collect();
            (q.clone(), docs)
        })
        .collect();
    let scores = evaluate_retrieval(&qrels, &run, &ks).unwrap();
    let expected = f["expected"].as_object().unwrap();
    assert_eq!(scores.per_query.len(), expected.len());
    let mut worst = 0f64;
    let mut means = std::collections::BTreeMap::<&str, Vec<f64>>::new();
    for (qid, want) in expected {
        let got = &scores.per_query[qid];
        for (name, values) in [
            ("ndcg", &got.ndcg),
            ("map", &got.map),
            ("recall", &got.recall),
            ("precision", &got.precision),
            ("hit_rate", &got.hit_rate),
            ("mrr", &got.mrr),
        ] {
            let want = floats(&want[name]);
            for (i, (g, w)) in values.iter().zip(&want).enumerate() {
                worst = worst.max((g - w).abs());
                assert!((g - w).abs() <= 1e-6, "{qid} {name}@{}: {g} vs {w}", ks[i]);
            }
            let sums = means.entry(name).or_insert_with(|| vec![0.0; ks.len()]);
            for (s, w) in sums.iter_mut().zip(&want) {
                *s += w / expected.len() as f64;
            }
        }
    }
    for (i, k) in ks.iter().enumerate() {
        assert!(
            (scores.mean.ndcg[i] - means["ndcg"][i]).abs() <= 1e-9,
            "mean nDCG@{k}"
        );
        assert!(
            (scores.mean.mrr[i] - means["mrr"][i]).abs() <= 1e-9,
            "mean MRR@{k}"
        );
    }
    eprintln!(
        "retrieval: worst |Δ| {worst:.1e} over {} queries",
        expected.len()
    );
}

#[test]
fn sts_scores_match_mteb() {
    let f = &fixture()["sts"];
    let got = sts_scores(&rows(&f["first"]), &rows(&f["second"]), &floats(&f["gold"])).unwrap();
    let got = serde_json::to_value(got).unwrap();
    for (name, want) in f["expected"].as_object().unwrap() {
        let (g, w) = (got[name].as_f64().unwrap(), want.as_f64().unwrap());
        assert!((g - w).abs() <= 1e-6, "{name}: {g} vs {w}");
    }
    // Bad input: mismatched lengths, NaN embeddings.
    assert!(sts_scores(
        &rows(&f["first"]),
        &rows(&f["second"])[1..],
        &floats(&f["gold"])
    )
    .is_err());
    let mut nan = rows(&f["first"]);
    nan[3][0] = f32::NAN;
    assert!(sts_scores(&nan, &rows(&f["second"]), &floats(&f["gold"])).is_err());
}

#[test]
fn pair_classification_matches_mteb() {
    let f = &fixture()["pair_classification"];
    let labels: Vec<bool> = f["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_i64().unwrap() == 1)
        .collect();
    let got = pair_classification_scores(&rows(&f["first"]), &rows(&f["second"]), &labels).unwrap();
    let got = serde_json::to_value(got).unwrap();
    let mut max_ap = 0f64;
    for (similarity, metrics) in f["expected"].as_object().unwrap() {
        for (name, want) in metrics.as_object().unwrap() {
            let (g, w) = (
                got[similarity][name].as_f64().unwrap(),
                want.as_f64().unwrap(),
            );
            assert!((g - w).abs() <= 1e-6, "{similarity} {name}: {g} vs {w}");
        }
        max_ap = max_ap.max(metrics["ap"].as_f64().unwrap());
    }
    assert!((got["max_ap"].as_f64().unwrap() - max_ap).abs() <= 1e-6);
    // One class only, or mismatched lengths: errors.
    assert!(pair_classification_scores(
        &rows(&f["first"]),
        &rows(&f["second"]),
        &vec![true; labels.len()]
    )
    .is_err());
    assert!(
        pair_classification_scores(&rows(&f["first"]), &rows(&f["second"]), &labels[1..]).is_err()
    );
}

#[test]
fn summarization_matches_mteb() {
    let f = &fixture()["summarization"];
    let data: Vec<(Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<f64>)> = f["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (rows(&t["human"]), rows(&t["machine"]), floats(&t["gold"])))
        .collect();
    let texts: Vec<SummarizationText> = data
        .iter()
        .map(|(h, m, g)| SummarizationText {
            human: h,
            machine: m,
            gold: g,
        })
        .collect();
    let got = serde_json::to_value(summarization_scores(&texts).unwrap()).unwrap();
    for (name, want) in f["expected"].as_object().unwrap() {
        let (g, w) = (got[name].as_f64().unwrap(), want.as_f64().unwrap());
        assert!((g - w).abs() <= 1e-6, "{name}: {g} vs {w}");
    }
    // Only the constant-score text: undefined, an error.
    assert!(summarization_scores(&texts[2..3]).is_err());
}

/// mteb's clustering protocol (bootstrap samples, MiniBatchKMeans, V-measure) on five
/// overlapping blobs: mteb's own scores spread 0.60-0.83 across its 10 samples (sd 0.083), so
/// ours, from a different generator, must land within 2 sd of mteb's mean, with a spread of
/// the same order, and repeat exactly for a seed.
#[test]
fn clustering_protocol_within_mteb_spread() {
    let case = &fixture()["clustering_protocol"];
    let want = floats(&case["v_measures"]);
    let n = case["experiments"].as_u64().unwrap() as usize;
    let size = case["sample_size"].as_u64().unwrap() as usize;
    let batch = case["batch_size"].as_u64().unwrap() as usize;
    let x = rows(&case["x"]);
    let y = ints(&case["y"]);
    let got = clustering_experiments(&x, &y, n, size, batch, 42).unwrap();
    assert_eq!(
        got,
        clustering_experiments(&x, &y, n, size, batch, 42).unwrap()
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let sd =
        |v: &[f64]| (v.iter().map(|a| (a - mean(v)).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    assert_eq!(got.len(), want.len());
    assert!(
        (mean(&got) - mean(&want)).abs() <= 2.0 * sd(&want),
        "ours {:.4} ± {:.4}, mteb {:.4} ± {:.4}",
        mean(&got),
        sd(&got),
        mean(&want),
        sd(&want)
    );
    assert!(sd(&got) <= 3.0 * sd(&want), "ours spread {:.4}", sd(&got));
    eprintln!(
        "clustering: ours {:.4} ± {:.4}, mteb {:.4} ± {:.4}",
        mean(&got),
        sd(&got),
        mean(&want),
        sd(&want)
    );
    // Points and labels must pair up.
    assert!(clustering_experiments(&x, &y[1..], n, size, batch, 42).is_err());
}

#[test]
fn v_measure_matches_sklearn() {
    for case in fixture()["v_measure"].as_array().unwrap() {
        let got = v_measure(&ints(&case["truth"]), &ints(&case["pred"])).unwrap();
        let want = case["v_measure"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-12, "{got} vs {want}");
    }
}

#[test]
fn classification_scores_match_sklearn() {
    for case in fixture()["classification"].as_array().unwrap() {
        let got = classification_scores(&ints(&case["truth"]), &ints(&case["pred"])).unwrap();
        let got = serde_json::to_value(got).unwrap();
        for (name, want) in case["expected"].as_object().unwrap() {
            let (g, w) = (got[name].as_f64().unwrap(), want.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-12, "{name}: {g} vs {w}");
        }
    }
}

#[test]
fn logistic_regression_agrees_with_sklearn() {
    let f = &fixture()["logistic_regression"];
    let (train, test) = (rows(&f["train_x"]), rows(&f["test_x"]));
    let model = LogisticRegression::fit(&train, &ints(&f["train_y"]), 4, 100).unwrap();
    let ours = model.predict(&test);
    let theirs = ints(&f["predictions"]);
    let agree = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / ours.len() as f64;
    // Same objective and tolerance, different L-BFGS implementations: near-identical decisions.
    assert!(agree >= 0.97, "agreement with sklearn {agree}");
    // The experiment protocol on the same data: every draw has all 8 rows per label.
    let label = |v: &Value| -> Vec<String> { ints(v).iter().map(|l| format!("c{l}")).collect() };
    let s = classification_experiments(
        &train,
        &label(&f["train_y"]),
        &test,
        &label(&f["test_y"]),
        8,
        3,
        42,
    )
    .unwrap();
    let want = theirs
        .iter()
        .zip(ints(&f["test_y"]))
        .filter(|(p, t)| **p == *t)
        .count() as f64
        / theirs.len() as f64;
    assert!(
        (s.accuracy - want).abs() <= 0.03,
        "{} vs sklearn {want}",
        s.accuracy
    );
}
