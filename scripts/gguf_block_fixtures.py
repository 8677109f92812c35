#!/usr/bin/env python3
"""Regenerate tests/fixtures/gguf_blocks.json: random blocks of every GGML type qzhou reads,
with the values the `gguf` Python package (llama.cpp's own numpy dequantisers) gives them.

usage: scripts/gguf_block_fixtures.py   (needs: pip install gguf numpy)
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rng = np.random.default_rng(20261202)

# type -> (block bytes, blocks, byte offsets of f16 scale fields)
LAYOUT = {
    "Q4_0": (18, 8, [0]),
    "Q4_1": (20, 8, [0, 2]),
    "Q5_0": (22, 8, [0]),
    "Q5_1": (24, 8, [0, 2]),
    "Q8_0": (34, 8, [0]),
    "Q4_K": (144, 3, [0, 2]),
    "Q5_K": (176, 3, [0, 2]),
    "Q6_K": (210, 3, [208]),
}

out = {}
for name, (size, blocks, scale_at) in LAYOUT.items():
    raw = rng.integers(0, 256, size=(blocks, size), dtype=np.uint8)
    for at in scale_at:
        # Finite scales of either sign and realistic magnitude (random bytes could be NaN/inf).
        scales = (rng.normal(0, 0.02, size=blocks)).astype(np.float16)
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(blocks, 2)
    values = dequantize(raw.reshape(-1), getattr(T, name)).reshape(-1).astype(np.float32)
    out[name] = {"hex": raw.tobytes().hex(), "values": [float(v) for v in values]}

for name, dtype in [("F16", np.float16), ("BF16", None), ("F32", np.float32)]:
    x = rng.normal(0, 1, size=64).astype(np.float32)
    if name == "BF16":
        raw = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation: exact bf16 values
        values = (raw.astype(np.uint32) << 16).view(np.float32)
        raw = raw.view(np.uint8)
    else:
        raw = x.astype(dtype).view(np.uint8)
        values = dequantize(raw, getattr(T, name)).reshape(-1).astype(np.float32)
    out[name] = {"hex": raw.tobytes().hex(), "values": [float(v) for v in values]}

path = os.path.join(ROOT, "tests", "fixtures", "gguf_blocks.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
counts = ", ".join(f"{k} {len(v['values'])}" for k, v in out.items())
print(f"wrote {path}: {counts}")
