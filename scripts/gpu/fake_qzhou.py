#!/usr/bin/env python3
"""A stand-in for the `qzhou` and `bench_encode` binaries, for scripts/gpu/selftest.sh: it lets
the dry run of scripts/gpu-check.sh exercise the code paths of flags a given build may not have
yet (--fusion, --pure-bf16, --plan, the `phase` field, bench_encode's fused backends) and the
timeout paths, without a GPU and without cargo. Not a model of qzhou's speed or memory.

  fake_qzhou.py qzhou ARGS...          (embed via transformers, fp32 or bf16; train writes
                                        metrics.jsonl; train --plan prints a plan)
  fake_qzhou.py bench_encode ARGS...   (one JSON line like examples/bench_encode.rs)

FAKE_QZHOU_HANG=embed|train|bench: that command ignores SIGTERM and sleeps (timeout tests).
FAKE_QZHOU_FLAGS=none: --help lists none of the new flags (an older build).
FAKE_QZHOU_WRONG=1: embeddings are perturbed by 1e-3 (parity must fail).
"""
import json
import os
import signal
import sys
import time


def hang(what):
    if os.environ.get("FAKE_QZHOU_HANG") == what:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"fake {what}: hanging (ignoring SIGTERM)", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)


def opt(args, *names, default=None):
    for n in names:
        if n in args:
            return args[args.index(n) + 1]
    return default


HELP_NEW = {"embed": "--fusion <FUSION>", "eval": "--fusion <FUSION>",
            "train": "--fusion <FUSION>\n--pure-bf16\n--plan"}


def qzhou(args):
    if args[:1] == ["--version"]:
        print("qzhou 0.0.0-fake")
        return 0
    cmd = args[0]
    if "--help" in args:
        print(f"Usage: qzhou {cmd} [OPTIONS]\n--backend\n--dtype")
        if os.environ.get("FAKE_QZHOU_FLAGS") != "none":
            print(HELP_NEW.get(cmd, ""))
        return 0
    if os.environ.get("FAKE_QZHOU_FLAGS") == "none":
        for f in ("--fusion", "--pure-bf16", "--plan"):
            if f in args:
                print(f"error: unexpected argument '{f}' found", file=sys.stderr)
                return 2
    if opt(args, "--fusion") == "on" and opt(args, "--backend") == "cpu":
        print("--fusion on needs a GPU backend", file=sys.stderr)
        return 1
    if cmd == "embed":
        hang("embed")
        return embed(args)
    if cmd == "train":
        if "--plan" not in args:
            hang("train")
        return train(args)
    print(f"fake qzhou: unknown command {cmd}", file=sys.stderr)
    return 2


def embed(args):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModel

    model_dir, dtype = opt(args, "-m", "--model"), opt(args, "--dtype", default="f32")
    if opt(args, "--backend") in ("cpu", "wgpu") and dtype != "f32":
        print(f"the {opt(args, '--backend')} backend computes in f32 only", file=sys.stderr)
        return 1
    td = torch.bfloat16 if dtype == "bf16" else torch.float32
    causal = opt(args, "--attention") == "causal"
    pooling = opt(args, "--pooling", default="mean")
    max_len = 8192
    sb = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.exists(sb):
        max_len = json.load(open(sb))["max_seq_length"]
    cfg = AutoConfig.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=td, attn_implementation="eager").eval()
    for layer in model.layers:
        layer.self_attn.is_causal = causal
    tk = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    rows = [json.loads(l) for l in open(opt(args, "-i", "--input")) if l.strip()]
    wrong = os.environ.get("FAKE_QZHOU_WRONG") == "1"
    with open(opt(args, "-o", "--output"), "w") as f, torch.no_grad():
        for r in rows:
            ids = tk.encode(r["text"]).ids[:max_len]
            n = len(ids)
            x = torch.tensor([ids])
            if causal:
                h = model(input_ids=x, attention_mask=torch.ones((1, n), dtype=torch.long)).last_hidden_state[0]
            else:
                h = model(input_ids=x, attention_mask=torch.zeros((1, 1, n, n), dtype=td)).last_hidden_state[0]
            h = h.float()
            p = h.mean(0) if pooling == "mean" else h[-1]
            e = torch.nn.functional.normalize(p, dim=0)
            if wrong:
                e = e + 1e-3
            f.write(json.dumps({"id": r["id"], "embedding": e.tolist()}) + "\n")
    del cfg
    return 0


def train(args):
    import tomllib

    path = opt(args, "--config")
    run = tomllib.load(open(path, "rb"))
    plan = (f"memory plan ({opt(args, '--dtype')}{' pure' if '--pure-bf16' in args else ''}"
            f"{', lora r' + str(run['lora']['rank']) if 'lora' in run else ''}):\n"
            "  weights 1.00 GiB\n  optimizer 2.00 GiB\n  activations 3.00 GiB\n  total 6.00 GiB\n")
    sys.stderr.write(plan)
    if "--plan" in args:
        return 0
    steps = run["train"]["steps"]
    out = os.path.join(os.path.dirname(path), run["checkpoint"]["dir"])
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for s in range(1, steps + 1):
            dt = 0.5 if s == 1 else 0.1
            time.sleep(dt / 10)
            tokens = run["dataset"][0]["batch_size"] * 300
            f.write(json.dumps({"step": s, "loss": 5.0 / s, "tokens": tokens, "tokens_per_s": tokens / dt, "step_s": dt,
                                "elapsed_s": time.time() - t0, "peak_rss_bytes": 1 << 30,
                                "device_memory_bytes": 3 << 30, "phase": "warmup" if s == 1 else "steady"}) + "\n")
    return 0


def bench_encode(args):
    if len(args) != 5:
        print("usage: bench_encode DIR cpu|wgpu|wgpu-fused|cuda|cuda-bf16|cuda-fused|cuda-bf16-fused BATCH SEQ ITERS",
              file=sys.stderr)
        return 2
    hang("bench")
    backend, batch, seq, iters = args[1], int(args[2]), int(args[3]), int(args[4])
    print(json.dumps({"impl": f"qzhou fake {backend}", "batch": batch, "seq": seq, "iters": iters, "load_s": 0.1,
                      "weights_bytes": 1, "load_peak_rss": 1, "rss_after_load": 1,
                      "tokens_per_s": 1000.0 * (2 if "fused" in backend else 1), "peak_rss": 1}))
    return 0


if __name__ == "__main__":
    which, rest = sys.argv[1], sys.argv[2:]
    sys.exit(qzhou(rest) if which == "qzhou" else bench_encode(rest))
