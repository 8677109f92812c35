#!/usr/bin/env python3
"""Regenerate tests/fixtures/real-qwen2.5-0.5b/: transformers' embeddings of real sentences by
the real Qwen2.5-Coder-0.5B-Instruct weights, which `.ci/run` compares with `qzhou embed` on
the folder `qzhou import-gguf` makes of the same GGUF (crates/native/tests/real_weights.rs).

The reference path is independent of qzhou's: transformers dequantises the GGUF itself (with
the `gguf` package) and the texts are tokenised by the real Qwen2.5 tokenizer.json
(tests/fixtures/tiny-qwen2), not by the one qzhou rebuilds from the GGUF.

Writes `texts.json` (28 texts: English, Chinese, code, emoji, combining marks; from
tests/fixtures/multilingual.jsonl), `bidirectional_mean.npy` (QZhou form: bidirectional
attention, mean pooling) and `causal_last.npy` (causal attention, last-token pooling), both
float32 [28, 896], L2-normalised.

usage: scripts/real_weights_fixture.py [CACHE_DIR]
needs: torch, transformers, gguf, accelerate, numpy, tokenizers (pip); the GGUF from
scripts/fetch-real-gguf.py.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "real-qwen2.5-0.5b")


def texts():
    lines = [json.loads(l)["text"] for l in open(os.path.join(ROOT, "tests/fixtures/multilingual.jsonl"), encoding="utf-8")]
    han = [t for t in lines if re.search("[\u4e00-\u9fff]", t)]
    latin = [t for t in lines if not re.search("[\u4e00-\u9fff]", t) and re.search("[A-Za-z]", t)]
    plain = [t for t in latin if t.isascii() and "\n" not in t]
    tricky = [t for t in latin if not t.isascii() or "\n" in t]
    return plain[:12] + han[:10] + tricky[:6]


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.expanduser("~"), ".cache", "qzhou")
    gguf = subprocess.run([sys.executable, os.path.join(ROOT, "scripts/fetch-real-gguf.py"), cache],
                          check=True, capture_output=True, text=True).stdout.strip()
    lm = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                              dtype=torch.float32, attn_implementation="eager")
    model = lm.model.eval()
    tok = Tokenizer.from_file(os.path.join(ROOT, "tests/fixtures/tiny-qwen2/tokenizer.json"))
    sentences = texts()
    bi, causal = [], []
    with torch.inference_mode():
        for t in sentences:
            ids = torch.tensor([tok.encode(t).ids])
            n = ids.shape[1]
            for layer in model.layers:
                layer.self_attn.is_causal = True
            h = model(input_ids=ids).last_hidden_state[0]
            causal.append(torch.nn.functional.normalize(h[-1], dim=0).numpy())
            for layer in model.layers:
                layer.self_attn.is_causal = False
            # A 4-D all-zero additive mask: every token sees every token (no padding here).
            h = model(input_ids=ids, attention_mask=torch.zeros((1, 1, n, n))).last_hidden_state[0]
            bi.append(torch.nn.functional.normalize(h.mean(0), dim=0).numpy())
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "texts.json"), "w", encoding="utf-8") as f:
        json.dump(sentences, f, ensure_ascii=False, indent=1)
    np.save(os.path.join(OUT, "bidirectional_mean.npy"), np.stack(bi).astype(np.float32))
    np.save(os.path.join(OUT, "causal_last.npy"), np.stack(causal).astype(np.float32))
    # The two forms must differ, or the test could not tell them apart.
    cos = [float(a @ b) for a, b in zip(bi, causal)]
    print(f"wrote {len(sentences)} texts to {OUT}; cos(bidirectional, causal) per text: min {min(cos):.3f} max {max(cos):.3f}")


if __name__ == "__main__":
    main()
