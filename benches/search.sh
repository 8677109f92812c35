#!/usr/bin/env bash
# Retrieval scoring throughput (queries/s): exact top-k by cosine over a random corpus,
# qzhou's blocked search (examples/bench_search.rs) vs PyTorch blocked matmul + topk
# (benches/search.py), same shapes, same machine. Memory is the corpus plus one block of scores.
#
#   cargo build --release -p qzhou-cli --example bench_search
#   benches/search.sh [PYTHON] [N D Q K BLOCK]     (default 1000000 1024 256 1000 16384)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
shift || true
ARGS=${*:-1000000 1024 256 1000 16384}
echo "| implementation | corpus | queries | k | seconds | queries/s |"
echo "|---|---|---|---|---|---|"
"${CARGO_TARGET_DIR:-target}/release/examples/bench_search" $ARGS
"$PY" benches/search.py $ARGS
