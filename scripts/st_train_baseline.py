"""The training-throughput baseline for `qzhou train`: the same model shape, data, batch and
lengths through sentence-transformers' MultipleNegativesRankingLoss (PyTorch), Adam, one
update per batch. Prints one markdown row (steps, first step s, median step s, tokens/s,
peak memory MiB, loss first -> last) like scripts/gpu-train-check.sh and benches/train.

    python scripts/st_train_baseline.py MODEL_DIR DATA.jsonl BATCH STEPS [cpu|cuda] [bf16|f32]

MODEL_DIR holds config.json + tokenizer files (no weights needed: the model is initialised
randomly with a fixed seed, as `qzhou train` with `init = "random"` does). Tokens counted are
real (unpadded) tokens, as qzhou counts them. Peak memory: torch.cuda.max_memory_reserved on
CUDA, peak RSS on CPU.
"""

import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

import torch
from sentence_transformers import SentenceTransformer, losses, models
from transformers import AutoConfig, AutoModel

model_dir, data, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
device = sys.argv[5] if len(sys.argv) > 5 else "cuda"
dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[sys.argv[6] if len(sys.argv) > 6 else "bf16"]
torch.manual_seed(0)

# A random-weight copy of the folder that transformers can load.
tmp = tempfile.mkdtemp()
config = AutoConfig.from_pretrained(model_dir)
AutoModel.from_config(config).save_pretrained(tmp)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(model_dir, f), tmp)
word = models.Transformer(tmp, max_seq_length=1536)
pool = models.Pooling(word.get_word_embedding_dimension(), "mean")
model = SentenceTransformer(modules=[word, pool], device=device).to(dtype)
model.train()
loss_fn = losses.MultipleNegativesRankingLoss(model)  # scale 20 (tau 0.05)
opt = torch.optim.Adam(model.parameters(), lr=3e-5)
samples = [json.loads(l) for l in open(data)]

times, rates, values = [], [], []
for step in range(steps):
    rows = samples[step * batch : (step + 1) * batch]
    feats = [
        model.tokenize([r["query"] for r in rows]),
        model.tokenize([r["pos"] for r in rows]),
        model.tokenize([r["negs"][0] for r in rows]),
    ]
    feats = [{k: v.to(device) for k, v in f.items() if torch.is_tensor(v)} for f in feats]
    tokens = sum(int(f["attention_mask"].sum()) for f in feats)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = loss_fn(feats, None)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    times.append(dt)
    rates.append(tokens / dt)
    values.append(float(loss))
    print(f"step {step + 1}: {dt:.3f} s, {tokens / dt:,.0f} tokens/s, loss {float(loss):.4f}", file=sys.stderr)

if device == "cuda":
    peak = torch.cuda.max_memory_reserved() / 2**20
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rest_t, rest_r = (times[1:], rates[1:]) if len(times) > 1 else (times, rates)
name = f"sentence-transformers MNRL {'bf16' if dtype == torch.bfloat16 else 'f32'} ({device})"
print(
    f"| {name} | {steps} | {times[0]:.2f} | {statistics.median(rest_t):.3f} | "
    f"{statistics.median(rest_r):,.0f} | {peak:,.0f} | {values[0]:.3f} → {values[-1]:.3f} |"
)
shutil.rmtree(tmp)
