#!/usr/bin/env python3
"""Standard-library helpers of scripts/gpu-check.sh: inputs (texts, model folders, training data,
run files), comparisons against references, training-metrics parsing (throughput, MFU), the
per-stage results and the one JSON summary. Nothing here imports torch: it runs on the GPU
machine's python3 and on any machine's python3 for the dry run.

    gpu_check.py SUBCOMMAND ...   (see `gpu_check.py -h`; every subcommand prints or writes JSON)

Stage results live in STAGES_DIR/<stage>/: `_status.json` (written by `stage-status`: status,
reason, rc, wall time) and any number of part files `<part>.json` (written by the comparison and
metrics subcommands: one check or measurement each, with `ok` true/false or `skipped`).
"""
import argparse
import glob
import io
import json
import math
import os
import random
import shutil
import statistics
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# H200 SXM dense bf16 tensor-core peak (NVIDIA datasheet: 1,979 TFLOP/s with 2:4 sparsity,
# half of it dense). MFU is reported against this number.
PEAK_FLOPS = 989e12
PEAK_NAME = "H200 SXM dense bf16, 989 TFLOP/s (datasheet)"
FLOPS_FORMULA = ("FLOPs per training token = 6 * N_nonembedding + 12 * layers * hidden * seq_eff, "
                 "seq_eff = sum(n_i^2) / sum(n_i) over the texts of a batch (bidirectional "
                 "attention: every token attends to its whole sequence); N_nonembedding counts "
                 "attention (with q/k/v biases), MLP and norm weights, not the token embedding. "
                 "Encode (forward only): 2 * N_nonembedding + 4 * layers * hidden * seq per token.")

# ---------------------------------------------------------------------------------------------
# Model shapes. The dry run (GPU_CHECK_BACKEND != cuda) stands tiny shapes in for the real ones.
SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    # Dry-run stand-ins (same vocabulary: the real Qwen tokenizer emits ids up to ~151.6k).
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "small": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=6,
                  num_key_value_heads=2, vocab_size=152064, tie_word_embeddings=False),
}


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_jsonl(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


# ---------------------------------------------------------------------------------------------
# Inputs
def cmd_texts(a):
    """The fixture texts (expected.json order, ids 0..7) and ~16 real sentences for the big model."""
    exp = read_json(os.path.join(FIXTURES, "expected.json"))
    with open(a.fixture_out, "w") as f:
        for i, t in enumerate(exp["texts"]):
            f.write(json.dumps({"id": str(i), "text": t}, ensure_ascii=False) + "\n")
    rows = [json.loads(l)["text"] for l in open(os.path.join(FIXTURES, "multilingual.jsonl")) if l.strip()]
    sentences = [t for t in rows if not t.replace(".", "").strip().isdigit()]  # drop the STS scores
    english = [t for t in sentences if t.isascii()]
    others = [t for t in sentences if not t.isascii()]
    pick = english[:6] + others[:5] + sentences[-4:]
    # One long passage (~150 tokens), so a batch really pads and truncation never kicks in.
    pick.append(" ".join(english[6:26]))
    seen, texts = set(), []
    for t in pick:
        if t not in seen:
            seen.add(t)
            texts.append(t)
    texts = texts[: a.n]
    with open(a.sentences_out, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"s{i}", "text": t}, ensure_ascii=False) + "\n")
    print(json.dumps({"fixture_texts": len(exp["texts"]), "sentences": len(texts)}))


def model_config(shape, dtype="float32"):
    s = SHAPES[shape]
    c = {"architectures": ["QZhouModel"], "model_type": "qwen2", "hidden_act": "silu",
         "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
         "rope_scaling": None, "attention_bias": True, "attention_dropout": 0.0,
         "initializer_range": 0.02, "use_sliding_window": False, "sliding_window": None,
         "max_window_layers": s["num_hidden_layers"], "use_cache": False, "dtype": dtype,
         "bos_token_id": 151643, "eos_token_id": 151643}
    c.update(s)
    return c


def cmd_model_dir(a):
    """config.json (+ the fixture's real Qwen2.5 tokenizer) of a shape; weights come later."""
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "config.json"), model_config(a.shape, a.dtype))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(FIXTURES, "tiny-qwen2", f), os.path.join(a.out, f))
    print(json.dumps({"dir": a.out, "shape": a.shape, "params": param_counts(model_config(a.shape))}))


def param_counts(c):
    h, i, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or h // heads
    q, kvd = heads * hd, kv * hd
    attn = h * q + 2 * h * kvd + q * h + (q + 2 * kvd if c.get("attention_bias", True) else 0)
    mlp = 3 * h * i
    per_layer = attn + mlp + 2 * h
    non_emb = layers * per_layer + h  # + final norm
    emb = c["vocab_size"] * h
    return {"non_embedding": non_emb, "embedding": emb, "total": non_emb + emb}


def flops_per_token(c, seq_eff, train=True):
    n = param_counts(c)["non_embedding"]
    layers, h = c["num_hidden_layers"], c["hidden_size"]
    if train:
        return 6 * n + 12 * layers * h * seq_eff
    return 2 * n + 4 * layers * h * seq_eff


def cmd_train_data(a):
    """Queries of 60 words, passages of 230 words: one Qwen token per word of this list, so ~60
    and ~230 tokens (gpu-train-check.sh's 48 and 200 words measured 48 and 200 tokens), seeded."""
    words = ("time year people way day man thing woman life child world school state family student "
             "group country problem hand part place case week company system program question work "
             "government number night point home water room mother area money story fact month lot "
             "right study book eye job word business issue side kind head house service friend father "
             "power hour game line end member law car city community name president team minute idea "
             "kid body information back parent face others level office door health person art war "
             "history party result change morning reason research girl guy moment air teacher force").split()
    rng = random.Random(7)
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))
    with open(a.out, "w") as f:
        for _ in range(a.n):
            f.write(json.dumps({"type": "retrieval", "query": text(a.query_words), "pos": text(a.passage_words),
                                "negs": [text(a.passage_words)]}) + "\n")
    print(json.dumps({"samples": a.n}))


def cmd_seq_stats(a):
    """Token lengths of the training data (queries / passages, truncated as the run truncates):
    mean lengths and seq_eff = sum(n^2)/sum(n) over one batch's texts, for the attention FLOPs."""
    rows = read_jsonl(a.data)[: a.samples]
    try:
        from tokenizers import Tokenizer  # on the GPU machine; optional here
        tk = Tokenizer.from_file(a.tokenizer)
        count = lambda t, cap: min(len(tk.encode(t).ids), cap)
        how = "tokenizers"
    except ImportError:
        # ~1.2 tokens per word for this synthetic English, +0 specials (Qwen adds none).
        count = lambda t, cap: min(round(1.2 * len(t.split())), cap)
        how = "estimate (tokenizers not installed): 1.2 tokens/word"
    lens = []
    for r in rows:
        lens.append(count(r["query"], a.qlen))
        lens.append(count(r["pos"], a.plen))
        lens.extend(count(n, a.plen) for n in r.get("negs", [])[: a.negatives])
    q = [count(r["query"], a.qlen) for r in rows]
    p = [count(r["pos"], a.plen) for r in rows]
    out = {"how": how, "samples": len(rows), "query_mean": statistics.mean(q), "passage_mean": statistics.mean(p),
           "seq_eff": sum(n * n for n in lens) / sum(lens), "tokens_per_sample": sum(lens) / len(rows)}
    write_json(a.out, out)
    print(json.dumps(out))


def cmd_run_toml(a):
    """A `qzhou train` run file."""
    lines = ["[model]", f'path = "{a.model}"']
    if a.random_init:
        lines.append('init = "random"')
    lines += ["attention = \"bidirectional\"", "", "[train]", f"steps = {a.steps}", "lr = 3e-5",
              f"warmup_steps = {min(2, max(a.steps - 1, 0))}", f"query_max_len = {a.qlen}",
              f"passage_max_len = {a.plen}", f"grad_cache_chunk = {a.chunk}", "seed = 42", ""]
    if a.lora:
        lines += ["[lora]", f"rank = {a.lora}", f"alpha = {2 * a.lora}", ""]
    lines += ["[checkpoint]", 'dir = "run"', f"every = {a.steps + 1000}", "", "[[dataset]]", 'name = "synthetic"',
              f'path = "{a.data}"', f"batch_size = {a.batch}", "negatives = 1", ""]
    with open(a.out, "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Comparisons
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def embeddings_by_id(path):
    return {str(r["id"]): r["embedding"] for r in read_jsonl(path)}


def compare(got, want, alone=None):
    """got/want/alone: dicts id -> vector, compared over want's ids."""
    missing = [k for k in want if k not in got]
    if missing:
        raise ValueError(f"qzhou output lacks ids {missing[:5]}")
    dims = {len(v) for v in got.values()} | {len(v) for v in want.values()}
    if len(dims) != 1:
        raise ValueError(f"embedding widths differ: {sorted(dims)}")
    worst_cos = min(cos(got[k], want[k]) for k in want)
    max_abs = max(abs(x - y) for k in want for x, y in zip(got[k], want[k]))
    out = {"texts": len(want), "dim": dims.pop(), "worst_cos": worst_cos, "max_abs_diff": max_abs}
    if alone is not None:
        out["alone_vs_batch"] = max(abs(x - y) for k in want for x, y in zip(got[k], alone[k]))
    return out


def thresholds(dtype, alone_required):
    if dtype == "f32":
        t = {"worst_cos_min": 0.99999, "max_abs_diff_max": 1e-4}
        if alone_required:
            t["alone_vs_batch_max"] = 1e-5
        return t
    return {"worst_cos_min": 0.999}


def judge(m, t):
    fails = []
    if "worst_cos_min" in t and not m["worst_cos"] >= t["worst_cos_min"]:
        fails.append(f"worst cos {m['worst_cos']:.7f} < {t['worst_cos_min']}")
    if "max_abs_diff_max" in t and not m["max_abs_diff"] <= t["max_abs_diff_max"]:
        fails.append(f"max|d| {m['max_abs_diff']:.2e} > {t['max_abs_diff_max']:.0e}")
    if "alone_vs_batch_max" in t:
        if m.get("alone_vs_batch") is None:
            fails.append("alone-vs-batch run missing")
        elif not m["alone_vs_batch"] <= t["alone_vs_batch_max"]:
            fails.append(f"alone-vs-batch {m['alone_vs_batch']:.2e} > {t['alone_vs_batch_max']:.0e}")
    return fails


def part_base(a):
    p = {"part": a.name, "kind": "parity", "dtype": a.dtype, "fusion": a.fusion}
    if a.note:
        p["note"] = a.note
    return p


def finish_parity(a, p, m, t):
    p.update(m)
    p["thresholds"] = t
    fails = judge(m, t)
    p["ok"] = not fails
    if fails:
        p["reason"] = "; ".join(fails)
    write_json(a.out, p)
    line = (f"{p['part']:44} worst cos {m['worst_cos']:.7f}  max|d| {m['max_abs_diff']:.2e}"
            + (f"  alone-vs-batch {m['alone_vs_batch']:.2e}" if m.get("alone_vs_batch") is not None else "")
            + f"  {'OK' if p['ok'] else 'FAIL: ' + p['reason']}")
    print(line)


def run_failed(a, p, which):
    p.update({"ok": False, "reason": f"qzhou {which} run failed (see logs)"})
    write_json(a.out, p)
    print(f"{p['part']:44} FAIL: {p['reason']}")


def cmd_cmp_fixture(a):
    """qzhou on a fixture vs tests/fixtures/expected.json (transformers, per text, fp32)."""
    p = part_base(a)
    p.update({"model": a.model, "run": a.run})
    if not os.path.exists(a.got):
        return run_failed(a, p, "batch")
    if a.alone and not os.path.exists(a.alone):
        return run_failed(a, p, "alone")
    want_all = read_json(os.path.join(FIXTURES, "expected.json"))["models"][a.model]["embeddings"][a.run]
    want = {str(i): v for i, v in enumerate(want_all)}
    alone = embeddings_by_id(a.alone) if a.alone else None
    m = compare(embeddings_by_id(a.got), want, alone)
    finish_parity(a, p, m, thresholds(a.dtype, alone_required=a.dtype == "f32"))


def cmd_cmp_ref(a):
    """qzhou vs a torch reference JSONL ({"id", "embedding"}), plus the reference's own bf16
    drift (torch bf16 vs torch fp32) for context when given."""
    p = part_base(a)
    p.update({"model": a.model, "reference": os.path.basename(a.ref)})
    if not os.path.exists(a.ref):
        p.update({"skipped": "no torch reference (prep stage failed or not run)"})
        write_json(a.out, p)
        print(f"{p['part']:44} skipped: {p['skipped']}")
        return
    if not os.path.exists(a.got):
        return run_failed(a, p, "batch")
    alone = embeddings_by_id(a.alone) if a.alone and os.path.exists(a.alone) else None
    m = compare(embeddings_by_id(a.got), embeddings_by_id(a.ref), alone)
    if a.alone and alone is None:
        m["alone_vs_batch"] = None
        p["alone_note"] = "alone run failed (informational only)"
    if a.drift and os.path.exists(a.drift):
        d = compare(embeddings_by_id(a.drift), embeddings_by_id(a.ref))
        p["torch_bf16_vs_fp32"] = {"worst_cos": d["worst_cos"], "max_abs_diff": d["max_abs_diff"]}
    # The big model's thresholds: f32 max|d| <= 1e-4 (+ cos), bf16 cos >= 0.999; alone-vs-batch
    # is informational here (the fixtures carry that threshold).
    finish_parity(a, p, m, thresholds(a.dtype, alone_required=False))


# ---------------------------------------------------------------------------------------------
# Training metrics
def steady_split(steps, warmup_default):
    """(warmup, steady, how): by the `phase` field when the binary writes it, else the first
    `warmup_default` steps are warm-up."""
    if steps and all("phase" in s for s in steps):
        return ([s for s in steps if s["phase"] != "steady"], [s for s in steps if s["phase"] == "steady"],
                "phase field")
    k = min(warmup_default, max(len(steps) - 1, 0))
    return steps[:k], steps[k:], f"no `phase` field in metrics.jsonl: first {k} step(s) taken as warm-up"


def throughput(rows, config, seq_eff, peak=PEAK_FLOPS):
    """rows: dicts with tokens and step_s. Tokens/s = sum tokens / sum seconds."""
    tokens = sum(r["tokens"] for r in rows)
    secs = sum(r["step_s"] for r in rows)
    out = {"steps": len(rows), "tokens": tokens, "seconds": secs,
           "tokens_per_s": tokens / secs if secs > 0 else None,
           "median_step_s": statistics.median(r["step_s"] for r in rows) if rows else None}
    if out["tokens_per_s"] and config is not None and seq_eff:
        fpt = flops_per_token(config, seq_eff, train=True)
        out["flops_per_token"] = fpt
        out["achieved_tflops"] = out["tokens_per_s"] * fpt / 1e12
        out["mfu"] = out["tokens_per_s"] * fpt / peak
    return out


def seq_eff_for(a, rows):
    s = read_json(a.seq_stats) if a.seq_stats else None
    if s and s.get("seq_eff"):
        return s["seq_eff"], f"seq_stats ({s.get('how')})"
    if rows:
        texts = a.texts_per_step
        if texts:
            return statistics.mean(r["tokens"] for r in rows) / texts, "mean tokens per text (approximation)"
    return None, "unknown"


def cmd_train_metrics(a):
    p = {"part": a.name, "kind": "train", "impl": "qzhou", "mode": a.mode, "dtype": a.dtype, "fusion": a.fusion}
    if a.note:
        p["note"] = a.note
    config = read_json(a.config) if a.config else None
    try:
        lines = read_jsonl(a.metrics)
    except (OSError, ValueError) as e:
        lines = []
        p["metrics_error"] = str(e)
    steps = [l for l in lines if "loss" in l and "step_s" in l]
    p["steps_logged"] = len(steps)
    if a.rc != 0 or not steps:
        p.update({"ok": False, "reason": f"qzhou train exited with rc {a.rc}" + ("" if steps else ", no step in metrics.jsonl")})
        if a.err_tail:
            p["error_tail"] = a.err_tail[-2000:]
        write_json(a.out, p)
        print(f"{p['part']:30} FAIL: {p['reason']}")
        return
    warm, steady, how = steady_split(steps, a.warmup_default)
    p["phase_split"] = how
    p["warmup_steps"] = len(warm)
    p["first_step_s"] = steps[0]["step_s"]
    p["warmup_s"] = sum(s["step_s"] for s in warm)
    seq_eff, seq_how = seq_eff_for(a, steps)
    p["seq_eff"], p["seq_eff_source"] = seq_eff, seq_how
    if config:
        p["params"] = param_counts(config)
    p["steady"] = throughput(steady, config, seq_eff) if steady else None
    mem = [s.get("device_memory_bytes") for s in steps if s.get("device_memory_bytes")]
    p["device_memory_bytes_max"] = max(mem) if mem else None
    rss = [s.get("peak_rss_bytes") for s in steps if s.get("peak_rss_bytes")]
    p["peak_rss_bytes"] = max(rss) if rss else None
    p["loss_first"], p["loss_last"] = steps[0]["loss"], steps[-1]["loss"]
    p["finite_loss"] = all(isinstance(s["loss"], (int, float)) and math.isfinite(s["loss"]) for s in steps)
    if a.mode.startswith("lora"):
        p["mfu_note"] = ("LoRA: the backward pass skips the frozen weights' gradients (~4N FLOPs per token "
                         "actually run); MFU keeps the 6N model-FLOPs convention")
    p["ok"] = p["finite_loss"] and len(steps) >= a.expect_steps
    if not p["ok"]:
        p["reason"] = ("non-finite loss" if not p["finite_loss"] else f"{len(steps)} of {a.expect_steps} steps logged")
    if not steady:
        p["throughput_note"] = "no steady step (all warm-up)"
    write_json(a.out, p)
    st = p["steady"] or {}
    tps = st.get("tokens_per_s")
    mfu = st.get("mfu")
    print(f"{p['part']:30} {len(steps)} steps, first {p['first_step_s']:.2f} s, steady "
          + (f"{tps:,.0f} tok/s" if tps else "-") + (f", MFU {100 * mfu:.2f}%" if mfu is not None else "")
          + f", loss {p['loss_first']:.3f} -> {p['loss_last']:.3f}" + ("" if p["ok"] else f"  FAIL: {p['reason']}"))


def cmd_st_metrics(a):
    """Adds throughput/MFU to the sentence-transformers baseline's JSON."""
    r = read_json(a.result)
    p = {"part": a.name, "kind": "train", "impl": "sentence-transformers"}
    if r is None:
        p.update({"ok": False, "reason": f"baseline wrote no result (rc {a.rc})"})
        write_json(a.out, p)
        print(f"{p['part']:30} FAIL: {p['reason']}")
        return
    p.update({k: v for k, v in r.items() if k != "per_step"})
    steps = r.get("per_step", [])
    config = read_json(a.config) if a.config else None
    seq_eff, seq_how = seq_eff_for(a, steps)
    p["seq_eff"], p["seq_eff_source"] = seq_eff, seq_how
    steady = steps[r.get("warmup_steps", 1):]
    p["first_step_s"] = steps[0]["step_s"] if steps else None
    p["steady"] = throughput(steady, config, seq_eff) if steady else None
    p["ok"] = bool(steps) and a.rc == 0 and all(math.isfinite(s["loss"]) for s in steps)
    if not p["ok"]:
        p["reason"] = f"baseline rc {a.rc}, {len(steps)} steps"
    write_json(a.out, p)
    st = p["steady"] or {}
    print(f"{p['part']:30} {len(steps)} steps, first {p['first_step_s'] or 0:.2f} s, steady "
          + (f"{st['tokens_per_s']:,.0f} tok/s" if st.get("tokens_per_s") else "-")
          + (f", MFU {100 * st['mfu']:.2f}%" if st.get("mfu") is not None else "")
          + (f", peak alloc {r['max_memory_allocated'] / 2**30:.2f} GiB" if r.get("max_memory_allocated") else ""))


# ---------------------------------------------------------------------------------------------
# Encode benchmark
def cmd_bench_part(a):
    """One encode-benchmark JSON line (bench_encode or torch_side.py) -> a part with FLOP/s."""
    p = {"part": a.name, "kind": "bench", "impl": a.impl, "dtype": a.dtype}
    if a.torch_counterpart:
        p["torch_counterpart"] = a.torch_counterpart
    if a.note:
        p["note"] = a.note
    line = None
    if os.path.exists(a.result):
        for l in open(a.result):
            if l.startswith("{"):
                line = json.loads(l)
    if line is None:
        p.update({"ok": False, "reason": f"no JSON result (rc {a.rc})"})
        write_json(a.out, p)
        print(f"{p['part']:34} FAIL: {p['reason']}")
        return
    line = dict(line)
    line["impl_detail"] = line.pop("impl", None)
    p.update(line)
    config = read_json(a.config) if a.config else None
    if config and line.get("tokens_per_s"):
        fpt = flops_per_token(config, line["seq"], train=False)
        p["flops_per_token"] = fpt
        p["achieved_tflops"] = line["tokens_per_s"] * fpt / 1e12
        p["mfu"] = line["tokens_per_s"] * fpt / PEAK_FLOPS
    p["ok"] = a.rc == 0 and bool(line.get("tokens_per_s"))
    if not p["ok"]:
        p["reason"] = f"rc {a.rc}"
    write_json(a.out, p)
    print(f"{p['part']:34} {line.get('tokens_per_s', 0):>12,.0f} tok/s" +
          (f"  {p['achieved_tflops']:.1f} TFLOP/s (MFU {100 * p['mfu']:.2f}%)" if "mfu" in p else ""))


def cmd_skip_part(a):
    p = {"part": a.name, "kind": a.kind, "skipped": a.reason}
    write_json(a.out, p)
    print(f"{a.name:44} skipped: {a.reason}")


def cmd_text_part(a):
    """A part carrying a command's text output (e.g. `qzhou train --plan`)."""
    text = open(a.text, errors="replace").read() if os.path.exists(a.text) else ""
    p = {"part": a.name, "kind": a.kind, "ok": a.rc == 0, "rc": a.rc, "text": text[-6000:]}
    try:
        p["json"] = json.loads(text)
    except ValueError:
        pass
    refused = any(w in text for w in ("does not fit", "shrink it"))
    if a.rc != 0 and refused and a.rc not in (124, 137):
        p["ok"] = True
        p["note"] = "the plan says the run does not fit (refused, as designed)"
    elif a.rc != 0:
        p["reason"] = f"rc {a.rc}"
    write_json(a.out, p)
    print(f"--- {a.name} (rc {a.rc}) ---\n{text[-3000:]}")


# ---------------------------------------------------------------------------------------------
# Environment: GPU, build, flags of the binaries
def run_text(cmd, timeout=30):
    import subprocess

    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{type(e).__name__}: {e}"


def cmd_env(a):
    import importlib.metadata as md

    env = {"backend": a.backend}
    rc, out = run_text(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"])
    if rc not in (0, None):  # an older driver without compute_cap
        rc, out = run_text(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    if rc == 0 and out.strip():
        f = [x.strip() for x in out.strip().splitlines()[0].split(",")]
        env["gpu"] = dict(zip(("name", "memory_total", "driver", "compute_cap"), f))
    else:
        env["gpu"] = {"name": "none", "note": out.strip()[:300]}
    info = read_json(os.path.join(a.bin_dir, "BUILD_INFO.json"))
    if info:
        env["git"] = info.get("git")
        env["build"] = info
    else:
        rc, commit = run_text(["git", "-C", ROOT, "rev-parse", "HEAD"])
        rc2, dirty = run_text(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
        env["git"] = ({"commit": commit.strip(), "dirty": bool(dirty.strip()), "source": "git in the checkout"}
                      if rc == 0 else {"commit": "unknown", "source": f"no {a.bin_dir}/BUILD_INFO.json and no git"})
    bins, flags = {}, {}
    rc, out = run_text([a.qzhou, "--version"])
    bins["qzhou"] = {"path": a.qzhou, "runs": rc == 0, "version": out.strip()[:200]}
    if rc == 0:
        helps = {sub: run_text([a.qzhou, sub, "--help"])[1] for sub in ("embed", "train", "eval")}
        flags = {"embed_fusion": "--fusion" in helps["embed"], "eval_fusion": "--fusion" in helps["eval"],
                 "train_fusion": "--fusion" in helps["train"], "train_pure_bf16": "--pure-bf16" in helps["train"],
                 "train_plan": "--plan" in helps["train"],
                 # the mixed-precision build documents "bf16 (CPU, CUDA)" for train --dtype
                 "train_cpu_bf16": "bf16 (CPU" in helps["train"]}
    if a.bench and os.path.exists(a.bench):
        rc, out = run_text([a.bench])  # no arguments: prints its usage, exit 2
        bins["bench_encode"] = {"path": a.bench, "runs": rc == 2 and "usage" in out, "usage": out.strip()[:300]}
        flags["bench_fusion"] = "fused" in out
    else:
        bins["bench_encode"] = {"path": a.bench, "runs": False, "usage": "missing"}
    env["binaries"], env["flags"] = bins, flags
    py = {"python": sys.version.split()[0], "executable": sys.executable}
    for pkg in ("torch", "transformers", "sentence-transformers", "tokenizers", "safetensors", "peft"):
        try:
            py[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            py[pkg] = None
    env["python"] = py
    ld = os.environ.get("QZ_LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH", ""))
    env["cubecl"] = {"autotune_level": os.environ.get("CUBECL_AUTOTUNE_LEVEL"), "log_mode": a.cubecl_log,
                     "kernel_cache": os.environ.get("QZHOU_KERNEL_CACHE"), "LD_LIBRARY_PATH (qzhou)": ld}
    nvrtc = []
    for d in ld.split(":"):
        if d and os.path.isdir(d):
            nvrtc += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.startswith("libnvrtc")]
    env["cubecl"]["nvrtc_on_path"] = nvrtc[:10]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    write_json(a.out, env)
    with open(a.flags_out, "w") as f:
        for k, v in flags.items():
            f.write(f"FLAG_{k.upper()}={1 if v else 0}\n")
        f.write(f"QZHOU_RUNS={1 if bins['qzhou']['runs'] else 0}\n")
        f.write(f"BENCH_RUNS={1 if bins['bench_encode']['runs'] else 0}\n")
        f.write(f"HAS_TORCH={1 if py['torch'] else 0}\n")
        f.write(f"HAS_ST={1 if py['sentence-transformers'] else 0}\n")
        f.write(f"HAS_PEFT={1 if py['peft'] else 0}\n")
    print(json.dumps({k: env[k] for k in ("gpu", "git", "flags")}))
    print(f"qzhou: {bins['qzhou']}")
    print(f"python: {py}")


# ---------------------------------------------------------------------------------------------
# Stage status and the summary
def cmd_stage_status(a):
    """Decide a finished stage's status from its exit code and its parts."""
    d = a.dir
    parts = [read_json(f) for f in sorted(glob.glob(os.path.join(d, "*.json"))) if not os.path.basename(f).startswith("_")]
    parts = [p for p in parts if p]
    failed = [p["part"] for p in parts if p.get("ok") is False]
    skipped = [p for p in parts if "skipped" in p]
    st = {"stage": os.path.basename(d), "rc": a.rc, "wall_s": round(a.wall, 2), "timeout_s": a.timeout}
    if a.rc in (124, 137):
        st.update(status="timeout", reason=f"exceeded {a.timeout:.0f} s (killed)")
    elif a.rc == 3 and not failed:  # the stage skipped itself (e.g. a flag this binary lacks)
        st.update(status="skipped", reason=(skipped[0]["skipped"] if skipped else "skipped by the stage"))
    elif failed:
        st.update(status="fail", reason="failed: " + ", ".join(failed))
    elif a.rc != 0:
        st.update(status="fail", reason=f"stage exited with rc {a.rc}")
    elif parts and len(skipped) == len(parts):
        st.update(status="skipped", reason="; ".join(sorted({p["skipped"] for p in skipped})))
    else:
        st.update(status="ok", reason="")
        if skipped:
            st["reason"] = "partly skipped: " + "; ".join(f"{p['part']}: {p['skipped']}" for p in skipped)
    mem = []
    if a.mem_log and os.path.exists(a.mem_log):
        mem = [int(x) for x in open(a.mem_log).read().split() if x.strip().isdigit()]
    st["gpu_memory_used_peak_mib"] = max(mem) if mem else None
    write_json(os.path.join(d, "_status.json"), st)
    print(json.dumps(st))


def cmd_stage_skip(a):
    os.makedirs(a.dir, exist_ok=True)
    st = {"stage": os.path.basename(a.dir), "status": "skipped", "reason": a.reason, "wall_s": 0}
    write_json(os.path.join(a.dir, "_status.json"), st)
    print(json.dumps(st))


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a and b else None


def cmd_summary(a):
    stages_dir = a.stages
    env = read_json(os.path.join(stages_dir, "env", "env.json"), {}) or {}
    order = [s for s in a.order.split()]
    stages = {}
    for name in order:
        d = os.path.join(stages_dir, name)
        st = read_json(os.path.join(d, "_status.json"))
        if st is None:
            st = {"stage": name, "status": "pending" if a.partial else "skipped", "reason": "not reached" if a.partial else "not run"}
        parts = {}
        for f in sorted(glob.glob(os.path.join(d, "*.json"))):
            if os.path.basename(f).startswith("_"):
                continue
            p = read_json(f)
            if p:
                parts[p.get("part", os.path.basename(f)[:-5])] = p
        st["parts"] = parts
        stages[name] = st
    all_parts = [p for s in stages.values() for p in s["parts"].values()]
    parity = [p for p in all_parts if p.get("kind") == "parity"]
    for n, st in stages.items():  # a parity stage skipped as a whole is one row
        for p in st["parts"].values():
            if p.get("kind") == "parity" and "fusion" not in p:
                p["fusion"] = "on" if n.endswith("fusion") else "off"
    train = {p["part"]: p for p in all_parts if p.get("kind") == "train"}
    bench = {p["part"]: p for p in all_parts if p.get("kind") == "bench"}

    # Key numbers.
    key = {}

    def tps(p):
        return ((p or {}).get("steady") or {}).get("tokens_per_s") if p else None

    st_full = train.get("st-mnrl-bf16-autocast")
    st_lora = train.get("st-mnrl-lora16-bf16-autocast")
    for name, p in train.items():
        if p.get("impl") != "qzhou":
            continue
        # The baseline of the same job: LoRA against PEFT LoRA when that ran, else the full
        # fine-tune baseline (labelled); the smoke run (tiny fixture model) has none.
        base, base_name = None, None
        if name != "train-smoke":
            base, base_name = ((st_lora, "st-mnrl-lora16-bf16-autocast") if name == "train-lora" and st_lora
                               else (st_full, "st-mnrl-bf16-autocast"))
        key[f"train/{name}"] = {
            "tokens_per_s": tps(p), "mfu": ((p.get("steady") or {}).get("mfu")),
            "first_step_s": p.get("first_step_s"), "warmup_s": p.get("warmup_s"),
            "device_memory_bytes_max": p.get("device_memory_bytes_max"), "peak_rss_bytes": p.get("peak_rss_bytes"),
            "vs_sentence_transformers": ratio(tps(p), tps(base)) if base else None,
            "baseline": base_name if base else None, "ok": p.get("ok")}
    for bname, b in (("sentence-transformers", st_full), ("sentence-transformers-lora16", st_lora)):
        if b:
            key[f"train/{bname}"] = {
                "tokens_per_s": tps(b), "mfu": ((b.get("steady") or {}).get("mfu")),
                "first_step_s": b.get("first_step_s"),
                "max_memory_allocated": b.get("max_memory_allocated"), "ok": b.get("ok")}
    for name, p in bench.items():
        if p.get("impl") != "qzhou":
            continue
        torch_name = p.get("torch_counterpart")
        t = bench.get(torch_name) if torch_name else None
        key[f"bench/{name}"] = {"tokens_per_s": p.get("tokens_per_s"), "mfu": p.get("mfu"),
                                "torch_tokens_per_s": (t or {}).get("tokens_per_s"),
                                "vs_torch": ratio(p.get("tokens_per_s"), (t or {}).get("tokens_per_s")),
                                "ok": p.get("ok")}
    summary = {
        "schema": "qzhou-gpu-check/1",
        "finished": not a.partial,
        "backend": a.backend,
        "dry_run": a.backend != "cuda",
        "wall_s": round(a.wall, 1),
        "deadline_s": a.deadline,
        "gpu": env.get("gpu"),
        "git": env.get("git"),
        "binaries": env.get("binaries"),
        "python": env.get("python"),
        "flags": env.get("flags"),
        "cubecl": env.get("cubecl"),
        "mfu_basis": {"peak_flops": PEAK_FLOPS, "peak": PEAK_NAME, "formula": FLOPS_FORMULA},
        "stages": {n: {k: v for k, v in s.items() if k != "parts"} for n, s in stages.items()},
        "parity": [{k: p.get(k) for k in ("part", "dtype", "fusion", "model", "run", "worst_cos", "max_abs_diff",
                                         "alone_vs_batch", "torch_bf16_vs_fp32", "ok", "reason", "skipped", "note")
                    if p.get(k) is not None} for p in parity],
        "key": key,
        "parts": {n: s["parts"] for n, s in stages.items()},
    }
    write_json(a.out, summary)
    md = render_table(summary)
    if a.md:
        with open(a.md, "w") as f:
            f.write(md)
    if not a.quiet:
        print(md)


def render_table(s):
    out = io.StringIO()
    w = out.write
    g = s.get("gpu") or {}
    git = s.get("git") or {}
    w(f"# qzhou GPU check ({'DRY RUN on ' + s['backend'] if s['dry_run'] else 'cuda'})"
      f"{'' if s['finished'] else ' — PARTIAL (still running or killed)'}\n\n")
    w(f"GPU: {g.get('name', '-')} | driver {g.get('driver', '-')} | commit {git.get('commit', '-')}"
      f"{' (dirty)' if git.get('dirty') else ''} | wall {s['wall_s']} s of {s['deadline_s']} s\n\n")
    w("| stage | status | wall s | peak GPU MiB | reason |\n|---|---|---|---|---|\n")
    for n, st in s["stages"].items():
        w(f"| {n} | {st.get('status')} | {fmt(st.get('wall_s'), '.1f')} | {fmt(st.get('gpu_memory_used_peak_mib'), ',')} | "
          f"{(st.get('reason') or '').replace('|', '/')[:160]} |\n")
    if s["parity"]:
        w("\n| parity | fusion | worst cos | max abs diff | alone vs batch | torch bf16 drift cos | result |\n"
          "|---|---|---|---|---|---|---|\n")
        for p in s["parity"]:
            drift = (p.get("torch_bf16_vs_fp32") or {}).get("worst_cos")
            res = "skipped: " + p["skipped"] if "skipped" in p else ("OK" if p.get("ok") else "FAIL " + p.get("reason", ""))
            w(f"| {p['part']} | {p.get('fusion', '-')} | {fmt(p.get('worst_cos'), '.7f')} | {fmt(p.get('max_abs_diff'), '.2e')} | "
              f"{fmt(p.get('alone_vs_batch'), '.2e')} | {fmt(drift, '.6f')} | {res} |\n")
    train = [(k[6:], v) for k, v in s["key"].items() if k.startswith("train/")]
    if train:
        w("\n| training | steady tokens/s | vs sentence-transformers | MFU | first step s | peak memory GiB (device, else RSS) |\n|---|---|---|---|---|---|\n")
        for n, v in train:
            mem = v.get("device_memory_bytes_max") or v.get("max_memory_allocated") or v.get("peak_rss_bytes")
            w(f"| {n} | {fmt(v.get('tokens_per_s'), ',.0f')} | {fmt(v.get('vs_sentence_transformers'), '.2f')} | "
              f"{fmt(None if v.get('mfu') is None else 100 * v['mfu'], '.2f')}% | {fmt(v.get('first_step_s'), '.2f')} | "
              f"{fmt(None if not mem else mem / 2**30, '.2f')} |\n")
    bench = [(k[6:], v) for k, v in s["key"].items() if k.startswith("bench/")]
    if bench:
        w("\n| encode | qzhou tokens/s | torch tokens/s | qzhou/torch | qzhou MFU |\n|---|---|---|---|---|\n")
        for n, v in bench:
            w(f"| {n} | {fmt(v.get('tokens_per_s'), ',.0f')} | {fmt(v.get('torch_tokens_per_s'), ',.0f')} | "
              f"{fmt(v.get('vs_torch'), '.2f')} | {fmt(None if v.get('mfu') is None else 100 * v['mfu'], '.2f')}% |\n")
    w(f"\nMFU basis: {s['mfu_basis']['peak']}. {s['mfu_basis']['formula']}\n")
    return out.getvalue()


def cmd_pack_logs(a):
    """Pack the logs and stage results into one .tar.gz (the device tool returns at most 8 files,
    16 MiB each): every file capped at --max-file bytes (head + tail kept), the whole archive
    re-packed with smaller caps until it fits --max-total."""
    files = []
    for base, arc in ((a.logs, "logs"), (a.stages, "results")):
        if not base or not os.path.isdir(base):
            continue
        for dirpath, _, names in os.walk(base):
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                if os.path.isfile(p) and not n.endswith(".tmp"):
                    files.append((p, os.path.join(arc, os.path.relpath(p, base))))
    cap = a.max_file
    while True:
        tmp = a.out + ".tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for p, arc in files:
                try:
                    with open(p, "rb") as fh:
                        size = os.fstat(fh.fileno()).st_size
                        if size <= cap:
                            data = fh.read()
                        else:  # head + tail, without reading the middle of a huge log
                            head = cap // 8
                            data = fh.read(head)
                            fh.seek(size - (cap - head))
                            data += (f"\n\n[... {size - cap} bytes cut by pack-logs ...]\n\n".encode() + fh.read())
                except OSError:
                    continue
                info = tarfile.TarInfo(arc)
                info.size = len(data)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
        if os.path.getsize(tmp) <= a.max_total or cap <= 16384:
            break
        cap //= 2
    os.replace(tmp, a.out)


def cmd_tail(a):
    """Last N lines of each existing file (stdout): what a failure prints."""
    for f in a.files:
        if not os.path.exists(f) or os.path.getsize(f) == 0:
            continue
        with open(f, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = fh.read().decode("utf-8", "replace").splitlines()[-a.n:]
        print(f"----- last {len(lines)} lines of {f} -----")
        for l in lines:
            print("  " + l[:400])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("texts")
    s.add_argument("fixture_out")
    s.add_argument("sentences_out")
    s.add_argument("--n", type=int, default=16)
    s.set_defaults(f=cmd_texts)

    s = sub.add_parser("model-dir")
    s.add_argument("out")
    s.add_argument("--shape", choices=sorted(SHAPES), required=True)
    s.add_argument("--dtype", default="float32")
    s.set_defaults(f=cmd_model_dir)

    s = sub.add_parser("train-data")
    s.add_argument("out")
    s.add_argument("--n", type=int, default=2048)
    s.add_argument("--query-words", type=int, default=60)
    s.add_argument("--passage-words", type=int, default=230)
    s.set_defaults(f=cmd_train_data)

    s = sub.add_parser("seq-stats")
    s.add_argument("data")
    s.add_argument("tokenizer")
    s.add_argument("out")
    s.add_argument("--qlen", type=int, required=True)
    s.add_argument("--plen", type=int, required=True)
    s.add_argument("--negatives", type=int, default=1)
    s.add_argument("--samples", type=int, default=256)
    s.set_defaults(f=cmd_seq_stats)

    s = sub.add_parser("run-toml")
    s.add_argument("out")
    s.add_argument("--model", required=True)
    s.add_argument("--random-init", action="store_true")
    s.add_argument("--data", required=True)
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--batch", type=int, required=True)
    s.add_argument("--qlen", type=int, required=True)
    s.add_argument("--plen", type=int, required=True)
    s.add_argument("--chunk", type=int, default=1000000)
    s.add_argument("--lora", type=int, default=0)
    s.set_defaults(f=cmd_run_toml)

    for name, fn in (("cmp-fixture", cmd_cmp_fixture), ("cmp-ref", cmd_cmp_ref)):
        s = sub.add_parser(name)
        s.add_argument("--name", required=True)
        s.add_argument("--got", required=True)
        s.add_argument("--alone")
        s.add_argument("--dtype", required=True, choices=["f32", "bf16"])
        s.add_argument("--fusion", default="off")
        s.add_argument("--model", required=True)
        s.add_argument("--note")
        s.add_argument("--out", required=True)
        if name == "cmp-fixture":
            s.add_argument("--run", required=True)
        else:
            s.add_argument("--ref", required=True)
            s.add_argument("--drift")
        s.set_defaults(f=fn)

    s = sub.add_parser("train-metrics")
    s.add_argument("--name", required=True)
    s.add_argument("--metrics", required=True)
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--mode", required=True)
    s.add_argument("--dtype", required=True)
    s.add_argument("--fusion", default="off")
    s.add_argument("--config")
    s.add_argument("--seq-stats")
    s.add_argument("--texts-per-step", type=int)
    s.add_argument("--expect-steps", type=int, required=True)
    s.add_argument("--warmup-default", type=int, default=1)
    s.add_argument("--err-tail")
    s.add_argument("--note")
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_train_metrics)

    s = sub.add_parser("st-metrics")
    s.add_argument("--name", required=True)
    s.add_argument("--result", required=True)
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--config")
    s.add_argument("--seq-stats")
    s.add_argument("--texts-per-step", type=int)
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_st_metrics)

    s = sub.add_parser("bench-part")
    s.add_argument("--name", required=True)
    s.add_argument("--impl", required=True)
    s.add_argument("--dtype", required=True)
    s.add_argument("--result", required=True)
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--config")
    s.add_argument("--torch-counterpart")
    s.add_argument("--note")
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_bench_part)

    s = sub.add_parser("skip-part")
    s.add_argument("--name", required=True)
    s.add_argument("--kind", default="other")
    s.add_argument("--reason", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_skip_part)

    s = sub.add_parser("text-part")
    s.add_argument("--name", required=True)
    s.add_argument("--kind", default="plan")
    s.add_argument("--text", required=True)
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_text_part)

    s = sub.add_parser("env")
    s.add_argument("--backend", required=True)
    s.add_argument("--bin-dir", required=True)
    s.add_argument("--qzhou", required=True)
    s.add_argument("--bench", required=True)
    s.add_argument("--cubecl-log", default="auto")
    s.add_argument("--out", required=True)
    s.add_argument("--flags-out", required=True)
    s.set_defaults(f=cmd_env)

    s = sub.add_parser("stage-status")
    s.add_argument("dir")
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--wall", type=float, required=True)
    s.add_argument("--timeout", type=float, required=True)
    s.add_argument("--mem-log")
    s.set_defaults(f=cmd_stage_status)

    s = sub.add_parser("stage-skip")
    s.add_argument("dir")
    s.add_argument("--reason", required=True)
    s.set_defaults(f=cmd_stage_skip)

    s = sub.add_parser("summary")
    s.add_argument("--stages", required=True)
    s.add_argument("--order", required=True)
    s.add_argument("--backend", required=True)
    s.add_argument("--wall", type=float, required=True)
    s.add_argument("--deadline", type=float, required=True)
    s.add_argument("--partial", action="store_true")
    s.add_argument("--out", required=True)
    s.add_argument("--md")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(f=cmd_summary)

    s = sub.add_parser("pack-logs")
    s.add_argument("--logs")
    s.add_argument("--stages")
    s.add_argument("--out", required=True)
    s.add_argument("--max-file", type=int, default=2 << 20)
    s.add_argument("--max-total", type=int, default=15 << 20)
    s.set_defaults(f=cmd_pack_logs)

    s = sub.add_parser("tail")
    s.add_argument("files", nargs="*")
    s.add_argument("-n", type=int, default=30)
    s.set_defaults(f=cmd_tail)

    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
