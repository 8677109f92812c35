#!/usr/bin/env python3
"""PyTorch side of scripts/gpu-check.sh (torch + transformers + tokenizers + safetensors).

  make-model CONFIG_DIR [--out DIR] --dtype f32|bf16 [--device cuda] [--seed 0]
             [--bench BATCH SEQ ITERS --bench-out FILE]
      Random weights for the Qwen2 shape in CONFIG_DIR/config.json (norms 1 + 0.1·N(0,1), every
      other weight 0.02·N(0,1), as benches/make_bench_model.py), built on the device, written as
      one safetensors file (bf16 halves the bytes of the 7B model). With --bench, the in-memory
      model is benchmarked first (encode.py's `bench`), so the 7B model is built only once.

  reference MODEL_DIR TEXTS.jsonl OUT_F32.jsonl [--bf16-out OUT_BF16.jsonl] [--device cuda]
      transformers' Qwen2Model in fp32 (eager attention, TF32 off), bidirectional attention with a
      padding-only mask, mean pooling over the real tokens, L2 normalisation — the recipe of
      scripts/make_fixtures.py, batched; every text is also run alone (no padding) and the largest
      batched-vs-alone difference is written to OUT_F32.meta.json. --bf16-out: the same in bf16
      (the reference's own bf16 drift, context for qzhou's bf16 threshold).

  bench MODEL_DIR BATCH SEQ ITERS --dtypes bf16,f32 [--device cuda] --out-prefix P
      Encode throughput of transformers (sdpa) with the token ids of examples/bench_encode.rs,
      bidirectional + mean + L2; one JSON line per dtype, in P.<dtype>.json.
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2Model

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def strict_fp32():
    """No TF32 anywhere: the f32 reference and the f32 benchmark are real fp32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bidirectional(model):
    for layer in model.layers:
        layer.self_attn.is_causal = False
    return model


# ---------------------------------------------------------------------------------------------
def cmd_make_model(a):
    dtype = DTYPES[a.dtype]
    out = a.out or a.config_dir
    cfg = Qwen2Config.from_pretrained(a.config_dir, attn_implementation="sdpa")
    t0 = time.time()
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(a.device):
            model = Qwen2Model(cfg)
    finally:
        torch.set_default_dtype(prev)
    g = torch.Generator(device=a.device).manual_seed(a.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, device=a.device, dtype=torch.float32)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.02 * noise)
            del noise
    model = bidirectional(model.eval())
    n = sum(p.numel() for p in model.parameters())
    log(f"built {n / 1e9:.3f} B params in {a.dtype} on {a.device} in {time.time() - t0:.1f} s")
    if a.bench:
        batch, seq, iters = a.bench
        with open(a.bench_out, "w") as f:
            r = bench_one(model, a.dtype, a.device, batch, seq, iters, load_s=time.time() - t0)
            f.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)
    t1 = time.time()
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    del model
    if a.device.startswith("cuda"):
        torch.cuda.empty_cache()
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    if os.path.abspath(out) != os.path.abspath(a.config_dir):
        for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(a.config_dir, f), os.path.join(out, f))
    c = json.load(open(os.path.join(out, "config.json")))
    c["dtype"] = {"f32": "float32", "bf16": "bfloat16"}[a.dtype]
    json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=1)
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    log(f"wrote {out}/model.safetensors ({size / 2**30:.2f} GiB) in {time.time() - t1:.1f} s")


# ---------------------------------------------------------------------------------------------
def load_model(model_dir, dtype, device, attn):
    model = Qwen2Model.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn)
    return bidirectional(model.to(device).eval())


@torch.inference_mode()
def encode(model, batch_ids, dtype, device):
    """Right-padded batch, additive padding-only mask (every real key visible to every query),
    mean over real tokens, L2."""
    n = max(len(x) for x in batch_ids)
    ids = torch.zeros((len(batch_ids), n), dtype=torch.long)
    real = torch.zeros((len(batch_ids), n), dtype=torch.bool)
    for i, x in enumerate(batch_ids):
        ids[i, : len(x)] = torch.tensor(x)
        real[i, : len(x)] = True
    ids, real = ids.to(device), real.to(device)
    mask = torch.zeros((len(batch_ids), 1, n, n), dtype=dtype, device=device)
    mask.masked_fill_(~real[:, None, None, :], torch.finfo(dtype).min)
    h = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    r = real[..., None].float()
    pooled = (h * r).sum(1) / r.sum(1)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1).cpu()


def write_embeddings(path, ids, emb):
    with open(path, "w") as f:
        for i, e in zip(ids, emb.tolist()):
            f.write(json.dumps({"id": i, "embedding": e}) + "\n")


def cmd_reference(a):
    from tokenizers import Tokenizer

    strict_fp32()
    rows = [json.loads(l) for l in open(a.texts) if l.strip()]
    tk = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    tok = [tk.encode(r["text"]).ids for r in rows]
    too_long = [len(t) for t in tok if len(t) > a.max_length]
    if a.truncate:
        tok = [t[: a.max_length] for t in tok]
    elif too_long:
        sys.exit(f"texts longer than {a.max_length} tokens ({too_long}): qzhou would truncate differently")
    names = [str(r["id"]) for r in rows]
    meta = {"torch": torch.__version__, "device": a.device, "attention": "eager", "texts": len(rows),
            "token_lengths": [len(t) for t in tok]}
    for label, dtype, path in (("f32", torch.float32, a.out), ("bf16", torch.bfloat16, a.bf16_out)):
        if not path:
            continue
        t0 = time.time()
        # Loaded in its own dtype (an fp32 model cast to bf16 would carry a bf16 RoPE inv_freq).
        model = load_model(a.model_dir, dtype, a.device, "eager")
        batched = encode(model, tok, dtype, a.device)
        alone = torch.cat([encode(model, [t], dtype, a.device) for t in tok])
        write_embeddings(path, names, batched)
        meta[f"{label}_batched_vs_alone_max_abs"] = float((batched - alone).abs().max())
        meta[f"{label}_s"] = round(time.time() - t0, 2)
        log(f"torch {label} reference: {len(tok)} texts, batched vs alone max|d| "
            f"{meta[f'{label}_batched_vs_alone_max_abs']:.2e}, {meta[f'{label}_s']} s")
        del model
    with open(a.out + ".meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


# ---------------------------------------------------------------------------------------------
def bench_ids(batch, seq):
    # The ids examples/bench_encode.rs uses: 100 + (i*7919 + j*104729) mod 150000.
    return [[100 + ((i * 7919 + j * 104729) % 150000) for j in range(seq)] for i in range(batch)]


@torch.inference_mode()
def bench_forward(model, ids, mask):
    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return torch.nn.functional.normalize(h.float().mean(1), dim=-1)


def pick_mask(model, dtype, device):
    """Use no mask (sdpa may then pick flash attention) when that is bidirectional in this
    transformers version: checked against an explicit all-visible 4D mask on a small batch."""
    ids = torch.tensor(bench_ids(2, 24), device=device)
    zero = torch.zeros((2, 1, 24, 24), dtype=dtype, device=device)
    a = bench_forward(model, ids, zero)
    try:
        b = bench_forward(model, ids, None)
    except Exception as e:  # noqa: BLE001 - any failure means: keep the explicit mask
        return "4d-zeros", f"no-mask path failed: {e}"
    d = float((a - b).abs().max())
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    if d <= tol:
        return "none", f"no-mask == all-visible 4D mask (max|d| {d:.1e})"
    return "4d-zeros", f"no-mask differs from all-visible mask by {d:.1e} (causal?): explicit mask used"


def bench_one(model, dtype_name, device, batch, seq, iters, load_s=None):
    dtype = DTYPES[dtype_name]
    if dtype == torch.float32:
        strict_fp32()
    mode, why = pick_mask(model, dtype, device)
    ids = torch.tensor(bench_ids(batch, seq), device=device)
    mask = None if mode == "none" else torch.zeros((batch, 1, seq, seq), dtype=dtype, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        bench_forward(model, ids, mask)
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        bench_forward(model, ids, mask)
    sync(device)
    secs = time.perf_counter() - t
    r = {"impl": f"torch {torch.__version__} sdpa {device} {dtype_name}", "batch": batch, "seq": seq, "iters": iters,
         "tokens_per_s": round(batch * seq * iters / secs, 1), "mask": mode, "mask_check": why,
         "attn_implementation": getattr(model.config, "_attn_implementation", None),
         "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    if load_s is not None:
        r["load_s"] = round(load_s, 2)
    if device.startswith("cuda"):
        r["max_memory_allocated"] = torch.cuda.max_memory_allocated()
        r["device_name"] = torch.cuda.get_device_name()
    log(f"torch {dtype_name} {batch}x{seq}: {r['tokens_per_s']:,.0f} tokens/s ({mode})")
    return r


def cmd_bench(a):
    for name in a.dtypes.split(","):
        t0 = time.time()
        model = load_model(a.model_dir, DTYPES[name], a.device, "sdpa")
        r = bench_one(model, name, a.device, a.batch, a.seq, a.iters, load_s=time.time() - t0)
        with open(f"{a.out_prefix}.{name}.json", "w") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps(r), flush=True)
        del model
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("make-model")
    s.add_argument("config_dir")
    s.add_argument("--out")
    s.add_argument("--dtype", choices=sorted(DTYPES), required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bench", type=int, nargs=3, metavar=("BATCH", "SEQ", "ITERS"))
    s.add_argument("--bench-out")
    s.set_defaults(f=cmd_make_model)
    s = sub.add_parser("reference")
    s.add_argument("model_dir")
    s.add_argument("texts")
    s.add_argument("out")
    s.add_argument("--bf16-out")
    s.add_argument("--device", default="cuda")
    s.add_argument("--max-length", type=int, default=512)
    s.add_argument("--truncate", action="store_true", help="truncate to --max-length instead of refusing")
    s.set_defaults(f=cmd_reference)
    s = sub.add_parser("bench")
    s.add_argument("model_dir")
    s.add_argument("batch", type=int)
    s.add_argument("seq", type=int)
    s.add_argument("iters", type=int)
    s.add_argument("--dtypes", default="bf16")
    s.add_argument("--device", default="cuda")
    s.add_argument("--out-prefix", required=True, help="writes PREFIX.<dtype>.json")
    s.set_defaults(f=cmd_bench)
    a = ap.parse_args()
    if a.cmd == "make-model" and a.bench and not a.bench_out:
        ap.error("--bench needs --bench-out")
    a.f(a)


if __name__ == "__main__":
    main()
