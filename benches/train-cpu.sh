#!/usr/bin/env bash
# Training throughput on the CPU: `qzhou train` (release build, Flex backend) vs PyTorch
# sentence-transformers MultipleNegativesRankingLoss, same model shape (hidden 256, 4 layers,
# real Qwen vocabulary and tokenizer, random weights), same data, batch and lengths. Prints a
# markdown table (tokens/s = real tokens per second of one optimizer step).
#
#   cargo build --release -p qzhou-cli
#   PATH=/path/to/venv/bin:$PATH benches/train-cpu.sh        # a venv with torch + sentence-transformers
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=cpu HIDDEN=256 INTER=1024 LAYERS=4 HEADS=4 KV_HEADS=2 QLEN=256 PLEN=512 \
  STEPS=${STEPS:-6} BATCH=${BATCH:-8} \
  QZHOU_BIN=${QZHOU_BIN:-${CARGO_TARGET_DIR:-target}/release/qzhou} scripts/gpu-train-check.sh "${1:-$(mktemp -d)}"
