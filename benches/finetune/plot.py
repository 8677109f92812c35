#!/usr/bin/env python3
"""Both runs of benches/finetune/run.sh in one picture: training loss (10-step means) and
STS-B test Spearman over steps, qzhou vs sentence-transformers. (qzhou's own curves.svg, from
`qzhou train`, sits in WORK/qzhou-run/.)

usage: plot.py WORK_DIR OUT.svg      (needs matplotlib)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

work, out = sys.argv[1], sys.argv[2]
runs = {"qzhou train": f"{work}/qzhou-run/metrics.jsonl", "sentence-transformers": f"{work}/st/metrics.jsonl"}
fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
for name, path in runs.items():
    rows = [json.loads(l) for l in open(path) if l.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval"]["tasks"]["STSBenchmark"]) for r in rows if "eval" in r]
    if not evals and name == "qzhou train":
        # Run without in-training evaluation: the untuned and the exported model's `qzhou eval`.
        evals = [(0, float(open(f"{work}/untuned.score").read())),
                 (train[-1][0], float(open(f"{work}/tuned.score").read()))]
    steps = [s for s, _ in train]
    smooth = [sum(l for s2, l in train if s - 10 < s2 <= s) / len([1 for s2, _ in train if s - 10 < s2 <= s]) for s in steps]
    ax_loss.plot(steps, smooth, label=name)
    ax_eval.plot([s for s, _ in evals], [v for _, v in evals], marker="o", label=name)
ax_loss.set(title="CoSENT loss (10-step mean)", xlabel="step")
ax_eval.set(title="STS-B test Spearman", xlabel="step")
for ax in (ax_loss, ax_eval):
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
fig.savefig(out)
print(f"wrote {out}")
