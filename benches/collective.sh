#!/usr/bin/env bash
# Data-parallel training on burn-collective, the cost of communication (issue 18 benchmark, not a
# test): the same run — same model, global batch, GradCache chunk and data order — as 1 peer, and
# as 2 nodes × 1 peer (two `qzhou train` processes over 127.0.0.1). Prints median step times
# (first step left out) and their ratio. On one CPU machine the two nodes share its cores, so
# the ratio is communication *plus* contention; on two machines or GPUs it is communication only.
#
#   cargo build --release -p qzhou-cli
#   MODEL=/path/to/qwen2-folder benches/collective.sh [WORKDIR]
#   knobs: MODEL (default: the tiny fixture), STEPS (8), BATCH (16 pairs), CHUNK (16 texts), LEN (64)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${QZHOU_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/qzhou}")
model=$(realpath "${MODEL:-$root/tests/fixtures/tiny-qwen2}")
work=$(mkdir -p "${1:-$(mktemp -d)}" && cd "${1:-.}" && pwd)
STEPS=${STEPS:-8} BATCH=${BATCH:-16} CHUNK=${CHUNK:-16} LEN=${LEN:-64}

[ -f "$work/pairs.jsonl" ] || "$bin" data convert --kind sts-b "$root/../shared/data/sts-b-en/stsbenchmark.tsv.gz" \
  --split train -o "$work/pairs.jsonl" >&2

setup() {  # setup NAME: a fresh run folder
  rm -rf "$work/$1" && mkdir -p "$work/$1"
  cat > "$work/$1/run.toml" <<TOML
[model]
path = "$model"
attention = "bidirectional"
pooling = "mean"
[train]
steps = $STEPS
lr = 2e-5
warmup_steps = 0
query_max_len = $LEN
passage_max_len = $LEN
grad_cache_chunk = $CHUNK
log_every = 1
[checkpoint]
dir = "run"
every = $STEPS
keep_last = 1
[[dataset]]
name = "sts-b"
path = "$work/pairs.jsonl"
batch_size = $BATCH
TOML
}

setup one
"$bin" train --config "$work/one/run.toml" --quiet --no-save 2> "$work/one.log"
setup nodes
port=$((29000 + RANDOM % 1000))
"$bin" train --config "$work/nodes/run.toml" --quiet --no-save --nodes 2 --node-rank 1 \
  --coordinator "127.0.0.1:$port" 2> "$work/node1.log" &
"$bin" train --config "$work/nodes/run.toml" --quiet --no-save --nodes 2 --node-rank 0 \
  --coordinator "127.0.0.1:$port" 2> "$work/node0.log"
wait

python3 - "$work" "$model" <<'PY'
import json, statistics, sys
work, model = sys.argv[1:]
def run(name):
    rows = [json.loads(l) for l in open(f"{work}/{name}/run/metrics.jsonl") if '"loss"' in l]
    steady = [r["step_s"] for r in rows if r["phase"] == "steady"]
    return statistics.median(steady), [r["loss"] for r in rows]
(one, l1), (two, l2) = run("one"), run("nodes")
print(f"model {model}; losses agree to {max(abs(a - b) for a, b in zip(l1, l2)):.2e}\n")
print("| run | median step s | vs 1 peer |")
print("|---|---|---|")
print(f"| 1 peer | {one:.3f} | 1.00 |")
print(f"| 2 nodes × 1 peer (127.0.0.1) | {two:.3f} | {two / one:.2f}× the time |")
PY
