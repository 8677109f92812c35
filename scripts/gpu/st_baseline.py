#!/usr/bin/env python3
"""The training baseline of scripts/gpu-check.sh: sentence-transformers'
MultipleNegativesRankingLoss on the same model shape, data, batch and lengths as `qzhou train`,
Adam (lr 3e-5), gradient clipping at 1.0, one update per batch — like scripts/st_train_baseline.py,
but with bf16 autocast over fp32 master weights (what `qzhou train --dtype bf16` now does) and a
JSON result.

  st_baseline.py MODEL_DIR DATA.jsonl OUT.json --batch 32 --steps 20 [--device cuda]
                 [--precision autocast-bf16|bf16|f32] [--qlen 256] [--plen 512] [--lora 16]

MODEL_DIR: config.json + tokenizer files, with weights (used) or without (random init, seeded).
Tokens counted are real (unpadded) tokens of the queries, positives and negatives, as qzhou counts
them; a step's time covers tokenization, forward, backward, clipping and the optimizer step (as
qzhou's `step_s`). Memory: torch.cuda.max_memory_allocated / max_memory_reserved.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
from sentence_transformers import SentenceTransformer, losses, models
from transformers import AutoConfig, AutoModel

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="autocast-bf16", choices=["autocast-bf16", "bf16", "f32"])
    ap.add_argument("--qlen", type=int, default=256)
    ap.add_argument("--plen", type=int, default=512)
    ap.add_argument("--scale", type=float, default=50.0, help="1/temperature (qzhou's default tau 0.02)")
    ap.add_argument("--lora", type=int, default=0)
    ap.add_argument("--warmup-steps", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False

    src, tmp = a.model_dir, None
    if not any(f.endswith(".safetensors") for f in os.listdir(a.model_dir)):
        tmp = tempfile.mkdtemp()
        AutoModel.from_config(AutoConfig.from_pretrained(a.model_dir)).save_pretrained(tmp)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(a.model_dir, f), tmp)
        src = tmp
    t0 = time.time()
    word = models.Transformer(src, max_seq_length=a.plen)
    pool = models.Pooling(word.get_word_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[word, pool], device=a.device)
    if a.precision == "bf16":
        model = model.to(torch.bfloat16)
    lora_how = None
    if a.lora:
        from peft import LoraConfig

        cfg = LoraConfig(r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0, target_modules=PROJECTIONS)
        try:
            model.add_adapter(cfg)
            lora_how = "SentenceTransformer.add_adapter"
        except Exception:  # noqa: BLE001 - older/newer API: wrap the HF model directly
            from peft import get_peft_model

            word.auto_model = get_peft_model(word.auto_model, cfg)
            lora_how = "peft.get_peft_model"
    model.train()
    load_s = time.time() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = losses.MultipleNegativesRankingLoss(model, scale=a.scale)
    opt = torch.optim.Adam(params, lr=3e-5)
    samples = [json.loads(l) for l in open(a.data) if l.strip()]
    autocast = a.precision == "autocast-bf16"
    dev_type = "cuda" if a.device.startswith("cuda") else "cpu"

    def tokenize(texts, length):
        word.max_seq_length = length
        f = model.tokenize(texts)
        return {k: v.to(a.device) for k, v in f.items() if torch.is_tensor(v)}

    if dev_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    per_step = []
    for step in range(a.steps):
        rows = [samples[(step * a.batch + i) % len(samples)] for i in range(a.batch)]
        if dev_type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        feats = [tokenize([r["query"] for r in rows], a.qlen), tokenize([r["pos"] for r in rows], a.plen),
                 tokenize([r["negs"][0] for r in rows], a.plen)]
        tokens = sum(int(f["attention_mask"].sum()) for f in feats)
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(feats, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev_type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        per_step.append({"step": step + 1, "tokens": tokens, "step_s": dt, "loss": float(loss.detach())})
        print(f"step {step + 1}: {dt:.3f} s, {tokens / dt:,.0f} tokens/s, loss {float(loss.detach()):.4f}", file=sys.stderr, flush=True)

    steady = per_step[a.warmup_steps:] or per_step
    result = {
        "impl": "sentence-transformers", "torch": torch.__version__,
        "sentence_transformers": __import__("sentence_transformers").__version__,
        "precision": a.precision, "lora_rank": a.lora, "lora_how": lora_how, "batch": a.batch, "steps": a.steps,
        "warmup_steps": a.warmup_steps, "scale": a.scale, "qlen": a.qlen, "plen": a.plen, "load_s": round(load_s, 2),
        "trainable_params": sum(p.numel() for p in params),
        "median_step_s": statistics.median(s["step_s"] for s in steady),
        "per_step": per_step,
    }
    if dev_type == "cuda":
        result["max_memory_allocated"] = torch.cuda.max_memory_allocated()
        result["max_memory_reserved"] = torch.cuda.max_memory_reserved()
        result["device_name"] = torch.cuda.get_device_name()
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    if tmp:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
