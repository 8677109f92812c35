#!/usr/bin/env bash
# Encode benchmark: qzhou (CPU/flex and wgpu) vs PyTorch transformers, same machine, same run.
# Qwen2.5-0.5B-shaped model with random fp32 weights, bidirectional + mean pooling, at three
# shapes (batch x tokens): 8 x 128, 32 x 32 (short sentences, STS-like) and 1 x 512 (one passage).
#
# usage: benches/encode.sh [PYTHON] [ITERS]
#   PYTHON: an interpreter with torch + transformers (default: python3)
#   SHAPES="8x128 32x32 1x512" (default) picks the shapes; SKIP_WGPU=1 skips the wgpu runs.
# Prints a table with tokens/s, peak RSS and the qzhou/torch ratio per shape. Not part of the
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
ITERS=${2:-5}
MODEL=${BENCH_MODEL_DIR:-/tmp/qzhou-bench-qwen2.5-0.5b}
[ -f "$MODEL/model.safetensors" ] || "$PY" benches/make_bench_model.py "$MODEL"
cargo build --release -p qzhou-cli --example bench_encode
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bench_encode
OUT=$(mktemp)
for shape in ${SHAPES:-8x128 32x32 1x512}; do
  b=${shape%x*} t=${shape#*x}
  "$PY" benches/torch_encode.py "$MODEL" "$b" "$t" "$ITERS" | tee -a "$OUT"
  "$BIN" "$MODEL" cpu "$b" "$t" "$ITERS" | tee -a "$OUT"
  if [ "${SKIP_WGPU:-0}" != 1 ]; then "$BIN" "$MODEL" wgpu "$b" "$t" "$ITERS" | tee -a "$OUT" || echo "wgpu run failed" >&2; fi
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"\n{'implementation':34} {'shape':>7} {'tokens/s':>10} {'vs torch':>9} {'load s':>7} {'peak RSS GiB':>13} {'load peak/weights':>18}")
for r in rows:
    base = next(x for x in rows if x["impl"].startswith("torch") and (x["batch"], x["seq"]) == (r["batch"], r["seq"]))
    w = r.get("weights_bytes")
    lp = f"{r['load_peak_rss'] / w:.2f}x" if w else "-"
    shape = f"{r['batch']}x{r['seq']}"
    print(f"{r['impl']:34} {shape:>7} {r['tokens_per_s']:>10.1f} {r['tokens_per_s'] / base['tokens_per_s']:>8.2f}x {r['load_s']:>7.1f} {r['peak_rss'] / 2**30:>13.2f} {lp:>18}")
PYEOF
