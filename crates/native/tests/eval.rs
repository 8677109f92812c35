//! `qzhou eval` end to end on the tiny fixture model over slices of the real datasets in
//! `../shared/data` (STS-B en/zh, SICK, MSRP, Chinese retrieval triples) and the registry sets
//! (BBC News, Lee; `scripts/fetch-registry-data.py`): MTEB result files with the fields mteb's
//! `TaskResult` reads, a second run served entirely from the embedding cache with identical
//! scores; the BEIR layout in Parquet and JSONL; clear errors for bad manifests and data.

mod common;

use common::{qzhou, registry_data, root};

use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// The shipped manifests of `tasks/`, each limited to its first `limit` rows (genre tasks whole).
fn sliced_manifests(dir: &Path, limit: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(root().join("tasks")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Paths in tasks/ are relative to it: make them absolute for the copy.
        let text = text.replace("= \"../", &format!("= \"{}/tasks/../", root().display()));
        // Genre tasks need every genre, and the file is sorted by genre: no slicing there.
        let whole =
            text.contains("type = \"classification\"") || text.contains("type = \"clustering\"");
        let body = if whole {
            text
        } else {
            format!("limit = {limit}\n{text}")
        };
        std::fs::write(dir.join(path.file_name().unwrap()), body).unwrap();
    }
}

fn run_eval(manifests: &Path, out: &Path) -> Output {
    qzhou(&[
        "eval",
        "--model",
        root().join("tests/fixtures/tiny-qwen2").to_str().unwrap(),
        "--manifest-dir",
        manifests.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn evaluates_real_dataset_slices_and_reuses_the_cache() {
    registry_data();
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("tasks");
    sliced_manifests(&manifests, 120);
    let out = tmp.path().join("results");
    let first = run_eval(&manifests, &out);
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(first.status.success(), "{stderr}");
    let names = [
        "STSBenchmark",
        "STSB",
        "SICK-train",
        "MSRP-train",
        "zh-triples-retrieval",
        "zh-triples-reranking",
        "STSB-genre-classification",
        "STSB-genre-clustering",
        "BBCNews-classification",
        "BBCNews-clustering-p2p",
        "BBCNews-title-retrieval",
        "Lee-document-sts",
    ];
    let mut mains = Vec::new();
    for name in names {
        let r: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap())
                .unwrap();
        // The fields mteb's TaskResult needs (checked with mteb 2.26 on a developer machine).
        assert_eq!(r["task_name"], name);
        for key in [
            "dataset_revision",
            "mteb_version",
            "evaluation_time",
            "kg_co2_emissions",
        ] {
            assert!(r.get(key).is_some(), "{name}: {key} missing");
        }
        let (split, scores) = r["scores"].as_object().unwrap().iter().next().unwrap();
        assert!(["test", "train"].contains(&split.as_str()));
        let s = &scores[0];
        assert_eq!(s["hf_subset"], "default");
        assert!(s["languages"].is_array());
        let main = s["main_score"].as_f64().unwrap();
        assert!(
            (-1.0..=1.0).contains(&main) && main.is_finite(),
            "{name}: {main}"
        );
        mains.push(main);
    }
    let retrieval: Value =
        serde_json::from_slice(&std::fs::read(out.join("zh-triples-retrieval.json")).unwrap())
            .unwrap();
    let r = &retrieval["scores"]["train"][0];
    for k in [1, 3, 5, 10, 100, 1000] {
        for m in [
            "ndcg_at",
            "map_at",
            "recall_at",
            "precision_at",
            "mrr_at",
            "hit_rate_at",
        ] {
            assert!(r[format!("{m}_{k}")].is_number(), "{m}_{k}");
        }
    }
    assert_eq!(r["main_score"], r["ndcg_at_10"]);
    // Genre from sentence embeddings: above chance (1/3) even for the tiny random model's
    // lexical signal; clustering reports its seed spread.
    let cls: Value =
        serde_json::from_slice(&std::fs::read(out.join("STSB-genre-classification.json")).unwrap())
            .unwrap();
    let c = &cls["scores"]["test"][0];
    for key in ["accuracy", "f1", "f1_weighted", "precision", "recall"] {
        assert!(c[key].is_number(), "{key}");
    }
    let clu: Value =
        serde_json::from_slice(&std::fs::read(out.join("STSB-genre-clustering.json")).unwrap())
            .unwrap();
    assert_eq!(
        clu["scores"]["test"][0]["v_measures"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["tasks"].as_array().unwrap().len(), names.len());
    assert!(summary["mean_over_types"].is_number());

    // Second run: nothing embedded, the same scores.
    let second = run_eval(&manifests, &out);
    let stderr2 = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(second.status.success(), "{stderr2}");
    assert!(stderr2.contains("0 texts embedded this run"), "{stderr2}");
    for (name, want) in names.iter().zip(&mains) {
        let r: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap())
                .unwrap();
        let (_, scores) = r["scores"].as_object().unwrap().iter().next().unwrap();
        assert_eq!(scores[0]["main_score"].as_f64().unwrap(), *want, "{name}");
    }
}

#[test]
fn bad_manifests_and_data_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tasks");
    std::fs::create_dir_all(&dir).unwrap();
    let data = tmp.path().join("pairs.tsv");
    std::fs::write(&data, "a\tb\tscore\nx y\tx z\t1.0\np q\tr s\tnan-ish\n").unwrap();
    let write = |body: &str| std::fs::write(dir.join("t.toml"), body).unwrap();
    let fails = |needle: &str| {
        let out = run_eval(&dir, &tmp.path().join("out"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "expected failure: {needle}");
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    };
    let base = format!(
        "name = \"t\"\ntype = \"sts\"\npath = \"{}\"\nformat = \"tsv\"\n",
        data.display()
    );
    write(&format!(
        "{base}columns = {{ text1 = \"a\", text2 = \"b\" }}\n"
    ));
    fails("columns.score is missing");
    write(&format!(
        "{base}columns = {{ text1 = \"a\", text2 = \"b\", score = \"nope\" }}\n"
    ));
    fails("no column `nope`");
    write(&format!(
        "{base}columns = {{ text1 = \"a\", text2 = \"b\", score = \"score\" }}\n"
    ));
    fails("is not a number");
    write(&format!(
        "{}columns = {{ text1 = \"a\", text2 = \"b\", score = \"score\" }}\n",
        base.replace(&data.display().to_string(), "/no/such/file.tsv")
    ));
    fails("cannot open /no/such/file.tsv");
    write(&format!(
        "{}columns = {{ text1 = \"a\", text2 = \"b\", score = \"score\" }}\nfetch = \"run get-data.sh\"\n",
        base.replace(&data.display().to_string(), "/no/such/file.tsv")
    ));
    fails("/no/such/file.tsv does not exist (get it with: run get-data.sh)");
    write(&format!("{base}task = \"STSBenchmarkk\"\ncolumns = {{ text1 = \"a\", text2 = \"b\", score = \"score\" }}\n"));
    fails("STSBenchmark");
    write(&format!(
        "{}columns = {{ text = \"a\", label = \"b\" }}\n",
        base.replace("type = \"sts\"", "type = \"classification\"")
    ));
    fails("needs train_filter");
    write(&format!(
        "{base}columns = {{ text1 = \"a\", text2 = \"b\", score = \"score\" }}\nlimit = 1\n"
    ));
    let out = qzhou(&[
        "eval",
        "--model",
        root().join("tests/fixtures/tiny-qwen2").to_str().unwrap(),
        "--manifest-dir",
        dir.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
        "--tasks",
        "missing-task",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task `missing-task`"));
}

/// A BEIR-layout manifest over `tests/fixtures/beir-mini` with the given file extensions.
fn beir_manifest(dir: &Path, name: &str, corpus: &str, queries: &str, extra: &str) {
    let fixture = root().join("tests/fixtures/beir-mini");
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            // The same instruction on both sides: a query and its copy embed identically.
            "name = \"{name}\"\ntype = \"retrieval\"\ninstruction = \"Find the same sentence\"\napply_to = \"all\"\ncorpus = \"{}\"\nqueries = \"{}\"\nqrels = \"{}\"\n{extra}",
            fixture.join(corpus).display(),
            fixture.join(queries).display(),
            fixture.join("qrels.tsv").display(),
        ),
    )
    .unwrap();
}

fn main_scores(out: &Path, name: &str) -> Value {
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap()).unwrap();
    r["scores"]["test"][0].clone()
}

/// `scripts/make_beir_fixture.py`: each query is a copy of its one relevant document (half the
/// documents split into title + text, which must be joined back with a space), so any encoder
/// ranks it first: nDCG@10 = MRR@10 = Recall@1 = 1. Parquet (snappy corpus, zstd queries) and
/// JSONL give the same scores.
#[test]
fn beir_layout_from_parquet_and_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tasks");
    std::fs::create_dir_all(&dir).unwrap();
    beir_manifest(
        &dir,
        "mini-parquet",
        "corpus.parquet",
        "queries.parquet",
        "",
    );
    beir_manifest(&dir, "mini-jsonl", "corpus.jsonl", "queries.jsonl", "");
    beir_manifest(
        &dir,
        "mini-limit",
        "corpus.jsonl",
        "queries.parquet",
        "limit = 5\n",
    );
    // Reranking in the same layout (MTEB v2): four candidates per query, the relevant one
    // listed second; ranked first all the same.
    let top_ranked = root().join("tests/fixtures/beir-mini/top_ranked.jsonl");
    beir_manifest(
        &dir,
        "mini-rerank",
        "corpus.jsonl",
        "queries.jsonl",
        &format!("top_ranked = \"{}\"\n", top_ranked.display()),
    );
    let rerank = dir.join("mini-rerank.toml");
    let text = std::fs::read_to_string(&rerank).unwrap();
    std::fs::write(
        &rerank,
        text.replace("type = \"retrieval\"", "type = \"reranking\""),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = run_eval(&dir, &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reranked = main_scores(&out, "mini-rerank");
    for key in ["map_at_1000", "mrr_at_10", "recall_at_1", "main_score"] {
        let v = reranked[key].as_f64().unwrap();
        assert!((v - 1.0).abs() < 1e-9, "reranking {key} = {v}");
    }
    // Four candidates, one relevant: P@3 = 1/3, and nothing beyond the candidates is ranked.
    let p3 = reranked["precision_at_3"].as_f64().unwrap();
    assert!((p3 - 1.0 / 3.0).abs() < 1e-9, "{p3}");
    let p10 = reranked["precision_at_10"].as_f64().unwrap();
    assert!((p10 - 0.1).abs() < 1e-9, "{p10}");
    let parquet = main_scores(&out, "mini-parquet");
    let jsonl = main_scores(&out, "mini-jsonl");
    for key in [
        "ndcg_at_10",
        "mrr_at_10",
        "recall_at_1",
        "precision_at_1",
        "map_at_1000",
    ] {
        let v = parquet[key].as_f64().unwrap();
        assert!((v - 1.0).abs() < 1e-9, "{key} = {v}");
    }
    for (key, v) in parquet.as_object().unwrap() {
        if key != "evaluation_time" {
            assert_eq!(&jsonl[key], v, "{key}");
        }
    }
    // Precision@3 with one relevant document per query: exactly 1/3.
    let p3 = parquet["precision_at_3"].as_f64().unwrap();
    assert!((p3 - 1.0 / 3.0).abs() < 1e-9, "{p3}");
    assert_eq!(
        main_scores(&out, "mini-limit")["main_score"],
        parquet["main_score"]
    );
}

/// Broken BEIR sets: a missing qrels file, judgments naming absent documents or queries, a
/// malformed Parquet file; an empty split; a model whose weights hold NaN.
#[test]
fn bad_retrieval_data_and_nan_embeddings_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tasks");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = root().join("tests/fixtures/beir-mini");
    let fails = |needle: &str| {
        let out = run_eval(&dir, &tmp.path().join("out"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "expected failure: {needle}");
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    };
    let with_qrels = |qrels: &str| {
        format!(
            "name = \"t\"\ntype = \"retrieval\"\ncorpus = \"{}\"\nqueries = \"{}\"\nqrels = \"{qrels}\"\n",
            fixture.join("corpus.jsonl").display(),
            fixture.join("queries.jsonl").display(),
        )
    };
    let manifest = dir.join("t.toml");
    std::fs::write(&manifest, with_qrels("/no/such/qrels.tsv")).unwrap();
    fails("cannot open /no/such/qrels.tsv");
    let qrels = tmp.path().join("qrels.tsv");
    std::fs::write(&qrels, "query-id\tcorpus-id\tscore\nq0\tdoc99\t1\n").unwrap();
    std::fs::write(&manifest, with_qrels(&qrels.display().to_string())).unwrap();
    fails("judges document `doc99` for query `q0`, but it is not in");
    std::fs::write(&qrels, "query-id\tcorpus-id\tscore\nq77\tdoc00\t1\n").unwrap();
    fails("judges query `q77`, which is not in");
    std::fs::write(&qrels, "query-id\tcorpus-id\tscore\n").unwrap();
    fails("has no judgments");
    std::fs::write(&qrels, "query-id\tcorpus-id\tscore\nq0\tdoc00\thigh\n").unwrap();
    fails("score `high` is not an integer");
    let broken = tmp.path().join("corpus.parquet");
    std::fs::write(&broken, b"PAR1 not really").unwrap();
    std::fs::write(
        &manifest,
        with_qrels(&fixture.join("qrels.tsv").display().to_string()).replace(
            &fixture.join("corpus.jsonl").display().to_string(),
            &broken.display().to_string(),
        ),
    )
    .unwrap();
    fails("is not a readable Parquet file");
    // Reranking candidates naming an absent document; top_ranked on a retrieval task.
    let top = tmp.path().join("top.jsonl");
    std::fs::write(
        &top,
        "{\"query-id\": \"q0\", \"corpus-ids\": [\"doc00\", \"doc99\"]}\n",
    )
    .unwrap();
    let rerank = with_qrels(&fixture.join("qrels.tsv").display().to_string())
        + &format!("top_ranked = \"{}\"\n", top.display());
    std::fs::write(&manifest, &rerank).unwrap();
    fails("`top_ranked` is for type = \"reranking\"");
    std::fs::write(
        &manifest,
        rerank.replace("type = \"retrieval\"", "type = \"reranking\""),
    )
    .unwrap();
    fails("candidate `doc99` of query `q0` is not in");
    // An empty split: the filter keeps nothing.
    std::fs::write(
        &manifest,
        format!(
            "name = \"t\"\ntype = \"sts\"\npath = \"{}\"\ncolumns = {{ text1 = \"sentence1\", text2 = \"sentence2\", score = \"score\" }}\nfilter = {{ split = \"validation\" }}\n",
            root().join("../shared/data/sts-b-en/stsbenchmark.tsv.gz").display()
        ),
    )
    .unwrap();
    fails("no rows in");

    // NaN in the final norm's weight: every embedding is NaN.
    let model = tmp.path().join("nan-model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(root().join("tests/fixtures/tiny-qwen2")).unwrap() {
        let path = entry.unwrap().path();
        let to = model.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                std::fs::copy(&inner, to.join(inner.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&path, &to).unwrap();
        }
    }
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let norm = &header["norm.weight"];
    assert_eq!(norm["dtype"], "F32");
    let start = 8 + header_len + norm["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, bytes).unwrap();
    beir_manifest(&dir, "t", "corpus.jsonl", "queries.jsonl", "");
    let out = qzhou(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--manifest-dir",
        dir.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is not finite (NaN or infinity)"),
        "{stderr}"
    );
}

/// `--attention`/`--pooling` evaluate a causal last-token folder (tiny Qwen3) in QZhou's form
/// without editing its config, and the embedding cache keeps the two forms apart.
#[test]
fn form_overrides_evaluate_another_form_with_its_own_cache_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tasks");
    std::fs::create_dir_all(&dir).unwrap();
    beir_manifest(&dir, "mini", "corpus.jsonl", "queries.jsonl", "");
    let cache = tmp.path().join("cache");
    let eval = |form: &[&str]| {
        let model = root().join("tests/fixtures/tiny-qwen3");
        let (out, cache) = (tmp.path().join("out"), cache.to_str().unwrap().to_string());
        let mut args = vec![
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--manifest-dir",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            &cache,
        ];
        args.extend_from_slice(form);
        let run = qzhou(&args);
        let stderr = String::from_utf8_lossy(&run.stderr).to_string();
        assert!(run.status.success(), "{stderr}");
        let embedded: usize = stderr
            .split(" texts embedded this run")
            .next()
            .and_then(|s| s.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {stderr}"));
        (embedded, main_scores(&out, "mini"))
    };
    let qzhou_form = ["--attention", "bidirectional", "--pooling", "mean"];
    let (native, _) = eval(&[]);
    assert!(native > 0);
    let (first, scores) = eval(&qzhou_form);
    assert_eq!(
        first, native,
        "the overridden form reused the causal form's cache entries"
    );
    assert_eq!(scores["ndcg_at_10"].as_f64(), Some(1.0));
    let (again, _) = eval(&qzhou_form);
    assert_eq!(again, 0);
    let (native_again, _) = eval(&[]);
    assert_eq!(native_again, 0);
}
