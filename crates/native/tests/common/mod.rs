//! Helpers shared by the `qzhou` CLI tests.
#![allow(dead_code)] // each test file uses a subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run the built `qzhou` with `args`.
pub fn qzhou(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qzhou"))
        .args(args)
        .output()
        .expect("run qzhou")
}

/// The stdout of a successful run; panics with its stderr otherwise.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "qzhou failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The records of a JSON-lines file.
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// `data/registry` (BBC News, Lee): fetched with the repository's script when either set is
/// absent.
pub fn registry_data() -> PathBuf {
    let data = root().join("data/registry");
    if !data.join("lee-sts.jsonl").exists() || !data.join("bbc-news.jsonl").exists() {
        let status = Command::new("python3")
            .arg(root().join("scripts/fetch-registry-data.py"))
            .status()
            .expect("python3 runs scripts/fetch-registry-data.py");
        assert!(status.success(), "scripts/fetch-registry-data.py failed");
    }
    data
}
