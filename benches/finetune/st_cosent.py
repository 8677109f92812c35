#!/usr/bin/env python3
"""The sentence-transformers side of the fine-tuning experiment (benches/finetune/run.sh).

Same model (the imported folder in QZhou form: bidirectional attention via the exporter's
modeling_qzhou.py, loaded with trust_remote_code; mean pooling), same data in the same order
(qzhou's sampler permutation, reproduced below), same steps, batch, learning rate, warm-up,
linear decay, clipping, CoSENT scale (1/τ) and max length. A plain PyTorch loop around
sentence-transformers' `CoSENTLoss` so the order and schedule are exactly qzhou's.

usage: st_cosent.py BASE_DIR TRAIN_JSONL OUT_DIR --steps N --batch B --lr LR --warmup W
                    --scale S --max-len L --eval-every E --seed SEED --threads T
Writes OUT_DIR/metrics.jsonl (per step: loss, lr, grad_norm, step_s, tokens; eval lines with
STS-B test Spearman) and prints the final score.
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer, losses, models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASK = (1 << 64) - 1


class SplitMix64:
    """qzhou_core::data::rng::SplitMix64, bit for bit."""

    def __init__(self, state):
        self.state = state & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        zone = MASK - MASK % n
        while True:
            v = self.next()
            if v < zone:
                return v % n


def permutation(n, seed, dataset, epoch):
    """qzhou_core::data::sampler::permutation: Fisher–Yates for (seed, dataset, epoch)."""
    rotl = ((epoch << 32) | (epoch >> 32)) & MASK
    rng = SplitMix64(seed ^ ((dataset * 0x9E3779B97F4A7C15) & MASK) ^ rotl)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def batches(n, size, seed):
    """qzhou's batches of one dataset: consecutive slices of the epoch's permutation, the
    remainder dropped, a new permutation per epoch."""
    epoch, order, cursor = 0, permutation(n, seed, 0, 0), 0
    while True:
        if cursor + size > n:
            epoch, cursor = epoch + 1, 0
            order = permutation(n, seed, 0, epoch)
        yield order[cursor:cursor + size]
        cursor += size


def stsb_test():
    path = os.path.join(ROOT, "..", "shared", "data", "sts-b-en", "stsbenchmark.tsv.gz")
    a, b, gold = [], [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            c = line.rstrip("\n").split("\t")
            if c[0] == "test":
                gold.append(float(c[5]))
                a.append(c[6])
                b.append(c[7])
    return a, b, np.array(gold)


def qzhou_form(base, out):
    """The imported folder in QZhou form, as `qzhou export` writes it: modeling_qzhou.py and
    an auto_map in config.json; a tokenizer_config.json naming the padding token."""
    if os.path.exists(out):
        shutil.rmtree(out)
    shutil.copytree(base, out)
    shutil.copy(os.path.join(ROOT, "crates/native/src/modeling_qzhou.py"), out)
    cfg = json.load(open(os.path.join(out, "config.json")))
    cfg["auto_map"] = {"AutoModel": "modeling_qzhou.QZhouModel"}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    tc = os.path.join(out, "tokenizer_config.json")
    if not os.path.exists(tc):
        json.dump({"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "padding_side": "right"}, open(tc, "w"))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("train")
    p.add_argument("out")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--scale", type=float, required=True)
    p.add_argument("--max-len", type=int, required=True)
    p.add_argument("--eval-every", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--initial-score", help="a file with the untuned model's STS-B test score (qzhou eval of the same "
                   "weights): recorded as step 0 instead of spending an evaluation on it")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    folder = qzhou_form(a.base, os.path.join(a.out, "model-qzhou-form"))
    word = models.Transformer(folder, max_seq_length=a.max_len, model_args={"trust_remote_code": True, "dtype": torch.float32},
                              config_args={"trust_remote_code": True})
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[word, pool], device="cpu")
    loss_fn = losses.CoSENTLoss(model, scale=a.scale)
    records = [json.loads(l) for l in open(a.train, encoding="utf-8") if l.strip()]
    assert all(r["type"] == "pair" for r in records), "the experiment trains on pair records only"
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def lr_at(step):
        if step < a.warmup:
            return a.lr * step / max(a.warmup, 1)
        return a.lr * (1 - min((step - a.warmup) / max(a.steps - a.warmup, 1), 1.0))

    ta, tb, gold = stsb_test()

    def evaluate(step, log):
        model.eval()
        with torch.inference_mode():
            ea = model.encode(ta, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
            eb = model.encode(tb, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        model.train()
        rho = float(spearmanr((ea * eb).sum(1), gold).correlation)
        log.write(json.dumps({"step": step, "eval": {"tasks": {"STSBenchmark": rho}}}) + "\n")
        log.flush()
        print(f"step {step}: STS-B test Spearman {rho:.4f}", flush=True)
        return rho

    log = open(os.path.join(a.out, "metrics.jsonl"), "w")
    if a.initial_score:
        rho = float(open(a.initial_score).read())
        log.write(json.dumps({"step": 0, "eval": {"tasks": {"STSBenchmark": rho}}, "source": "qzhou eval"}) + "\n")
    else:
        evaluate(0, log)
    model.train()
    order = batches(len(records), a.batch, a.seed)
    start = time.time()
    for step in range(a.steps):
        idx = next(order)
        batch = [records[i] for i in idx]
        t0 = time.time()
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        f1 = model.tokenize([r["text1"] for r in batch])
        f2 = model.tokenize([r["text2"] for r in batch])
        tokens = int(f1["attention_mask"].sum() + f2["attention_mask"].sum())
        labels = torch.tensor([r["score"] for r in batch], dtype=torch.float32)
        loss = loss_fn([f1, f2], labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        dt = time.time() - t0
        log.write(json.dumps({"step": step + 1, "task": "pair", "loss": loss.item(), "lr": lr, "grad_norm": norm,
                              "tokens": tokens, "tokens_per_s": tokens / dt, "step_s": dt,
                              "elapsed_s": time.time() - start}) + "\n")
        log.flush()
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            final = evaluate(step + 1, log)
    print(json.dumps({"final_spearman": final, "seconds": time.time() - start}))


if __name__ == "__main__":
    sys.exit(main())
