//! `qzhou eval` end to end on the tiny fixture model over slices of the real datasets in
//! `../shared/data` (STS-B en/zh, SICK, MSRP, Chinese retrieval triples): MTEB result files
//! with the fields mteb's `TaskResult` reads, a second run served entirely from the embedding
//! cache with identical scores, and clear errors for bad manifests and data.

mod common;

use common::{qzhou, root};

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
        let text = text.replace(
            "path = \"../",
            &format!("path = \"{}/tasks/../", root().display()),
        );
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
