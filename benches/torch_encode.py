#!/usr/bin/env python3
"""PyTorch transformers side of the encode benchmark: the same model folder, batch shape and
token ids as examples/bench_encode.rs, bidirectional attention + mean pooling + L2, fp32 on CPU.

usage: torch_encode.py DIR BATCH SEQ ITERS  -> one JSON line
"""
import json
import resource
import sys
import time

import torch
from transformers import Qwen2Model

d, batch, seq, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.time()
model = Qwen2Model.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
for layer in model.layers:
    layer.self_attn.is_causal = False
load_s = time.time() - t0
load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ids = torch.tensor([[100 + ((i * 7919 + j * 104729) % 150000) for j in range(seq)] for i in range(batch)])
mask4 = torch.zeros((batch, 1, seq, seq), dtype=torch.float32)


@torch.inference_mode()
def encode():
    h = model(input_ids=ids, attention_mask=mask4).last_hidden_state
    return torch.nn.functional.normalize(h.mean(1), dim=-1)


encode()
t = time.time()
for _ in range(iters):
    encode()
secs = time.time() - t
print(json.dumps({"impl": f"torch {torch.__version__} cpu ({torch.get_num_threads()} threads)", "batch": batch,
                  "seq": seq, "iters": iters, "load_s": round(load_s, 2), "load_peak_rss": load_peak,
                  "tokens_per_s": round(batch * seq * iters / secs, 1),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
