#!/usr/bin/env python3
"""Write a Qwen2.5-0.5B-shaped Qwen2 model with random weights (fp32, ~2 GB) for benchmarks.

usage: make_bench_model.py OUT_DIR   (needs torch, transformers; the tokenizer is copied from
the tiny fixture, which carries the real Qwen2.5 tokenizer)
"""
import json
import os
import shutil
import sys

import torch
from transformers import Qwen2Config, Qwen2Model

out = sys.argv[1]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6,
                  max_position_embeddings=32768, tie_word_embeddings=True)
cfg.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
torch.manual_seed(0)
model = Qwen2Model(cfg).float()
with torch.no_grad():
    for name, p in model.named_parameters():
        p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.02 * torch.randn_like(p))
os.makedirs(out, exist_ok=True)
model.save_pretrained(out, safe_serialization=True, max_shard_size="100GB")
c = json.load(open(os.path.join(out, "config.json")))
c["architectures"] = ["QZhouModel"]
json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=2)
for f in ("chat_template.jinja", "generation_config.json"):
    if os.path.exists(os.path.join(out, f)):
        os.remove(os.path.join(out, f))
shutil.copy(os.path.join(root, "tests/fixtures/tiny-qwen2/tokenizer.json"), out)
print("wrote", out)
