#!/usr/bin/env bash
# Encode benchmark: qzhou (CPU/flex and wgpu) vs PyTorch transformers, same machine, same run.
# Qwen2.5-0.5B-shaped model with random fp32 weights, batch 8 x 128 tokens, bidirectional + mean.
#
# usage: benches/encode.sh [PYTHON] [ITERS]
#   PYTHON: an interpreter with torch + transformers (default: python3)
# Prints a table with tokens/s, peak RSS and the qzhou/torch ratio. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
ITERS=${2:-5}
MODEL=${BENCH_MODEL_DIR:-/tmp/qzhou-bench-qwen2.5-0.5b}
[ -f "$MODEL/model.safetensors" ] || "$PY" benches/make_bench_model.py "$MODEL"
cargo build --release -p qzhou-cli --example bench_encode
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bench_encode
OUT=$(mktemp)
"$PY" benches/torch_encode.py "$MODEL" 8 128 "$ITERS" | tee -a "$OUT"
"$BIN" "$MODEL" cpu 8 128 "$ITERS" | tee -a "$OUT"
if [ "${SKIP_WGPU:-0}" != 1 ]; then "$BIN" "$MODEL" wgpu 8 128 "$ITERS" | tee -a "$OUT" || echo "wgpu run failed" >&2; fi
"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
base = next(r for r in rows if r["impl"].startswith("torch"))
print(f"\n{'implementation':34} {'tokens/s':>10} {'vs torch':>9} {'load s':>7} {'peak RSS GiB':>13} {'load peak/weights':>18}")
for r in rows:
    w = r.get("weights_bytes")
    lp = f"{r['load_peak_rss'] / w:.2f}x" if w else "-"
    print(f"{r['impl']:34} {r['tokens_per_s']:>10.1f} {r['tokens_per_s'] / base['tokens_per_s']:>8.2f}x {r['load_s']:>7.1f} {r['peak_rss'] / 2**30:>13.2f} {lp:>18}")
PYEOF
