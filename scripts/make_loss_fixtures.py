"""Golden values for qzhou's training losses (tests/losses.rs): PyTorch float64, written
independently of the Rust code (explicit sums over the paper's formulas, autograd for the
gradients). Run with any Python that has torch:

    python scripts/make_loss_fixtures.py tests/fixtures/losses.json
"""
import json
import math
import sys

import torch

torch.manual_seed(20261127)
TAU = 0.02


def cos(a, b):
    return torch.dot(a, b) / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12))


def retrieval(q, docs, tau):
    # docs[i, 0] is q_i's positive, docs[i, 1:] its hard negatives.
    n, g, _ = docs.shape
    total = 0.0
    for i in range(n):
        terms = [cos(q[i], docs[j, m]) / tau for j in range(n) for m in range(g)]
        terms += [cos(q[i], q[j]) / tau for j in range(n) if j != i]
        total = total - (cos(q[i], docs[i, 0]) / tau - torch.logsumexp(torch.stack(terms), 0))
    return total / n


def cosent(a, b, y, tau):
    n = a.shape[0]
    s = [cos(a[p], b[p]) / tau for p in range(n)]
    terms = [torch.zeros((), dtype=a.dtype)]
    terms += [s[q] - s[p] for p in range(n) for q in range(n) if y[p] > y[q]]
    return torch.logsumexp(torch.stack(terms), 0)


def classification(t, pos, negs, labels, neg_labels, tau):
    n, k, _ = negs.shape
    total = 0.0
    for i in range(n):
        p = cos(t[i], pos[i]) / tau
        terms = [p]
        terms += [cos(t[i], t[j]) / tau for j in range(n) if j != i and labels[j] != labels[i]]
        terms += [cos(t[i], negs[j, m]) / tau for j in range(n) for m in range(k)
                  if neg_labels[j * k + m] != labels[i]]
        total = total - (p - torch.logsumexp(torch.stack(terms), 0))
    return total / n


def leaf(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def tolist(x):
    return x.detach().reshape(-1).tolist()


cases = []
# Embeddings with some structure so no term dominates completely: mix a shared direction in.
for name, n, k, d in [("small", 3, 2, 8), ("no-hard-negatives", 4, 0, 16)]:
    q = leaf(n, d)
    docs = torch.randn(n, 1 + k, d, dtype=torch.float64)
    docs[:, 0] += 0.15 * q.detach()  # positives loosely related to their query
    docs.requires_grad_(True)
    loss = retrieval(q, docs, TAU)
    loss.backward()
    cases.append({"loss": "retrieval", "name": name, "tau": TAU, "n": n, "k": k, "d": d,
                  "queries": tolist(q), "documents": tolist(docs), "value": loss.item(),
                  "grad_queries": tolist(q.grad), "grad_documents": tolist(docs.grad)})

for name, tau, scores in [("ties", TAU, [5.0, 3.2, 3.2, 0.0, 1.5]), ("scale-20", 0.05, [2, 1, 0, 2, 1, 0])]:
    n, d = len(scores), 12
    a, b = leaf(n, d), leaf(n, d)
    loss = cosent(a, b, scores, tau)
    loss.backward()
    cases.append({"loss": "cosent", "name": name, "tau": tau, "n": n, "d": d, "scores": scores,
                  "first": tolist(a), "second": tolist(b), "value": loss.item(),
                  "grad_first": tolist(a.grad), "grad_second": tolist(b.grad)})

n, k, d = 5, 2, 10
labels = [0, 1, 0, 2, 1]
neg_labels = [1, 2, 0, 2, 1, 1, 0, 1, 0, 2]  # includes same-label negatives, to be masked
t, pos, negs = leaf(n, d), leaf(n, d), leaf(n, k, d)
loss = classification(t, pos, negs, labels, neg_labels, TAU)
loss.backward()
cases.append({"loss": "classification", "name": "masked", "tau": TAU, "n": n, "k": k, "d": d,
              "labels": labels, "negative_labels": neg_labels,
              "anchors": tolist(t), "positives": tolist(pos), "negatives": tolist(negs),
              "value": loss.item(), "grad_anchors": tolist(t.grad),
              "grad_positives": tolist(pos.grad), "grad_negatives": tolist(negs.grad)})

assert all(math.isfinite(c["value"]) for c in cases)
with open(sys.argv[1], "w") as f:
    json.dump({"generator": "scripts/make_loss_fixtures.py", "torch": torch.__version__,
               "cases": cases}, f, indent=None)
    f.write("\n")
print("\n".join(f'{c["loss"]:15} {c["name"]:18} {c["value"]:.10f}' for c in cases))
