//! `qzhou train` and `qzhou export` end to end on CPU with the tiny fixture model: a synthetic
//! retrieval task that a random model cannot solve (queries and documents use disjoint
//! vocabularies linked by a hidden word mapping) must be learnt; stage 2 continues from stage
//! 1; Ctrl-C + `--resume` reproduces an uninterrupted run bit for bit; LoRA trains only its
//! adapters; the export loads back in `qzhou embed`.

mod common;

use common::{ok, qzhou, root};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qzhou_core::data::rng::SplitMix64;
use serde_json::Value;

/// Query words and document words: document word `i` means query word `i`.
const QUERY_WORDS: [&str; 24] = [
    "apple", "river", "stone", "cloud", "horse", "green", "music", "table", "winter", "bread",
    "glass", "tiger", "paper", "light", "ocean", "chair", "money", "train", "sugar", "forest",
    "doctor", "window", "garden", "silver",
];
const DOC_WORDS: [&str; 24] = [
    "Berlin", "Tokyo", "Paris", "Madrid", "Rome", "Cairo", "Lima", "Oslo", "Dublin", "Vienna",
    "Prague", "Athens", "Moscow", "Delhi", "Seoul", "Sydney", "Toronto", "Chicago", "Boston",
    "Denver", "Dallas", "Miami", "Austin", "Seattle",
];

/// Deterministic generator for the synthetic data (qzhou's SplitMix64, modulo draws).
struct Rng(SplitMix64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next() % n as u64) as usize
    }
    fn triple(&mut self) -> [usize; 3] {
        loop {
            let t = [self.below(24), self.below(24), self.below(24)];
            if t[0] != t[1] && t[1] != t[2] && t[0] != t[2] {
                return t;
            }
        }
    }
}

fn words(t: &[usize; 3], list: &[&str; 24]) -> String {
    t.iter().map(|&i| list[i]).collect::<Vec<_>>().join(" ")
}

/// `n` retrieval records whose query triples are drawn from `seed`; a triple's key (sorted)
/// decides train vs held-out so the two never share a triple.
fn retrieval_records(n: usize, seed: u64, held_out: bool) -> String {
    let mut rng = Rng(SplitMix64(seed));
    let mut out = String::new();
    let mut made = 0;
    while made < n {
        let q = rng.triple();
        let mut key = q;
        key.sort();
        if (key[0] * 31 + key[1] * 7 + key[2]) % 5 == 0 {
            if !held_out {
                continue;
            }
        } else if held_out {
            continue;
        }
        let neg = rng.triple();
        let line = serde_json::json!({
            "type": "retrieval",
            "query": words(&q, &QUERY_WORDS),
            "pos": words(&q, &DOC_WORDS),
            "negs": [words(&neg, &DOC_WORDS)],
        });
        out.push_str(&format!("{line}\n"));
        made += 1;
    }
    out
}

/// Pair records for stage 2: a query triple against a document triple, scored by overlap.
fn pair_records(n: usize, seed: u64) -> String {
    let mut rng = Rng(SplitMix64(seed));
    let mut out = String::new();
    for _ in 0..n {
        let a = rng.triple();
        let mut b = a;
        let changed = rng.below(4);
        for slot in b.iter_mut().take(changed) {
            *slot = rng.below(24);
        }
        let score = a.iter().filter(|w| b.contains(w)).count() as f64;
        let line = serde_json::json!({
            "type": "pair",
            "text1": words(&a, &QUERY_WORDS),
            "text2": words(&b, &DOC_WORDS),
            "score": score,
        });
        out.push_str(&format!("{line}\n"));
    }
    out
}

struct Run {
    dir: PathBuf,
    config: PathBuf,
}

/// Write data and a run file into a fresh folder. `extra` is appended to the run file.
fn setup(dir: &Path, steps: usize, every: usize, extra: &str) -> Run {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train.jsonl"), retrieval_records(400, 1, false)).unwrap();
    std::fs::write(dir.join("heldout.jsonl"), retrieval_records(40, 2, true)).unwrap();
    // The same held-out set as a `qzhou eval` task manifest (nDCG@10 through the eval hook).
    std::fs::write(
        dir.join("heldout-task.toml"),
        // Trained without instructions: queries embedded raw, as the trainer saw them.
        "name = \"heldout-retrieval\"\ntype = \"retrieval\"\napply_to = \"none\"\npath = \"heldout.jsonl\"\ncolumns = { query = \"query\", pos = \"pos\", neg = \"negs\" }\n",
    )
    .unwrap();
    let model = root().join("tests/fixtures/tiny-qwen2");
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[model]
path = "{model}"

[train]
steps = {steps}
lr = 3e-3
warmup_steps = 10
temperature = 0.05
query_max_len = 32
passage_max_len = 32
grad_cache_chunk = 16
log_every = 1

[checkpoint]
dir = "run"
every = {every}
keep_last = 0

[eval]
path = "heldout.jsonl"
tasks = ["heldout-task.toml"]
every = {steps}

[[dataset]]
name = "synthetic"
path = "train.jsonl"
batch_size = 16
negatives = 1
{extra}
"#,
            model = model.display()
        ),
    )
    .unwrap();
    Run {
        dir: dir.join("run"),
        config,
    }
}

fn metrics(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn evals(m: &[Value]) -> Vec<(u64, f64)> {
    m.iter()
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("eval")?["accuracy@1"].as_f64()?)))
        .collect()
}

fn losses(m: &[Value]) -> Vec<f64> {
    m.iter().filter_map(|v| v["loss"].as_f64()).collect()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn export(checkpoint: &Path, out: &Path, dtype: &str) {
    ok(&qzhou(&[
        "export",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        dtype,
    ]));
}

/// All tensors of a safetensors file as (name, f32 values).
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            let vals = t
                .data()
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, vals)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn learns_a_synthetic_retrieval_task_and_stage_two_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let run = setup(&tmp.path().join("s1"), 150, 150, "");
    let out = qzhou(&["train", "--config", run.config.to_str().unwrap(), "--quiet"]);
    ok(&out);
    let m = metrics(&run.dir);
    let l = losses(&m);
    assert_eq!(l.len(), 150);
    let (first, last) = (mean(&l[..10]), mean(&l[l.len() - 10..]));
    let e = evals(&m);
    eprintln!("loss {first:.4} -> {last:.4}; held-out accuracy@1 {e:?}");
    // Chance: 1 of 80 documents. A random model cannot link the vocabularies.
    assert_eq!(e.first().unwrap().0, 0);
    assert!(e.first().unwrap().1 <= 0.1, "{e:?}");
    assert!(e.last().unwrap().1 >= 0.8, "{e:?}");
    assert!(last <= first * 0.25, "loss {first} -> {last}");
    // The eval hook's task manifest: nDCG@10 of the same set, near chance -> high.
    let ndcg: Vec<f64> = m
        .iter()
        .filter_map(|v| v.get("eval")?["tasks"]["heldout-retrieval"].as_f64())
        .collect();
    eprintln!("held-out nDCG@10 through the task manifest {ndcg:?}");
    assert_eq!(ndcg.len(), 2, "{ndcg:?}");
    assert!(ndcg[0] <= 0.3 && ndcg[1] >= 0.8, "{ndcg:?}");

    // Stage 2: all task types (retrieval + pair) from the stage-1 weights, fresh optimizer.
    std::fs::write(tmp.path().join("s1/pairs.jsonl"), pair_records(200, 3)).unwrap();
    let stage1 = run.dir.join("step-00000150");
    let s2 = tmp.path().join("s1/stage2.toml");
    let text = std::fs::read_to_string(&run.config)
        .unwrap()
        .replace("steps = 150", "steps = 20")
        .replace("every = 150", "every = 20")
        .replace("dir = \"run\"", "dir = \"run2\"")
        .replace(
            "log_every = 1",
            &format!(
                "log_every = 1\nlr = 1e-4\ninit_from = \"{}\"",
                stage1.display()
            ),
        )
        .replace("lr = 3e-3\n", "")
        + "\n[[dataset]]\nname = \"pairs\"\npath = \"pairs.jsonl\"\nbatch_size = 16\n";
    std::fs::write(&s2, text).unwrap();
    ok(&qzhou(&[
        "train",
        "--config",
        s2.to_str().unwrap(),
        "--quiet",
    ]));
    let m2 = metrics(&tmp.path().join("s1/run2"));
    let e2 = evals(&m2);
    // Step 0 of stage 2 evaluates exactly the stage-1 weights.
    assert_eq!(e2[0].1, e.last().unwrap().1, "{e2:?}");
    let tasks: std::collections::HashSet<&str> =
        m2.iter().filter_map(|v| v["task"].as_str()).collect();
    assert_eq!(tasks, ["retrieval", "pair"].into_iter().collect());
    assert!(e2.last().unwrap().1 >= 0.7, "{e2:?}");
}

#[test]
fn ctrl_c_then_resume_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = setup(&tmp.path().join("whole"), 40, 10, "");
    ok(&qzhou(&[
        "train",
        "--config",
        whole.config.to_str().unwrap(),
        "--quiet",
    ]));

    let cut = setup(&tmp.path().join("cut"), 40, 10, "");
    let child = Command::new(env!("CARGO_BIN_EXE_qzhou"))
        .args(["train", "--config", cut.config.to_str().unwrap(), "--quiet"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once a dozen steps are logged (not on a checkpoint boundary, usually).
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = std::fs::read_to_string(cut.dir.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 13 {
            break;
        }
        assert!(Instant::now() < deadline, "training made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: saved"), "{stderr}");
    let saved: Vec<_> = std::fs::read_dir(&cut.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert!(saved.iter().any(|n| n != "step-00000010"), "{saved:?}");

    // Without --resume the run folder is protected.
    let again = qzhou(&["train", "--config", cut.config.to_str().unwrap(), "--quiet"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    ok(&qzhou(&[
        "train",
        "--config",
        cut.config.to_str().unwrap(),
        "--quiet",
        "--resume",
    ]));
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    export(&whole.dir.join("step-00000040"), &a, "f32");
    export(&cut.dir.join("step-00000040"), &b, "f32");
    let (ta, tb) = (
        tensors(&a.join("model.safetensors")),
        tensors(&b.join("model.safetensors")),
    );
    assert_eq!(ta.len(), tb.len());
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(va == vb, "{na} differs after resume");
    }
    // The metrics log holds each step once, with the same losses.
    let (ma, mb) = (metrics(&whole.dir), metrics(&cut.dir));
    assert_eq!(losses(&ma), losses(&mb));
}

#[test]
fn lora_trains_only_adapters_and_exports_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let run = setup(
        &tmp.path().join("lora"),
        30,
        30,
        "\n[lora]\nrank = 4\nalpha = 8\n",
    );
    let out = qzhou(&["train", "--config", run.config.to_str().unwrap(), "--quiet"]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 2 layers × (q,k,v,o: 4·(32+out) + gate,up,down) adapters only: far below the 4.9M total.
    assert!(stderr.contains("(LoRA)"), "{stderr}");
    let l = losses(&metrics(&run.dir));
    assert!(mean(&l[l.len() - 5..]) < mean(&l[..5]), "{l:?}");

    let out_dir = tmp.path().join("export");
    export(&run.dir.join("step-00000030"), &out_dir, "f32");
    let names: Vec<String> = tensors(&out_dir.join("model.safetensors"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().all(|n| !n.contains("lora")), "{names:?}");
    assert!(names.contains(&"layers.1.self_attn.q_proj.weight".to_string()));
    for f in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    // The exported folder embeds.
    let emb = ok(&qzhou(&[
        "embed",
        "--model",
        out_dir.to_str().unwrap(),
        "apple river stone",
    ]));
    assert!(emb.contains("embedding"), "{emb}");
}

#[test]
fn bad_run_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = setup(&tmp.path().join("bad"), 10, 10, "");
    let text = std::fs::read_to_string(&run.config).unwrap();
    let check = |body: String, needle: &str| {
        std::fs::write(&run.config, body).unwrap();
        let out = qzhou(&["train", "--config", run.config.to_str().unwrap(), "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "expected failure for {needle}");
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    };
    check(
        text.replace("\nsteps = 10", "\nsteps = 10\nstepz = 3"),
        "unknown field `stepz`",
    );
    check(text.replace("train.jsonl", "missing.jsonl"), "cannot open");
    check(
        text.replace("warmup_steps = 10", "warmup_steps = 11"),
        "warm-up 11 is longer",
    );
    check(
        text.replace("[lora]", "") + "\n[lora]\nrank = 4\nalpha = 8\ntargets = [\"qq_proj\"]\n",
        "unknown LoRA target `qq_proj`",
    );
    check(
        text.replace("temperature = 0.05", "temperature = 0"),
        "temperature must be a positive number",
    );
    check(
        text.replace("passage_max_len = 32", "passage_max_len = 4096"),
        "exceeds the model's max_position_embeddings",
    );
    check(
        text.replace(
            "path = \"heldout.jsonl\"\ntasks = [\"heldout-task.toml\"]\n",
            "",
        ),
        "[eval] needs a held-out `path`, task manifests in `tasks`, or both",
    );
    check(
        text.replace("heldout-task.toml", "no-such-task.toml"),
        "cannot read task manifest",
    );
    // A malformed line names file:line; a record of another problem type too.
    let data = tmp.path().join("bad/train.jsonl");
    let good = std::fs::read_to_string(&data).unwrap();
    std::fs::write(
        &data,
        format!("{good}{{\"type\":\"retrieval\",\"query\":1}}\n"),
    )
    .unwrap();
    check(text.clone(), "train.jsonl:401");
    std::fs::write(
        &data,
        format!("{good}{{\"type\":\"pair\",\"text1\":\"a\",\"text2\":\"b\",\"score\":1}}\n"),
    )
    .unwrap();
    check(text.clone(), "one problem type per dataset");
    // With on_malformed = "skip" the bad line is counted and training runs.
    std::fs::write(&data, format!("{good}not json\n")).unwrap();
    let skip = text.replace("negatives = 1", "negatives = 1\non_malformed = \"skip\"");
    std::fs::write(&run.config, skip).unwrap();
    let out = qzhou(&["train", "--config", run.config.to_str().unwrap(), "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 malformed lines skipped"));
}

#[test]
fn gradient_checkpointing_gives_the_same_training() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = setup(&tmp.path().join("plain"), 12, 12, "");
    let recomputed = setup(&tmp.path().join("ckpt"), 12, 12, "");
    ok(&qzhou(&[
        "train",
        "--config",
        plain.config.to_str().unwrap(),
        "--quiet",
    ]));
    ok(&qzhou(&[
        "train",
        "--config",
        recomputed.config.to_str().unwrap(),
        "--quiet",
        "--grad-checkpointing",
    ]));
    let (a, b) = (
        losses(&metrics(&plain.dir)),
        losses(&metrics(&recomputed.dir)),
    );
    assert_eq!(a.len(), 12);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{a:?} vs {b:?}");
    }
}

/// Whether `x` is exactly representable in bf16 (its low 16 bits are zero).
fn is_bf16(x: f32) -> bool {
    x.to_bits() & 0xffff == 0
}

#[test]
fn bf16_training_keeps_f32_masters_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, flags) in [
        ("mixed", &["--dtype", "bf16"][..]),
        ("pure", &["--dtype", "bf16", "--pure-bf16"][..]),
    ] {
        let whole = setup(&tmp.path().join(format!("{name}-whole")), 12, 6, "");
        let cut = setup(&tmp.path().join(format!("{name}-cut")), 12, 6, "");
        let train = |run: &Run, resume: bool| {
            let mut args = vec!["train", "--config", run.config.to_str().unwrap(), "--quiet"];
            args.extend_from_slice(flags);
            if resume {
                args.push("--resume");
            }
            ok(&qzhou(&args));
        };
        train(&whole, false);
        // The same run cut after step 6: drop its last checkpoint and resume from step 6.
        train(&cut, false);
        std::fs::remove_dir_all(cut.dir.join("step-00000012")).unwrap();
        train(&cut, true);

        let m = metrics(&whole.dir);
        let l = losses(&m);
        assert_eq!(l.len(), 12, "{name}");
        assert!(l.iter().all(|x| x.is_finite()), "{name}: {l:?}");
        let phases: Vec<&str> = m
            .iter()
            .filter_map(|v| v.get("phase").and_then(|p| p.as_str()))
            .collect();
        assert_eq!(phases[0], "warmup", "{name}");
        assert!(
            phases[1..].iter().all(|p| *p == "steady"),
            "{name}: {phases:?}"
        );
        assert_eq!(
            losses(&metrics(&cut.dir)),
            l,
            "{name}: resumed losses differ"
        );

        let (a, b) = (
            tmp.path().join(format!("{name}-a")),
            tmp.path().join(format!("{name}-b")),
        );
        export(&whole.dir.join("step-00000012"), &a, "f32");
        export(&cut.dir.join("step-00000012"), &b, "f32");
        let (ta, tb) = (
            tensors(&a.join("model.safetensors")),
            tensors(&b.join("model.safetensors")),
        );
        for ((na, va), (_, vb)) in ta.iter().zip(&tb) {
            assert!(va == vb, "{name}: {na} differs after resume");
        }
        // Mixed precision checkpoints the f32 masters, not the bf16 compute copy: the fixture's
        // f32 weights are (almost all) off the bf16 grid and their masters stay so. Pure bf16
        // weights all sit on it.
        let values: Vec<f32> = ta.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let on_grid = values.iter().filter(|x| is_bf16(**x)).count() as f64 / values.len() as f64;
        eprintln!(
            "{name}: {:.1} % of the checkpoint's weights are bf16 values",
            100.0 * on_grid
        );
        if name == "mixed" {
            assert!(on_grid < 0.5, "mixed checkpoint looks bf16: {on_grid}");
        } else {
            assert_eq!(on_grid, 1.0, "pure bf16 checkpoint holds non-bf16 values");
        }
    }
    // --pure-bf16 without bf16, and f16 training, are refused.
    let run = setup(&tmp.path().join("refused"), 12, 12, "");
    for flags in [&["--pure-bf16"][..], &["--dtype", "f16"][..]] {
        let mut args = vec!["train", "--config", run.config.to_str().unwrap(), "--quiet"];
        args.extend_from_slice(flags);
        let out = qzhou(&args);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bf16"), "{stderr}");
    }
    // Fused training is refused while Burn 0.21's fused backward is wrong for some shapes
    // (tests/fusion_wgpu.rs), before any model or device is touched.
    let out = qzhou(&[
        "train",
        "--config",
        run.config.to_str().unwrap(),
        "--quiet",
        "--backend",
        "wgpu",
        "--fusion",
        "on",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--fusion on is refused for training"),
        "{stderr}"
    );
    assert!(!run.dir.join("metrics.jsonl").exists());
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A run of `steps` (checkpoints every 4) whose weights stay comparable across peer counts:
/// Adam turns a rounding-level gradient difference into up to `lr` per step where a gradient
/// is near zero, so the learning rate is kept small.
fn data_parallel_setup(dir: &Path, steps: usize) -> Run {
    let run = setup(dir, steps, 4, "");
    let text = std::fs::read_to_string(&run.config).unwrap();
    std::fs::write(&run.config, text.replace("lr = 3e-3", "lr = 5e-4")).unwrap();
    run
}

/// `nodes` processes of `qzhou train` on one run file, over 127.0.0.1, each with `args`.
fn spawn_nodes(
    run: &Run,
    nodes: usize,
    args: &[&str],
    coordinator: u16,
) -> Vec<std::process::Child> {
    (0..nodes)
        .map(|rank| {
            let (coordinator, own) = (
                format!("127.0.0.1:{coordinator}"),
                format!("127.0.0.1:{}", free_port()),
            );
            let rank = rank.to_string();
            let mut all = vec![
                "train",
                "--config",
                run.config.to_str().unwrap(),
                "--quiet",
                "--nodes",
                "2",
                "--node-rank",
                &rank,
                "--coordinator",
                &coordinator,
                "--node-address",
                &own,
            ];
            all.extend_from_slice(args);
            Command::new(env!("CARGO_BIN_EXE_qzhou"))
                .args(&all)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn wait_ok(children: Vec<std::process::Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a node failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Transfers are logged on stderr (warnings only), never on stdout.
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Largest |a − b| over the exported weights of two runs' checkpoints at `step`.
fn weight_gap(tmp: &Path, a: &Run, b: &Run, step: usize) -> f32 {
    let (ea, eb) = (
        tmp.join(format!(
            "export-{}",
            a.dir
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        )),
        tmp.join(format!(
            "export-{}",
            b.dir
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        )),
    );
    for (run, out) in [(a, &ea), (b, &eb)] {
        if !out.exists() {
            export(&run.dir.join(format!("step-{step:08}")), out, "f32");
        }
    }
    let (ta, tb) = (
        tensors(&ea.join("model.safetensors")),
        tensors(&eb.join("model.safetensors")),
    );
    assert_eq!(ta.len(), tb.len());
    ta.iter()
        .zip(&tb)
        .map(|((na, va), (nb, vb))| {
            assert_eq!(na, nb);
            va.iter()
                .zip(vb)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        })
        .fold(0f32, f32::max)
}

fn assert_same_losses(a: &Run, b: &Run, what: &str) {
    let (la, lb) = (losses(&metrics(&a.dir)), losses(&metrics(&b.dir)));
    assert_eq!(la.len(), lb.len(), "{what}");
    for (step, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "{what}: step {} loss {y} vs {x}",
            step + 1
        );
    }
}

#[test]
fn data_parallel_peers_and_nodes_equal_one_device() {
    // The global batch (16 queries + 32 documents) is 3 GradCache chunks of 16: with 2 peers
    // one embeds two chunks, with 2 nodes × 2 peers one peer embeds nothing.
    let tmp = tempfile::tempdir().unwrap();
    let one = data_parallel_setup(&tmp.path().join("one"), 12);
    ok(&qzhou(&[
        "train",
        "--config",
        one.config.to_str().unwrap(),
        "--quiet",
    ]));

    let mut peers = Vec::new();
    for name in ["peers", "peers-again"] {
        let run = data_parallel_setup(&tmp.path().join(name), 12);
        ok(&qzhou(&[
            "train",
            "--config",
            run.config.to_str().unwrap(),
            "--quiet",
            "--devices",
            "0,1",
        ]));
        peers.push(run);
    }
    let mut nodes = Vec::new();
    for name in ["nodes", "nodes-again"] {
        let run = data_parallel_setup(&tmp.path().join(name), 12);
        wait_ok(spawn_nodes(&run, 2, &["--devices", "0,1"], free_port()));
        nodes.push(run);
    }
    for (run, what) in [(&peers[0], "2 peers"), (&nodes[0], "2 nodes x 2 peers")] {
        assert_same_losses(&one, run, what);
        let gap = weight_gap(tmp.path(), &one, run, 12);
        assert!(gap <= 1e-5, "{what}: final weights differ by {gap}");
        // Node 0 alone writes metrics (evaluation included) and checkpoints.
        assert_eq!(metrics(&run.dir).len(), metrics(&one.dir).len(), "{what}");
    }
    // The same run twice: bit for bit (sums in a fixed order).
    for (a, b) in [(&peers[0], &peers[1]), (&nodes[0], &nodes[1])] {
        assert_eq!(losses(&metrics(&a.dir)), losses(&metrics(&b.dir)));
        assert_eq!(weight_gap(tmp.path(), a, b, 12), 0.0);
    }
}

#[test]
fn a_killed_node_stops_the_others_and_resume_continues() {
    // 40 steps, so that node 1 dies mid-run; the resumed run must equal an uninterrupted
    // two-node run bit for bit.
    let tmp = tempfile::tempdir().unwrap();
    let whole = data_parallel_setup(&tmp.path().join("whole"), 40);
    wait_ok(spawn_nodes(&whole, 2, &[], free_port()));

    let run = data_parallel_setup(&tmp.path().join("killed"), 40);
    let mut children = spawn_nodes(&run, 2, &["--peer-timeout", "60"], free_port());
    let deadline = Instant::now() + Duration::from_secs(600);
    // Kill node 1 after the first checkpoint (step 4), between two checkpoints.
    while !run.dir.join("step-00000004").exists()
        || std::fs::read_to_string(run.dir.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
            < 7
    {
        assert!(Instant::now() < deadline, "training made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut node1 = children.pop().unwrap();
    node1.kill().unwrap();
    node1.wait().unwrap();
    let killed_at = Instant::now();
    let out = children.pop().unwrap().wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node 0 went on alone: {stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    // The killed node's connections reset: the survivor stops at once, well before the
    // 60-second watchdog.
    assert!(
        waited < Duration::from_secs(50),
        "node 0 took {waited:?} to stop"
    );
    // Both nodes again with --resume finish the run as if nothing had happened.
    wait_ok(spawn_nodes(&run, 2, &["--resume"], free_port()));
    assert_eq!(losses(&metrics(&whole.dir)), losses(&metrics(&run.dir)));
    assert_eq!(weight_gap(tmp.path(), &whole, &run, 40), 0.0);
}

#[test]
fn bad_node_settings_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = data_parallel_setup(&tmp.path().join("bad"), 12);
    let config = run.config.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "--nodes",
                "2",
                "--node-rank",
                "2",
                "--coordinator",
                "127.0.0.1:1",
            ],
            "--node-rank 2",
        ),
        (vec!["--nodes", "2"], "--coordinator"),
        (
            vec!["--nodes", "2", "--coordinator", "localhost"],
            "HOST:PORT",
        ),
        (vec!["--nodes", "0"], "at least 1"),
    ] {
        let mut all = vec!["train", "--config", config, "--quiet"];
        all.extend(args.iter().copied());
        let out = Command::new(env!("CARGO_BIN_EXE_qzhou"))
            .args(&all)
            .env_remove("MASTER_ADDR")
            .env_remove("MASTER_PORT")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
}
