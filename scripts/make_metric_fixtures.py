"""Reference values for qzhou's evaluation metrics (tests/fixtures/metrics.json), computed by
the implementations MTEB itself uses:

* retrieval: pytrec_eval (trec_eval) ndcg_cut / map_cut / recall / P / success per query, and
  mteb's own MRR (`mteb._evaluators.retrieval_metrics.mrr`), on random graded qrels and runs
  with many tied scores, unjudged documents, a query with no relevant document and a query
  whose run misses every relevant one;
* STS: mteb's STS task scoring (`AbsTaskSTS._calculate_scores`: scipy pearsonr / spearmanr of
  sklearn paired cosine / Manhattan / Euclidean similarities) on random embeddings with tied
  gold scores.

    pip install pytrec-eval-terrier mteb      # mteb 2.26, pytrec-eval-terrier 0.5
    python scripts/make_metric_fixtures.py
"""

import json
import random

import numpy as np
import pytrec_eval
from mteb._evaluators.retrieval_metrics import mrr
from sklearn.metrics.pairwise import (
    paired_cosine_distances,
    paired_euclidean_distances,
    paired_manhattan_distances,
)
from scipy.stats import pearsonr, spearmanr

rng = random.Random(20261127)
KS = [1, 3, 5, 10, 100, 1000]

# --- retrieval ---------------------------------------------------------------------------
docs = [f"d{i:03d}" for i in range(150)]
qrels, run = {}, {}
for q in range(40):
    qid = f"q{q:02d}"
    judged = rng.sample(docs, rng.randint(1, 12))
    qrels[qid] = {d: rng.choice([0, 0, 1, 1, 2]) for d in judged}
    retrieved = rng.sample(docs, rng.randint(5, 120))
    # Scores from a coarse grid: many ties, broken by doc id in trec_eval.
    run[qid] = {d: round(rng.choice([0.1, 0.2, 0.25, 0.5, 0.75, 0.9]) + rng.choice([0, 0, 0.01]), 4) for d in retrieved}
qrels["q00"] = {d: 0 for d in qrels["q00"]}  # no relevant document at all
run["q01"] = {d: s for d, s in run["q01"].items() if qrels["q01"].get(d, 0) <= 0} or {"d149": 0.3}

measures = {
    "ndcg_cut." + ",".join(map(str, KS)),
    "map_cut." + ",".join(map(str, KS)),
    "recall." + ",".join(map(str, KS)),
    "P." + ",".join(map(str, KS)),
    "success." + ",".join(map(str, KS)),
}
scores = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
mrrs = mrr(qrels, run, KS)
queries = sorted(scores)
expected = {
    qid: {
        "ndcg": [scores[qid][f"ndcg_cut_{k}"] for k in KS],
        "map": [scores[qid][f"map_cut_{k}"] for k in KS],
        "recall": [scores[qid][f"recall_{k}"] for k in KS],
        "precision": [scores[qid][f"P_{k}"] for k in KS],
        "hit_rate": [scores[qid][f"success_{k}"] for k in KS],
        "mrr": [mrrs[f"MRR@{k}"][list(run).index(qid)] for k in KS],
    }
    for qid in queries
}

# --- STS ---------------------------------------------------------------------------------
n, dim = 24, 16
e1 = np.array([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(n)], dtype=np.float32)
e2 = (e1 + np.array([[rng.gauss(0, 1.2) for _ in range(dim)] for _ in range(n)], dtype=np.float32)).astype(np.float32)
gold = [rng.choice([0.0, 1.0, 2.5, 2.5, 3.0, 4.0, 5.0]) for _ in range(n)]
cos = 1 - paired_cosine_distances(e1, e2)
man = -paired_manhattan_distances(e1, e2)
euc = -paired_euclidean_distances(e1, e2)
corr = lambda x: (float(pearsonr(gold, x)[0]), float(spearmanr(gold, x)[0]))
(cp, cs), (mp, ms), (ep, es) = corr(cos), corr(man), corr(euc)

# --- pair classification -------------------------------------------------------------
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from sklearn.metrics.pairwise import paired_cosine_distances as pcd

m = 40
p1 = np.array([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(m)], dtype=np.float32)
labels = np.array([rng.choice([0, 1]) for _ in range(m)], dtype=np.int64)
noise = np.array([[rng.gauss(0, 0.8 if l else 2.0) for _ in range(dim)] for l in labels], dtype=np.float32)
p2 = (p1 + noise).astype(np.float32)
p2[5] = p2[4] * 1.0  # a repeated pair: tied scores
p1[5] = p1[4]
import types

task = types.SimpleNamespace()  # the three methods use no task state
task._find_best_acc_and_threshold = lambda *a: AbsTaskPairClassification._find_best_acc_and_threshold(task, *a)
task._find_best_f1_and_threshold = lambda *a: AbsTaskPairClassification._find_best_f1_and_threshold(task, *a)
compute = lambda s, high: AbsTaskPairClassification._compute_metrics_values(task, list(s), labels, high)
pair_expected = {
    "cosine": compute(1 - pcd(p1, p2), True),
    "dot": compute([float(np.dot(a, b)) for a, b in zip(p1, p2)], True),
    "euclidean": compute(paired_euclidean_distances(p1, p2), False),
    "manhattan": compute(paired_manhattan_distances(p1, p2), False),
}

# --- summarization (mteb's SummarizationEvaluator scoring) ------------------------------
import torch
from mteb._evaluators.text.summarization_evaluator import SummarizationDistances, SummarizationEvaluator
from mteb.similarity_functions import cos_sim, dot_score

summ = []
distances = {"cosine_scores": [], "dot_scores": [], "similarity_scores": [], "human_scores": []}
for t in range(6):
    human = np.array([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(3)], dtype=np.float32)
    machine = np.array([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(8)], dtype=np.float32)
    sgold = [rng.choice([1.0, 2.0, 3.0, 3.5, 4.0, 5.0]) for _ in range(8)]
    if t == 2:
        sgold = [3.0] * 8  # constant: skipped
    summ.append({"human": human.tolist(), "machine": machine.tolist(), "gold": sgold})
    cos = [torch.max(cos_sim(torch.tensor(m), torch.tensor(human))).item() for m in machine]
    dots = [torch.max(dot_score(torch.tensor(m), torch.tensor(human))).item() for m in machine]
    if len(set(sgold)) == 1 or len(set(cos)) == 1 or len(set(dots)) == 1:
        continue
    distances["cosine_scores"].append(cos)
    distances["dot_scores"].append(dots)
    distances["similarity_scores"].append(cos)
    distances["human_scores"].append(sgold)
sm = SummarizationEvaluator._calculate_metrics(None, SummarizationDistances(**distances))
summ_expected = {k: sm[k] for k in ("cosine_spearman", "cosine_pearson", "dot_spearman", "dot_pearson")}
summ_expected["texts"] = len(distances["cosine_scores"])

# --- clustering: sklearn's v_measure_score on fixed label pairs ------------------------
from sklearn.metrics import v_measure_score

vm_cases = []
for c in range(5):
    n_items = rng.randint(20, 60)
    truth = [rng.randint(0, 4) for _ in range(n_items)]
    pred = [t if rng.random() < 0.6 else rng.randint(0, 5) for t in truth]
    vm_cases.append({"truth": truth, "pred": pred, "v_measure": float(v_measure_score(truth, pred))})

# --- classification scores: sklearn on fixed predictions (a label never predicted, a
# label only predicted) -----------------------------------------------------------------
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

cls_cases = []
for c in range(4):
    m_items = rng.randint(15, 50)
    truth = [rng.randint(0, 3) for _ in range(m_items)]
    pred = [t if rng.random() < 0.55 else rng.randint(0, 4) for t in truth]
    if c == 0:
        pred = [p if p != 2 else 0 for p in pred]  # label 2 never predicted
    exp = {"accuracy": accuracy_score(truth, pred)}
    for name, fn in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score)):
        exp[name] = float(fn(truth, pred, average="macro", zero_division=0))
        exp[name + "_weighted"] = float(fn(truth, pred, average="weighted", zero_division=0))
    cls_cases.append({"truth": truth, "pred": pred, "expected": exp})

# --- logistic regression: sklearn LogisticRegression(max_iter=100) on a fixed training set
from sklearn.linear_model import LogisticRegression

centres = np.array([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(4)])
def blob(c, count, spread):
    return [(centres[c] + np.array([rng.gauss(0, spread) for _ in range(dim)])).astype(np.float32) for _ in range(count)]
lr_train_x, lr_train_y, lr_test_x, lr_test_y = [], [], [], []
for c in range(4):
    lr_train_x += blob(c, 8, 1.0); lr_train_y += [c] * 8
    lr_test_x += blob(c, 30, 1.0); lr_test_y += [c] * 30
clf = LogisticRegression(max_iter=100).fit(np.array(lr_train_x), lr_train_y)
lr_case = {
    "train_x": [x.tolist() for x in lr_train_x], "train_y": lr_train_y,
    "test_x": [x.tolist() for x in lr_test_x], "test_y": lr_test_y,
    "predictions": clf.predict(np.array(lr_test_x)).tolist(),
}

# --- clustering protocol: mteb's own bootstrapped mini-batch k-means on overlapping blobs ---
import random as _random
from mteb.abstasks.clustering import _evaluate_clustering_bootstrapped

cl_centres = np.array([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(5)])
cl_x, cl_y = [], []
for i in range(300):
    c = i % 5
    cl_x.append((cl_centres[c] + np.array([rng.gauss(0, 1.4) for _ in range(dim)])).astype(np.float32))
    cl_y.append(c)
cl_scores, _ = _evaluate_clustering_bootstrapped(
    np.array(cl_x), [[str(y)] for y in cl_y], n_clusters=10, cluster_size=2000,
    kmean_batch_size=512, max_depth=None, rng_state=_random.Random(42), seed=42)
cl_case = {"x": [x.tolist() for x in cl_x], "y": cl_y,
           "v_measures": cl_scores["v_measure"]["Level 0"],
           "experiments": 10, "sample_size": 2000, "batch_size": 512}

json.dump(
    {
        "clustering_protocol": cl_case,
        "logistic_regression": lr_case,
        "classification": cls_cases,
        "v_measure": vm_cases,
        "summarization": {"texts": summ, "expected": summ_expected},
        "pair_classification": {
            "first": p1.tolist(), "second": p2.tolist(), "labels": labels.tolist(),
            "expected": pair_expected,
        },
        "retrieval": {"ks": KS, "qrels": qrels, "run": run, "expected": expected},
        "sts": {
            "first": e1.tolist(),
            "second": e2.tolist(),
            "gold": gold,
            "expected": {
                "cosine_pearson": cp, "cosine_spearman": cs,
                "manhattan_pearson": mp, "manhattan_spearman": ms,
                "euclidean_pearson": ep, "euclidean_spearman": es,
            },
        },
    },
    open("tests/fixtures/metrics.json", "w"),
    indent=None,
)
print(f"{len(queries)} queries, {n} STS pairs -> tests/fixtures/metrics.json")
