#!/usr/bin/env python3
"""Which 4-bit scheme keeps a real model's embeddings? (issue 17, item 0; exploration, not CI)

Fake-quantises the real Qwen2.5-Coder-0.5B-Instruct weights (the GGUF of
scripts/fetch-real-gguf.py, dequantised by transformers) with candidate block schemes, embeds
real English and Chinese sentences in QZhou form (bidirectional attention, mean pooling) and
prints, per scheme, the cosine to the f32 embeddings (min / p5 / mean over the sentences) and the
average bits per weight over every quantised matrix. The winner is then implemented in
crates/core/src/quantization.rs and measured again end to end with `qzhou export-web` (the numbers
that count are those; this script only chooses).

Candidates (every one keeps norms and biases f32, as the packs do):
  rtn-asym32      the packs' q4 before issue 17: min/max round-to-nearest, blocks of 32, f16 scale+min (5.0 b/w)
  opt-asym32      same layout, scale and min chosen by a least-squares search (llama.cpp's make_qkx2 idea) (5.0)
  rtn-asym16      blocks of 16 (6.0)
  only:<class>    one tensor class at q4 (opt-asym32), the rest f32: where the error comes from
  mixed:<classes> opt-asym32 with the named classes at q8 (symmetric, blocks of 32, 8.5 b/w)
  q8              the packs' q8 everywhere; q8-except:<class> the same with one class left f32
  awq-asym32      opt-asym32 whose search and refit minimise the error weighted by each input
                  column's mean squared activation on calibration texts (llama.cpp's imatrix idea;
                  STS-B / Chinese STS-B *train* sentences, disjoint from the scored ones) (5.0)
  awq-mixed:<classes>  awq-asym32 with the named classes at q8

usage: benches/quant/q4_schemes.py [--texts N] [--schemes a,b,...]
needs: torch, transformers, gguf, accelerate, numpy (pip)
"""
import argparse
import gzip
import os
import subprocess
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data")
CLASSES = ["embed", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sentences(n):
    """n/2 English (STS-B test) and n/2 Chinese (Chinese STS-B test) sentences, distinct."""
    en, zh = [], []
    with gzip.open(os.path.join(DATA, "sts-b-en", "stsbenchmark.tsv.gz"), "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            c = line.rstrip("\n").split("\t")
            if c[0] == "test":
                for t in c[6:8]:
                    if t not in en:
                        en.append(t)
            if len(en) >= n // 2:
                break
    for line in open(os.path.join(DATA, "sts-b-zh", "STS-B.test.data"), encoding="utf-8"):
        c = line.rstrip("\n").split("\t")
        for t in c[:2]:
            if t not in zh:
                zh.append(t)
        if len(zh) >= n - n // 2:
            break
    return en[: n // 2] + zh[: n - n // 2]


def f16(x):
    return x.astype(np.float16).astype(np.float32)


def q8(w):
    b = w.reshape(-1, 32)
    scale = f16(np.abs(b).max(1, keepdims=True) / 127)
    inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0)
    return (np.clip(np.round(b * inv), -127, 127) * scale).reshape(w.shape)


def q8_search(w, steps=16):
    """Symmetric q8 with the scale of least squared error among absmax/127 · (1 − i/200)."""
    b = w.reshape(-1, 32).astype(np.float64)
    amax = np.abs(b).max(1, keepdims=True)
    best_err = np.full((b.shape[0], 1), np.inf)
    best = np.zeros_like(b)
    for i in range(steps):
        scale = f16((amax / 127 * (1 - i / 200)).astype(np.float32)).astype(np.float64)
        inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0)
        d = np.clip(np.round(b * inv), -127, 127) * scale
        err = ((d - b) ** 2).sum(1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, d, best)
    return best.reshape(w.shape).astype(np.float32)


def f16_up(x):
    """Round to the f16 at or above x (x ≥ 0)."""
    h = x.astype(np.float16)
    low = h.astype(np.float32) < x
    return np.where(low, np.nextafter(h, np.float16(np.inf)), h).astype(np.float32)


def q8_ceil(w):
    """q8 with the f16 scale rounded up: no value clips past ±127 (f16 subnormals are coarse)."""
    b = w.reshape(-1, 32)
    scale = f16_up(np.abs(b).max(1, keepdims=True) / 127)
    inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0)
    return (np.clip(np.round(b * inv), -127, 127) * scale).reshape(w.shape)


def q8_f32scale(w):
    b = w.reshape(-1, 32)
    scale = np.abs(b).max(1, keepdims=True) / 127
    inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0)
    return (np.clip(np.round(b * inv), -127, 127) * scale).reshape(w.shape)


def q8_16(w):
    b = w.reshape(-1, 16)
    scale = f16(np.abs(b).max(1, keepdims=True) / 127)
    inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0)
    return (np.clip(np.round(b * inv), -127, 127) * scale).reshape(w.shape)


def rtn_asym(w, block):
    b = w.reshape(-1, block)
    lo = f16(b.min(1, keepdims=True))
    scale = f16(np.maximum(b.max(1, keepdims=True) - lo, 0) / 15)
    inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0)
    q = np.clip(np.round((b - lo) * inv), 0, 15)
    return (lo + q * scale).reshape(w.shape)


def opt_asym(w, block, steps=20, rrange=1.0):
    """Least-squares min/scale: for candidate inverse scales around 15/(max-min), round, then
    refit (scale, min) by ordinary least squares on the chosen levels; keep the best per block."""
    b = w.reshape(-1, block).astype(np.float64)
    lo = np.minimum(b.min(1, keepdims=True), 0)  # as make_qkx2: the min is ≤ 0
    hi = b.max(1, keepdims=True)
    span = np.maximum(hi - lo, 1e-30)
    best_err = np.full((b.shape[0], 1), np.inf)
    best_s = span / 15
    best_m = lo.copy()
    for i in range(steps + 1):
        iscale = (15 + rrange * (i / steps * 2 - 1)) / span
        q = np.clip(np.round((b - lo) * iscale), 0, 15)
        # least squares x ≈ m + q·s
        n = block
        sq, sq2 = q.sum(1, keepdims=True), (q * q).sum(1, keepdims=True)
        sx, sqx = b.sum(1, keepdims=True), (q * b).sum(1, keepdims=True)
        det = n * sq2 - sq * sq
        ok = det > 0
        s = np.where(ok, (n * sqx - sq * sx) / np.where(ok, det, 1), span / 15)
        m = np.where(ok, (sq2 * sx - sq * sqx) / np.where(ok, det, 1), lo)
        s, m = f16(s.astype(np.float32)).astype(np.float64), f16(m.astype(np.float32)).astype(np.float64)
        # re-round against the fitted grid, then measure
        inv = np.where(s > 0, 1 / np.where(s > 0, s, 1), 0)
        q2 = np.clip(np.round((b - m) * inv), 0, 15)
        err = ((m + q2 * s - b) ** 2).sum(1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_m = np.where(better, m, best_m)
    inv = np.where(best_s > 0, 1 / np.where(best_s > 0, best_s, 1), 0)
    q = np.clip(np.round((b - best_m) * inv), 0, 15)
    return (best_m + q * best_s).reshape(w.shape).astype(np.float32)


def awq_asym(w, importance, block=32, steps=20, rrange=1.0):
    """opt_asym minimising sum_j a_j (x_j - m - q_j s)^2, with a_j the mean squared activation
    that meets column j of `w` ([out, in]) in the forward pass."""
    rows, cols = w.shape
    b = w.reshape(-1, block).astype(np.float64)
    a = np.tile(importance.astype(np.float64).reshape(1, cols), (rows, 1)).reshape(-1, block)
    a = a / np.maximum(a.mean(1, keepdims=True), 1e-30) + 1e-6
    lo = np.minimum(b.min(1, keepdims=True), 0)
    hi = b.max(1, keepdims=True)
    span = np.maximum(hi - lo, 1e-30)
    best_err = np.full((b.shape[0], 1), np.inf)
    best_s = span / 15
    best_m = lo.copy()
    sa, sx = a.sum(1, keepdims=True), (a * b).sum(1, keepdims=True)
    for i in range(steps + 1):
        iscale = (15 + rrange * (i / steps * 2 - 1)) / span
        q = np.clip(np.round((b - lo) * iscale), 0, 15)
        sq, sq2, sqx = (a * q).sum(1, keepdims=True), (a * q * q).sum(1, keepdims=True), (a * q * b).sum(1, keepdims=True)
        det = sa * sq2 - sq * sq
        ok = det > 0
        s = np.where(ok, (sa * sqx - sq * sx) / np.where(ok, det, 1), span / 15)
        m = np.where(ok, (sq2 * sx - sq * sqx) / np.where(ok, det, 1), lo)
        s, m = f16(s.astype(np.float32)).astype(np.float64), f16(m.astype(np.float32)).astype(np.float64)
        inv = np.where(s > 0, 1 / np.where(s > 0, s, 1), 0)
        q2 = np.clip(np.round((b - m) * inv), 0, 15)
        err = (a * (m + q2 * s - b) ** 2).sum(1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_m = np.where(better, m, best_m)
    inv = np.where(best_s > 0, 1 / np.where(best_s > 0, best_s, 1), 0)
    q = np.clip(np.round((b - best_m) * inv), 0, 15)
    return (best_m + q * best_s).reshape(w.shape).astype(np.float32)


def calibration_texts(n):
    """n/2 English (STS-B train) and n/2 Chinese (Chinese STS-B train) sentences."""
    en, zh = [], []
    with gzip.open(os.path.join(DATA, "sts-b-en", "stsbenchmark.tsv.gz"), "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            c = line.rstrip("\n").split("\t")
            if c[0] == "train" and c[6] not in en:
                en.append(c[6])
            if len(en) >= n // 2:
                break
    for line in open(os.path.join(DATA, "sts-b-zh", "STS-B.train.data"), encoding="utf-8"):
        t = line.rstrip("\n").split("\t")[0]
        if t not in zh:
            zh.append(t)
        if len(zh) >= n - n // 2:
            break
    return en + zh


def importance(model, tok, texts):
    """{weight name: mean over calibration tokens of x_j^2 per input column}, every Linear."""
    sums, counts, hooks = {}, {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            def hook(m, inp, name=name):
                x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
                sums[name] = sums.get(name, 0) + (x * x).sum(0)
                counts[name] = counts.get(name, 0) + x.shape[0]
            hooks.append(mod.register_forward_pre_hook(hook))
    embed(model, tok, texts)
    for h in hooks:
        h.remove()
    return {f"{k}.weight": (sums[k] / counts[k]).numpy() for k in sums}


def tensor_class(name):
    if "embed_tokens" in name:
        return "embed"
    for c in CLASSES[1:]:
        if c in name:
            return c
    return None


def layer_of(name):
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else None


def plan(scheme, name, layers, imp=None):
    """(quantiser, bits/weight) for one matrix under `scheme`, or None to keep f32."""
    cls = tensor_class(name)
    if cls is None:
        return None
    if scheme.startswith("awq"):
        wanted = scheme.split(":", 1)[1].split("+") if ":" in scheme else []
        if cls in wanted:
            return (q8, 8.5)
        if name in imp:
            return (lambda w: awq_asym(w, imp[name]), 5.0)
        return (lambda w: opt_asym(w, 32), 5.0)
    base = {"rtn-asym32": (lambda w: rtn_asym(w, 32), 5.0), "opt-asym32": (lambda w: opt_asym(w, 32), 5.0),
            "rtn-asym16": (lambda w: rtn_asym(w, 16), 6.0)}
    if scheme in base:
        return base[scheme]
    if scheme == "q8":
        return (q8, 8.5)
    if scheme == "q8-ceil":
        return (q8_ceil, 8.5)
    if scheme == "q8-search":
        return (q8_search, 8.5)
    if scheme == "q8-f32scale":
        return (q8_f32scale, 9.0)
    if scheme == "q8-block16":
        return (q8_16, 9.0)
    if scheme.startswith("q8-except:"):
        return None if cls == scheme[10:] else (q8, 8.5)
    if scheme.startswith("only:"):
        return base["opt-asym32"] if cls == scheme[5:] else None
    if scheme.startswith("mixed:"):
        wanted = scheme[6:].split("+")
        layer = layer_of(name)
        edge = layer is not None and (layer == 0 or layer == layers - 1)
        if cls in wanted or ("edges" in wanted and edge):
            return (q8, 8.5)
        return base["opt-asym32"]
    raise SystemExit(f"unknown scheme {scheme}")


def embed(model, tok, texts):
    out = []
    with torch.inference_mode():
        for t in texts:
            ids = torch.tensor([tok(t)["input_ids"]])
            n = ids.shape[1]
            h = model(input_ids=ids, attention_mask=torch.zeros((1, 1, n, n))).last_hidden_state[0]
            out.append(torch.nn.functional.normalize(h.mean(0), dim=0).numpy())
    return np.stack(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--texts", type=int, default=60)
    p.add_argument("--calibration", type=int, default=64, help="calibration texts for awq-*")
    p.add_argument("--extra", default="", help="more texts, '|'-separated")
    p.add_argument("--schemes", default="rtn-asym32,opt-asym32,rtn-asym16,"
                   + ",".join(f"only:{c}" for c in CLASSES) + ",mixed:v_proj,mixed:v_proj+down_proj,mixed:edges,mixed:embed")
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    gguf = subprocess.run([sys.executable, os.path.join(ROOT, "scripts/fetch-real-gguf.py")],
                          check=True, capture_output=True, text=True).stdout.strip()
    lm = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                              dtype=torch.float32, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "tests/fixtures/tiny-qwen2"))
    model = lm.model.eval()
    for layer in model.layers:
        layer.self_attn.is_causal = False
    layers = len(model.layers)
    texts = sentences(a.texts) + [t for t in a.extra.split("|") if t]
    ref = embed(model, tok, texts)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    imp = None
    if any(s.startswith("awq") for s in a.schemes.split(",")):
        imp = importance(model, tok, calibration_texts(a.calibration))
    print(f"{len(texts)} texts ({a.texts // 2} English, {a.texts - a.texts // 2} Chinese), {layers} layers")
    print("| scheme | bits/weight | min cos | p5 cos | mean cos | worst text |")
    print("|---|---|---|---|---|---|")
    for scheme in a.schemes.split(","):
        bits = numel = 0
        state = {}
        for name, w in original.items():
            how = plan(scheme, name, layers, imp) if w.ndim == 2 else None
            if how is None:
                continue
            fn, b = how
            state[name] = torch.from_numpy(fn(w.numpy()))
            bits += b * w.numel()
            numel += w.numel()
        model.load_state_dict({**original, **state})
        cos = (embed(model, tok, texts) * ref).sum(1)
        worst = int(cos.argmin())
        print(f"| {scheme} | {bits / max(numel, 1):.2f} | {cos.min():.4f} | {np.percentile(cos, 5):.4f} | {cos.mean():.5f} | {texts[worst][:40]!r} |", flush=True)
        model.load_state_dict(original)


if __name__ == "__main__":
    main()
