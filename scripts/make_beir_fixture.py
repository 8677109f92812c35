#!/usr/bin/env python3
"""Generate tests/fixtures/beir-mini: a BEIR-layout retrieval set in the three file formats
`qzhou eval` reads, built so its scores follow from arithmetic alone.

The corpus is 40 distinct STS-B English test sentences; 12 queries are copies of 12 of them and
each judges its own sentence relevant (1) plus one other judged non-relevant (0). Half the
documents carry their first three words as `title` (mteb embeds title + " " + text, so the join
must give the sentence back). Any encoder then scores every query's own document at cosine 1,
so nDCG@10 = MRR@10 = Recall@1 = 1 exactly.

- corpus.parquet (snappy), queries.parquet (zstd): as MTEB datasets on the Hub ship;
- corpus.jsonl, queries.jsonl: the same records as JSON lines;
- qrels.tsv: query-id, corpus-id, score with a header;
- top_ranked.jsonl: each query's four reranking candidates (MTEB v2 reranking layout).

Needs pyarrow (developer machine). Usage: python scripts/make_beir_fixture.py
"""

import csv
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "tests", "fixtures", "beir-mini")
os.makedirs(out, exist_ok=True)

sentences = []
with gzip.open(os.path.join(root, "..", "shared", "data", "sts-b-en", "stsbenchmark.tsv.gz"), "rt") as f:
    for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
        s = row["sentence1"].strip()
        if row["split"] == "test" and s not in sentences and len(s.split()) > 4:
            sentences.append(s)
        if len(sentences) == 40:
            break

corpus = []
for i, s in enumerate(sentences):
    words = s.split(" ")
    title, text = (" ".join(words[:3]), " ".join(words[3:])) if i % 2 else ("", s)
    corpus.append({"_id": f"doc{i:02d}", "title": title, "text": text})
queries = [{"_id": f"q{j}", "text": sentences[3 * j]} for j in range(12)]
qrels = [(f"q{j}", f"doc{3 * j:02d}", 1) for j in range(12)] + \
        [(f"q{j}", f"doc{3 * j + 1:02d}", 0) for j in range(12)]

pq.write_table(pa.Table.from_pylist(corpus), os.path.join(out, "corpus.parquet"), compression="snappy")
pq.write_table(pa.Table.from_pylist(queries), os.path.join(out, "queries.parquet"), compression="zstd")
for name, records in [("corpus.jsonl", corpus), ("queries.jsonl", queries)]:
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
# Reranking (MTEB v2 layout): each query's candidates, its relevant document not listed first.
with open(os.path.join(out, "top_ranked.jsonl"), "w") as f:
    for j in range(12):
        ids = [f"doc{3 * j + 1:02d}", f"doc{3 * j:02d}", f"doc{3 * j + 2:02d}", f"doc{(3 * j + 5) % 40:02d}"]
        f.write(json.dumps({"query-id": f"q{j}", "corpus-ids": ids}) + "\n")
with open(os.path.join(out, "qrels.tsv"), "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, d, s in qrels:
        f.write(f"{q}\t{d}\t{s}\n")
print(f"wrote {len(corpus)} documents, {len(queries)} queries, {len(qrels)} judgments to {out}")
