#!/usr/bin/env python3
"""Write the small random-weight Qwen2 model used by the browser benchmark (benches/web/run.mjs).

usage: make_model.py OUT_DIR [--max-length 128] [--no-onnx]

OUT_DIR gets:
  config.json            Qwen2 (model_type qwen2, architectures ["QZhouModel"]): hidden 256, 4 layers,
                         intermediate 1024, 4 heads, 2 KV heads, vocab 151936, rope_theta 1e6
  model.safetensors      random fp32 weights (same recipe as benches/make_bench_model.py)
  tokenizer.json         the real Qwen2.5 tokenizer (from tests/fixtures/tiny-qwen2)
  tokenizer_config.json  with model_max_length = --max-length: transformers.js' feature-extraction
                         pipeline truncates to model_max_length (it has no per-call max_length)
  onnx/model.onnx        the same weights for transformers.js: inputs input_ids, attention_mask,
                         position_ids (int64 [batch, seq]), output last_hidden_state [batch, seq, 256]

The ONNX graph is a plain-op Qwen2 forward written here (MatMul / Softmax / ...; no fused
contrib ops) with QZhou's *bidirectional* attention: every token attends to every non-padding
token, as qzhou-embed does for a QZhouModel. Before exporting, the same module run *causally* is
checked against transformers' Qwen2Model, and the exported graph against the module.
Needs torch, transformers, onnx, onnxscript (the /work/pyref venv).
"""
import argparse
import json
import os
import shutil

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--max-length", type=int, default=128)
ap.add_argument("--no-onnx", action="store_true")
args = ap.parse_args()
out = args.out
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
fixture = os.path.join(root, "tests/fixtures/tiny-qwen2")

cfg = Qwen2Config(vocab_size=151936, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                  max_position_embeddings=32768, tie_word_embeddings=False)
cfg.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
torch.manual_seed(0)
model = Qwen2Model(cfg).float().eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.02 * torch.randn_like(p))
os.makedirs(out, exist_ok=True)
model.save_pretrained(out, safe_serialization=True, max_shard_size="100GB")
c = json.load(open(os.path.join(out, "config.json")))
c["architectures"] = ["QZhouModel"]
c["model_type"] = "qwen2"
c["rope_theta"] = 1000000.0
c["rope_scaling"] = None
json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=2)
for f in ("chat_template.jinja", "generation_config.json"):
    if os.path.exists(os.path.join(out, f)):
        os.remove(os.path.join(out, f))
shutil.copy(os.path.join(fixture, "tokenizer.json"), out)
tc = json.load(open(os.path.join(fixture, "tokenizer_config.json")))
tc["model_max_length"] = args.max_length
json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
print("wrote", out)
if args.no_onnx:
    raise SystemExit


class Encoder(nn.Module):
    """Qwen2 forward in plain ops, sharing the Qwen2Model's parameters."""

    def __init__(self, m: Qwen2Model, causal: bool):
        super().__init__()
        self.m = m
        self.causal = causal
        c = m.config
        self.h, self.kv = c.num_attention_heads, c.num_key_value_heads
        self.d = c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        inv = 1.0 / (1000000.0 ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d))
        self.register_buffer("inv_freq", inv, persistent=False)

    def norm(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def forward(self, input_ids, attention_mask, position_ids):
        b, n = input_ids.shape
        x = self.m.embed_tokens(input_ids)
        f = position_ids.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [b, n, d/2]
        emb = torch.cat([f, f], dim=-1)
        cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)  # [b, 1, n, d]
        keep = attention_mask.to(torch.bool)[:, None, None, :]  # padding keys masked
        if self.causal:
            ar = torch.arange(n, device=input_ids.device)
            keep = keep & (ar[None, :] <= ar[:, None])[None, None]
        g = self.h // self.kv

        def rope(t):
            t1, t2 = t[..., : self.d // 2], t[..., self.d // 2:]
            return t * cos + torch.cat([-t2, t1], dim=-1) * sin

        for layer in self.m.layers:
            a = layer.self_attn
            y = self.norm(x, layer.input_layernorm.weight)
            q = a.q_proj(y).view(b, n, self.h, self.d).transpose(1, 2)
            k = a.k_proj(y).view(b, n, self.kv, self.d).transpose(1, 2)
            v = a.v_proj(y).view(b, n, self.kv, self.d).transpose(1, 2)
            q, k = rope(q), rope(k)
            k = k[:, :, None].expand(b, self.kv, g, n, self.d).reshape(b, self.h, n, self.d)
            v = v[:, :, None].expand(b, self.kv, g, n, self.d).reshape(b, self.h, n, self.d)
            s = torch.matmul(q, k.transpose(-1, -2)) * (self.d ** -0.5)
            s = torch.where(keep, s, torch.full_like(s, torch.finfo(torch.float32).min))
            o = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(b, n, self.h * self.d)
            x = x + a.o_proj(o)
            y = self.norm(x, layer.post_attention_layernorm.weight)
            mlp = layer.mlp
            x = x + mlp.down_proj(nn.functional.silu(mlp.gate_proj(y)) * mlp.up_proj(y))
        return self.norm(x, self.m.norm.weight)


ids = torch.randint(0, 151936, (2, 16))
mask = torch.ones_like(ids)
mask[1, 11:] = 0
pos = (mask.cumsum(-1) - 1).clamp(min=0)
with torch.no_grad():
    want = model(input_ids=ids, attention_mask=mask).last_hidden_state
    got = Encoder(model, causal=True)(ids, mask, pos)
    d = (want - got)[mask.bool()].abs().max().item()
print(f"plain-op causal forward vs transformers Qwen2Model: max|diff| {d:.2e}")
assert d < 1e-4, d

enc = Encoder(model, causal=False).eval()
onnx_dir = os.path.join(out, "onnx")
os.makedirs(onnx_dir, exist_ok=True)
path = os.path.join(onnx_dir, "model.onnx")
# min=2: torch 2.9 specialises a length-1 input away (a guard `64 * sequence_length != 64`).
batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length", min=2)
with torch.no_grad():
    prog = torch.onnx.export(enc, (ids, mask, pos), dynamo=True, opset_version=18,
                             input_names=["input_ids", "attention_mask", "position_ids"],
                             output_names=["last_hidden_state"],
                             dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch, 1: seq}))
    prog.optimize()
    prog.save(path, external_data=False)
import onnx  # noqa: E402

onnx.checker.check_model(path)
print("wrote", path, os.path.getsize(path), "bytes;",
      [i.name for i in onnx.load(path, load_external_data=False).graph.input])
try:  # optional check of the exported graph, if onnxruntime is installed
    import onnxruntime as ort

    s = ort.InferenceSession(path)
    with torch.no_grad():
        ref = enc(ids, mask, pos)
    o = s.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "position_ids": pos.numpy()})[0]
    print(f"onnxruntime vs torch (bidirectional): max|diff| {abs(o - ref.numpy()).max():.2e}")
except ImportError:
    pass
