//! `qzhou embed` end to end: output against the transformers reference, input/output formats,
//! hub download from a local server in the hub's URL layout, and one-line errors.

mod common;

use common::{cosine, ok, root};

use std::path::PathBuf;
use std::process::{Command, Output};

use qzhou_core::fs::open_checkpoint;
use qzhou_core::quantization::{quantize_scaled_fitted, GridFit, Quantization};
use qzhou_core::weight_pack::PackManifest;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

fn qzhou(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qzhou"));
    cmd.args(args)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_HOME");
    // The hub test talks to 127.0.0.1: keep any proxy configured for the registries out of it.
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run qzhou")
}

/// Non-zero exit and exactly one stderr line `qzhou: error: ...` containing `needle`.
fn fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.starts_with("qzhou: error: ") && stderr.contains(needle),
        "`{needle}` not in: {stderr}"
    );
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn rows(jsonl: &str) -> Vec<(Value, Vec<f32>)> {
    jsonl
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let e = v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (v["id"].clone(), e)
        })
        .collect()
}

fn assert_matches_reference(got: &[Vec<f32>], model: &str, run: &str) {
    let want = &expected()["models"][model]["embeddings"][run];
    for (i, g) in got.iter().enumerate() {
        let w: Vec<f32> = want[i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d <= 1e-5, "row {i}: max|Δ| {d}");
    }
}

/// `qzhou embed -m model --document` of [`texts`], the vectors in order.
fn embed_documents(model: &std::path::Path) -> Vec<Vec<f32>> {
    embed_documents_with(model, &[])
}

/// [`embed_documents`] with `extra` flags (`--pooling mean`).
fn embed_documents_with(model: &std::path::Path, extra: &[&str]) -> Vec<Vec<f32>> {
    let texts = texts();
    let mut args = vec!["embed", "-m", model.to_str().unwrap(), "--document"];
    args.extend(extra);
    args.extend(texts.iter().map(String::as_str));
    rows(&ok(&qzhou(&args, &[])))
        .into_iter()
        .map(|r| r.1)
        .collect()
}

fn texts() -> Vec<String> {
    expected()["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn embeds_arguments_like_transformers() {
    let texts = texts();
    let model = fixture("tiny-qwen2");
    let mut args = vec!["embed", "--model", model.to_str().unwrap(), "--document"];
    args.extend(texts.iter().map(String::as_str));
    let out = rows(&ok(&qzhou(&args, &[])));
    assert_eq!(out.len(), texts.len());
    assert_eq!(out[3].0, Value::from(3));
    let got: Vec<Vec<f32>> = out.into_iter().map(|r| r.1).collect();
    assert_matches_reference(&got, "tiny-qwen2", "bidirectional-mean");
    // Qwen3 fixture: its folder says causal + last token.
    let got = embed_documents(&fixture("tiny-qwen3"));
    assert_matches_reference(&got, "tiny-qwen3", "causal-lasttoken");
    // Every matmul the wgpu backend can be told to run gives transformers' vectors.
    for kernel in ["auto", "burn", "row-tile", "tiled"] {
        let flags = ["--backend", "wgpu", "--matmul-kernel", kernel];
        let got = embed_documents_with(&model, &flags);
        assert_matches_reference(&got, "tiny-qwen2", "bidirectional-mean");
    }
}

#[test]
fn jsonl_in_npy_out_and_queries_get_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = texts()
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": format!("t{i}"), "text": t}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let npy = dir.path().join("out.npy");
    let model = fixture("tiny-qwen2");
    ok(&qzhou(
        &[
            "embed",
            "-m",
            model.to_str().unwrap(),
            "--document",
            "-i",
            input.to_str().unwrap(),
            "-o",
            npy.to_str().unwrap(),
        ],
        &[],
    ));
    let bytes = std::fs::read(&npy).unwrap();
    let arr = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(arr.shape(), &[texts().len() as u64, 32]);
    let flat = arr.into_vec::<f32>().unwrap();
    let got: Vec<Vec<f32>> = flat.chunks(32).map(<[f32]>::to_vec).collect();
    assert_matches_reference(&got, "tiny-qwen2", "bidirectional-mean");

    // `--query` (default) adds the web-search instruction: same as the pre-formatted text 0.
    let q = rows(&ok(&qzhou(
        &[
            "embed",
            "-m",
            model.to_str().unwrap(),
            "what is the capital of France?",
        ],
        &[],
    )));
    assert_matches_reference(&[q[0].1.clone()], "tiny-qwen2", "bidirectional-mean");
}

#[test]
fn errors_are_one_line_and_keep_existing_output() {
    let model = fixture("tiny-qwen2");
    let m = model.to_str().unwrap();
    fails_with(
        &qzhou(&["embed", "-m", "/no/such/model", "hi"], &[]),
        "model folder /no/such/model not found",
    );
    fails_with(
        &qzhou(&["embed", "-m", m, "--task", "NoSuchTask", "hi"], &[]),
        "unknown task `NoSuchTask`",
    );
    fails_with(
        &qzhou(&["embed", "-m", m, "ok", ""], &[]),
        "text argument #1 is empty",
    );
    fails_with(&qzhou(&["embed", "-m", m], &[]), "no texts");
    fails_with(
        &qzhou(
            &[
                "embed",
                "-m",
                m,
                "--max-length",
                "4",
                "--no-truncate",
                "one two three four five",
            ],
            &[],
        ),
        "more than the maximum length 4",
    );
    fails_with(
        &qzhou(
            &[
                "embed",
                "-m",
                m,
                "--backend",
                "cpu",
                "--dtype",
                "bf16",
                "hi",
            ],
            &[],
        ),
        "f32 only",
    );
    #[cfg(not(feature = "cuda"))]
    fails_with(
        &qzhou(&["embed", "-m", m, "--backend", "cuda", "hi"], &[]),
        "built without CUDA",
    );
    fails_with(
        &qzhou(&["embed", "-m", m, "--matmul-kernel", "tiled", "hi"], &[]),
        "--matmul-kernel tiled chooses among the wgpu backend's own kernels",
    );
    // (A flag value clap refuses: its own usage message, which names the problem.)
    let out = qzhou(&["embed", "-m", m, "--matmul-kernel", "fast", "hi"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--matmul-kernel fast succeeded");
    assert!(
        stderr.contains("matmul kernel `fast` (expected `auto`, `burn`, `row-tile` or `tiled`)"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, "precious\n").unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"text\": \n").unwrap();
    fails_with(
        &qzhou(
            &[
                "embed",
                "-m",
                m,
                "-i",
                bad.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            &[],
        ),
        "bad.jsonl:2: malformed JSON",
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
}

/// Serve `dir` as hub repo `org/name` at revision `main`, the way hf-hub expects: ETag,
/// x-repo-commit and byte ranges.
fn serve_hub(
    dir: PathBuf,
) -> (
    String,
    std::thread::JoinHandle<()>,
    std::sync::Arc<tiny_http::Server>,
) {
    let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let addr = format!("http://{}", server.server_addr().to_ip().unwrap());
    let s = server.clone();
    let handle = std::thread::spawn(move || {
        for req in s.incoming_requests() {
            let url = req.url().to_string();
            let Some(file) = url.strip_prefix("/org/tiny/resolve/main/") else {
                let _ = req.respond(tiny_http::Response::empty(404));
                continue;
            };
            let path = dir.join(file);
            let Ok(bytes) = std::fs::read(&path) else {
                let _ = req.respond(tiny_http::Response::empty(404));
                continue;
            };
            let etag = format!("\"{:016x}{:08x}\"", fnv(&bytes), bytes.len());
            let range = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("Range"))
                .map(|h| h.value.as_str().to_string());
            let (status, body, content_range) =
                match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
                    Some(r) => {
                        let (a, b) = r.split_once('-').unwrap();
                        let a: usize = a.parse().unwrap();
                        let b: usize = if b.is_empty() {
                            bytes.len() - 1
                        } else {
                            b.parse::<usize>().unwrap().min(bytes.len() - 1)
                        };
                        (
                            206,
                            bytes[a..=b].to_vec(),
                            Some(format!("bytes {a}-{b}/{}", bytes.len())),
                        )
                    }
                    None => (200, bytes.clone(), None),
                };
            let mut resp = tiny_http::Response::from_data(body)
                .with_status_code(status)
                .with_header(tiny_http::Header::from_bytes("ETag", etag).unwrap())
                .with_header(
                    tiny_http::Header::from_bytes(
                        "x-repo-commit",
                        "0123456789abcdef0123456789abcdef01234567",
                    )
                    .unwrap(),
                );
            if let Some(cr) = content_range {
                resp =
                    resp.with_header(tiny_http::Header::from_bytes("Content-Range", cr).unwrap());
            }
            let _ = req.respond(resp);
        }
    });
    (addr, handle, server)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn downloads_from_a_hub_endpoint_and_caches() {
    let (endpoint, _handle, server) = serve_hub(fixture("tiny-qwen3"));
    let home = tempfile::tempdir().unwrap();
    let envs = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home.path().to_str().unwrap()),
    ];
    let hub = ok(&qzhou(
        &["embed", "-m", "org/tiny", "--document", "Hello"],
        &envs,
    ));
    let local = ok(&qzhou(
        &[
            "embed",
            "-m",
            fixture("tiny-qwen3").to_str().unwrap(),
            "--document",
            "Hello",
        ],
        &[],
    ));
    assert_eq!(hub, local);
    let snapshot = home
        .path()
        .join("hub/models--org--tiny/snapshots/0123456789abcdef0123456789abcdef01234567");
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        assert!(snapshot.join(f).exists(), "{f} not cached");
    }
    // A missing repository is an error naming the file.
    fails_with(
        &qzhou(&["embed", "-m", "org/missing", "x"], &envs),
        "downloading config.json of org/missing@main",
    );
    server.unblock();
}

/// A web pack's manifest (and a GGUF) is a model too: `qzhou embed`/`eval` read the pack's q8
/// or q4 blocks dequantised on the CPU — the task score of a pack without a browser.
#[test]
fn web_pack_manifests_load_natively_and_verify_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    let model = fixture("tiny-qwen2");
    ok(&qzhou(
        &[
            "export-web",
            "-m",
            model.to_str().unwrap(),
            "--out",
            web.to_str().unwrap(),
            "--quant",
            "f32,q8",
        ],
        &[],
    ));
    // f32 pack = the folder, bit for bit (after JSON round trip): transformers' numbers.
    assert_matches_reference(
        &embed_documents(&web.join("manifest-f32.json")),
        "tiny-qwen2",
        "bidirectional-mean",
    );
    let direct = embed_documents(&model);
    let q8 = embed_documents(&web.join("manifest-q8.json"));
    for (q, d) in q8.iter().zip(&direct) {
        let c = cosine(q, d);
        assert!(
            c >= 0.995 && c < 1.0 - 1e-9,
            "q8 pack vs f32: cos {c} (q8 blocks must be used, within q8's accuracy)"
        );
    }
    // A flipped byte in a weight file is caught by its SHA-256 before anything is embedded.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(web.join("manifest-q8.json")).unwrap()).unwrap();
    let file = web.join(manifest["files"][0]["name"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    fails_with(
        &qzhou(
            &[
                "embed",
                "-m",
                web.join("manifest-q8.json").to_str().unwrap(),
                "hi",
            ],
            &[],
        ),
        "fails its checksum",
    );
}

/// `export-web --attention`: a causal Qwen3 folder exported bidirectional gives a pack whose
/// config.json names `QZhouModel` (every other key kept) and that embeds, with no attention
/// override, as transformers runs the folder bidirectionally; `causal` turns a QZhou folder back
/// into a stock one.
#[test]
fn export_web_attention_sets_the_packs_form() {
    let dir = tempfile::tempdir().unwrap();
    let export = |model: &str, attention: &str| -> PathBuf {
        let web = dir.path().join(format!("{model}-{attention}"));
        ok(&qzhou(
            &[
                "export-web",
                "-m",
                fixture(model).to_str().unwrap(),
                "--out",
                web.to_str().unwrap(),
                "--quant",
                "f32",
                "--attention",
                attention,
            ],
            &[],
        ));
        web
    };
    let config = |web: &std::path::Path| -> Value {
        serde_json::from_slice(&std::fs::read(web.join("config.json")).unwrap()).unwrap()
    };
    let original: Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny-qwen3").join("config.json")).unwrap())
            .unwrap();
    let web = export("tiny-qwen3", "bidirectional");
    let mut written = config(&web);
    assert_eq!(written["architectures"], serde_json::json!(["QZhouModel"]));
    written["architectures"] = original["architectures"].clone();
    assert_eq!(written, original, "only `architectures` changes");

    // The pack, with only a pooling override (its Pooling module says last token), embeds as
    // transformers runs the folder bidirectionally with mean pooling.
    let got = embed_documents_with(&web.join("manifest-f32.json"), &["--pooling", "mean"]);
    assert_matches_reference(&got, "tiny-qwen3", "bidirectional-mean");

    let web = export("tiny-qwen2", "causal");
    assert_eq!(
        config(&web)["architectures"],
        serde_json::json!(["Qwen2Model"])
    );
}

/// `qzhou export-web -m model --out out` with `args`.
fn export_web(model: &std::path::Path, out: &std::path::Path, args: &[&str]) -> Output {
    let mut all = vec![
        "export-web",
        "-m",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    qzhou(&all, &[])
}

/// How the q4 pack in `web` fitted the grids of `model`'s token-embedding table: the fit whose
/// encoding of the folder's f32 values reproduces every part's bytes.
fn table_grid_fit(model: &std::path::Path, web: &std::path::Path) -> GridFit {
    let checkpoint = open_checkpoint(model).unwrap();
    let name = checkpoint
        .names()
        .into_iter()
        .find(|n| n.ends_with("embed_tokens.weight"))
        .unwrap();
    let (values, shape) = checkpoint.read_f32(&name).unwrap();
    let manifest = PackManifest::from_json(
        &std::fs::read(web.join("manifest-q4.json")).unwrap(),
        "manifest-q4.json",
    )
    .unwrap();
    let tensor = manifest
        .tensors
        .iter()
        .find(|t| t.name.ends_with("embed_tokens.weight"))
        .unwrap();
    let dtype: Quantization = tensor.dtype.parse().unwrap();
    assert!(
        dtype == Quantization::Q4 || dtype == Quantization::Q4K,
        "{dtype}"
    );
    let row = shape[1];
    let mut first_row = 0;
    let mut fits = vec![GridFit::LeastSquares, GridFit::MinMax];
    for part in &tensor.parts {
        let bytes = std::fs::read(web.join(&manifest.files[part.file].name)).unwrap();
        let offset = part.offset as usize;
        let stored = &bytes[offset..offset + part.bytes as usize];
        let chunk = &values[first_row * row..(first_row + part.rows) * row];
        fits.retain(|&fit| {
            quantize_scaled_fitted(chunk, dtype, part.scale_exp, fit).unwrap() == stored
        });
        first_row += part.rows;
    }
    assert_eq!(first_row, shape[0]);
    assert_eq!(fits.len(), 1, "the fits that reproduce the table: {fits:?}");
    fits[0]
}

/// `export-web --calibration`: a q4 pack rounded by GPTQ on the tiny model embeds like the f32
/// folder within q4's accuracy; a calibration file without a q4 pack, or one that does not
/// exist, is a clear error and writes nothing.
#[test]
fn export_web_gptq_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2");
    let calibration = dir.path().join("calibration.txt");
    std::fs::write(
        &calibration,
        "A first calibration sentence.\n第二个校准句子。\n",
    )
    .unwrap();
    let web = dir.path().join("web");
    let out = export_web(
        &model,
        &web,
        &[
            "--quant",
            "q4",
            "--calibration",
            calibration.to_str().unwrap(),
        ],
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GPTQ over 73 calibration texts")
            && String::from_utf8_lossy(&out.stderr).contains("bidirectional attention"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (q, d) in embed_documents(&web.join("manifest-q4.json"))
        .iter()
        .zip(&embed_documents(&model))
    {
        let c = cosine(q, d);
        assert!(
            (0.98..1.0 - 1e-9).contains(&c),
            "GPTQ q4 pack vs f32: cos {c}"
        );
    }
    // With GPTQ the token-embedding table's grids are min/max (`--q4-min-max-grids`); without
    // it, and with `--q4-min-max-grids none`, least squares.
    assert_eq!(table_grid_fit(&model, &web), GridFit::MinMax);
    for (name, extra) in [
        ("web-plain", vec![]),
        (
            "web-gptq-ls",
            vec![
                "--calibration",
                calibration.to_str().unwrap(),
                "--q4-min-max-grids",
                "none",
            ],
        ),
    ] {
        let out_dir = dir.path().join(name);
        ok(&export_web(
            &model,
            &out_dir,
            &[&["--quant", "q4"], extra.as_slice()].concat(),
        ));
        assert_eq!(
            table_grid_fit(&model, &out_dir),
            GridFit::LeastSquares,
            "{name}"
        );
    }
    for (args, needle) in [
        (
            vec![
                "--quant",
                "q8",
                "--calibration",
                calibration.to_str().unwrap(),
            ],
            "--quant has no q4",
        ),
        (
            vec!["--quant", "q4", "--calibration", "/nonexistent/cal.txt"],
            "/nonexistent/cal.txt",
        ),
    ] {
        let out_dir = dir.path().join("refused");
        fails_with(&export_web(&model, &out_dir, &args), needle);
        assert!(!out_dir.exists(), "nothing is written");
    }
}
