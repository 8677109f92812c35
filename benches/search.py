"""PyTorch baseline for benches/search.sh: exact top-k by cosine, blocked matmul + topk with a
running merge (no faiss), same shapes. Prints one markdown row."""

import sys
import time

import torch

n, d, q, k, block = map(int, sys.argv[1:6])
torch.manual_seed(0)
corpus = [torch.nn.functional.normalize(torch.randn(min(block, n - s), d), dim=1) for s in range(0, n, block)]
queries = torch.nn.functional.normalize(torch.randn(q, d), dim=1)
start = time.perf_counter()
best_s = torch.full((q, k), -float("inf"))
best_i = torch.zeros((q, k), dtype=torch.long)
for b, c in enumerate(corpus):
    s, i = (queries @ c.T).topk(min(k, c.shape[0]), dim=1)
    s2, j = torch.cat([best_s, s], 1).topk(k, dim=1)
    best_i = torch.cat([best_i, i + b * block], 1).gather(1, j)
    best_s = s2
elapsed = time.perf_counter() - start
print(f"| PyTorch {torch.__version__} (CPU, {torch.get_num_threads()} threads, blocks of {block}) | {n} × {d} | {q} | {k} | {elapsed:.2f} | {q / elapsed:.1f} |")
