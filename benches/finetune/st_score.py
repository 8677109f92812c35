#!/usr/bin/env python3
"""STS-B test Spearman of a model folder by sentence-transformers' own pipeline (the evaluation
st_cosent.py runs), to tell evaluator differences from model differences.

usage: st_score.py MODEL_DIR [MAX_LEN]   (a `qzhou export` folder: trust_remote_code)
"""
import sys

import torch
from sentence_transformers import SentenceTransformer

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from st_cosent import stsb_test  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

model = SentenceTransformer(sys.argv[1], trust_remote_code=True, device="cpu",
                            model_kwargs={"dtype": torch.float32})
if len(sys.argv) > 2:
    model.max_seq_length = int(sys.argv[2])
a, b, gold = stsb_test()
with torch.inference_mode():
    ea = model.encode(a, batch_size=32, normalize_embeddings=True)
    eb = model.encode(b, batch_size=32, normalize_embeddings=True)
print(float(spearmanr((ea * eb).sum(1), gold).correlation))
