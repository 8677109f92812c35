//! `qzhou embed --shard I/N` and `qzhou merge-shards`: shards joined are the unsharded output
//! byte for byte, a killed shard redoes only its unfinished chunks, and stale or missing pieces
//! are refused with a reason.

mod common;

use common::{ok, qzhou, root};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn model() -> String {
    root()
        .join("tests/fixtures/tiny-qwen2")
        .to_string_lossy()
        .to_string()
}

/// 1,000 texts of 1 to ~60 tokens (lengths vary within every chunk, so batches pad).
fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    let lines: Vec<String> = (0..1000)
        .map(|i| {
            let words = ["cat", "river", "stone", "晴天", "light", "quiet", "number"];
            let n = 1 + (i * 7919) % 40;
            let body: Vec<&str> = (0..n).map(|k| words[(i + k) % words.len()]).collect();
            format!("{i}: {}", body.join(" "))
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fails_with(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    assert!(
        stderr.starts_with("qzhou: error: ") && stderr.contains(needle),
        "`{needle}` not in: {stderr}"
    );
}

#[test]
fn three_shards_joined_are_the_unsharded_output_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let m = model();
    for out in ["emb.jsonl", "emb.npy"] {
        let full = dir.path().join(format!("full-{out}"));
        ok(&qzhou(&[
            "embed",
            "-m",
            &m,
            "-i",
            s(&input),
            "-o",
            s(&full),
        ]));
        let joined = dir.path().join(out);
        // Shard 1 first: order of completion does not matter.
        for i in [1, 0, 2] {
            ok(&qzhou(&[
                "embed",
                "-m",
                &m,
                "-i",
                s(&input),
                "-o",
                s(&joined),
                "--shard",
                &format!("{i}/3"),
            ]));
        }
        let shards: Vec<PathBuf> = (0..3)
            .map(|i| {
                let ext = joined.extension().unwrap().to_str().unwrap();
                dir.path().join(format!("emb-{i:05}-of-00003.{ext}"))
            })
            .collect();
        assert!(shards.iter().all(|p| p.is_file()));
        ok(&qzhou(&[
            "merge-shards",
            "-o",
            s(&joined),
            "--remove-shards",
        ]));
        assert_eq!(
            std::fs::read(&joined).unwrap(),
            std::fs::read(&full).unwrap(),
            "{out}: joined shards differ from the unsharded output"
        );
        assert!(
            shards.iter().all(|p| !p.exists()),
            "--remove-shards kept files"
        );
    }
    // 1,000 texts in chunks of 256 over 3 shards: 256 + 256 + 488 lines.
    let jsonl = std::fs::read_to_string(dir.path().join("emb.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 1000);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], 0);
}

#[test]
fn merge_names_missing_and_mixed_shards() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let m = model();
    let out = dir.path().join("e.jsonl");
    fails_with(
        &qzhou(&["merge-shards", "-o", s(&out)]),
        "no shard files e-IIIII-of-NNNNN.jsonl",
    );
    for spec in ["0/3", "2/3"] {
        ok(&qzhou(&[
            "embed",
            "-m",
            &m,
            "-i",
            s(&input),
            "-o",
            s(&out),
            "--shard",
            spec,
        ]));
    }
    fails_with(
        &qzhou(&["merge-shards", "-o", s(&out)]),
        "1 of 3 shards missing (not finished or not run): 1",
    );
    assert!(!out.exists(), "a failed merge wrote its output");
    ok(&qzhou(&[
        "embed",
        "-m",
        &m,
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--shard",
        "0/2",
    ]));
    fails_with(
        &qzhou(&["merge-shards", "-o", s(&out)]),
        "shard files of two runs",
    );
    for (spec, needle) in [
        ("3/3", "expected I/N with 0 ≤ I < N"),
        ("1/0", "expected I/N"),
        ("x", "expected I/N"),
    ] {
        let o = qzhou(&[
            "embed",
            "-m",
            &m,
            "-i",
            s(&input),
            "-o",
            s(&out),
            "--shard",
            spec,
        ]);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{spec}"
        );
    }
    // A finished shard is not embedded again.
    let again = qzhou(&[
        "embed",
        "-m",
        &m,
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--shard",
        "0/3",
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("is already done"));
}

/// Chunk files (`chunk-*.jsonl`) finished in a shard's parts folder.
fn finished_chunks(parts: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(parts)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("chunk-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_killed_shard_redoes_only_its_unfinished_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let m = model();
    let full = dir.path().join("full.jsonl");
    ok(&qzhou(&[
        "embed",
        "-m",
        &m,
        "-i",
        s(&input),
        "-o",
        s(&full),
        "--chunk-texts",
        "5",
    ]));
    let out = dir.path().join("emb.jsonl");
    let shard_out = dir.path().join("emb-00001-of-00002.jsonl");
    let parts = dir.path().join("emb-00001-of-00002.jsonl.parts");
    let args = [
        "embed",
        "-m",
        &m,
        "-i",
        s(&input),
        "-o",
        s(&out),
        "--shard",
        "1/2",
        "--chunk-texts",
        "5",
    ];
    // Kill it (SIGKILL: no clean-up) once a few chunks are done; try again should the tiny
    // model finish first.
    let mut killed_after = None;
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(&parts);
        let _ = std::fs::remove_file(&shard_out);
        let mut child = Command::new(env!("CARGO_BIN_EXE_qzhou"))
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while finished_chunks(&parts).len() < 3 && start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if !shard_out.exists() {
            killed_after = Some(finished_chunks(&parts));
            break;
        }
    }
    let before = killed_after.expect("the shard always finished before it could be killed");
    assert!(!before.is_empty());
    // 500 texts, 100 chunks: the rerun embeds only those not found.
    let log = qzhou(&args);
    let stderr = String::from_utf8_lossy(&log.stderr).to_string();
    assert!(log.status.success(), "{stderr}");
    let done = before.len();
    assert!(
        stderr.contains(&format!(
            "100 chunks ({done} found done, {} embedded)",
            100 - done
        )),
        "{stderr}"
    );
    assert!(
        !parts.exists(),
        "parts folder left after the shard finished"
    );
    let full = std::fs::read_to_string(&full).unwrap();
    let tail: String = full.lines().skip(500).map(|l| format!("{l}\n")).collect();
    assert_eq!(std::fs::read_to_string(&shard_out).unwrap(), tail);
}

#[test]
fn chunks_of_another_job_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let m = model();
    let out = dir.path().join("emb.jsonl");
    let parts = dir.path().join("emb-00000-of-00002.jsonl.parts");
    std::fs::create_dir(&parts).unwrap();
    std::fs::write(parts.join("job.json"), "{\"fingerprint\":\"0000\"}").unwrap();
    std::fs::write(parts.join("chunk-0000000000.jsonl"), "stale\n").unwrap();
    fails_with(
        &qzhou(&[
            "embed",
            "-m",
            &m,
            "-i",
            s(&input),
            "-o",
            s(&out),
            "--shard",
            "0/2",
        ]),
        "holds chunks of a different job",
    );
    assert_eq!(
        std::fs::read_to_string(parts.join("chunk-0000000000.jsonl")).unwrap(),
        "stale\n",
        "the other job's chunks were touched"
    );
    fails_with(
        &qzhou(&[
            "embed",
            "-m",
            &m,
            "-i",
            "-",
            "-o",
            s(&out),
            "--shard",
            "0/2",
        ]),
        "not standard input",
    );
}
