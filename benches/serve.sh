#!/usr/bin/env bash
# Serving benchmark: `qzhou serve` (CPU) vs infinity-emb (torch on CPU), same machine, same run,
# same model files (a Qwen2.5-0.5B-shaped model with random fp32 weights, as a
# sentence-transformers folder with bidirectional attention + mean pooling, max 512 tokens).
# A Rust load generator (examples/bench_serve.rs) sends OpenAI-style requests of one text each,
# short (~16 tokens) and long (~500 tokens), from 1, 8 and 64 concurrent clients.
#
# usage: benches/serve.sh
#   env: TORCH_PY (python with torch + transformers, to make the model; default python3),
#        INFINITY_VENV (default /work/.venv-infinity; see benches/infinity_serve.sh for its
#        versions), BENCH_MODEL_DIR, ST_DIR, SHAPES="short long", CLIENTS="1 8 64",
#        SHORT_REQUESTS="32 64 256" / LONG_REQUESTS="4 16 64" (requests per client level),
#        SERVERS="qzhou infinity", QZHOU_ARGS (extra `qzhou serve` flags).
# Prints a table: requests/s, p50 and p99 latency per server, and qzhou/infinity ratios. Not
# part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PY=${TORCH_PY:-python3}
MODEL=${BENCH_MODEL_DIR:-/tmp/qzhou-bench-qwen2.5-0.5b}
ST=${ST_DIR:-/tmp/qzhou-bench-st}
CLIENTS=${CLIENTS:-1 8 64}
read -r -a short_n <<< "${SHORT_REQUESTS:-32 64 256}"
read -r -a long_n <<< "${LONG_REQUESTS:-4 16 64}"
[ -f "$MODEL/model.safetensors" ] || "$TORCH_PY" benches/make_bench_model.py "$MODEL"
python3 benches/make_st_folder.py "$MODEL" "$ST" 512
cargo build --release -p qzhou-cli --bin qzhou --example bench_serve
TARGET=${CARGO_TARGET_DIR:-target}/release
OUT=$(mktemp)
QPORT=18080 IPORT=17997

load() { # server url shape
  local server=$1 url=$2 shape=$3 tokens=16 i=0
  local -a counts=("${short_n[@]}")
  if [ "$shape" = long ]; then tokens=500 counts=("${long_n[@]}"); fi
  "$TARGET/examples/bench_serve" "$url" qzhou-bench 1 2 "$tokens" >/dev/null # warm-up
  for c in $CLIENTS; do
    "$TARGET/examples/bench_serve" "$url" qzhou-bench "$c" "${counts[$i]}" "$tokens" \
      | sed "s/^{/{\"server\":\"$server\",\"shape\":\"$shape\",/" | tee -a "$OUT"
    i=$((i + 1))
  done
}

for server in ${SERVERS:-qzhou infinity}; do
  if [ "$server" = qzhou ]; then
    "$TARGET/qzhou" serve --model "$ST" --port "$QPORT" --served-model-name qzhou-bench ${QZHOU_ARGS:-} \
      2>/tmp/qzhou-serve-bench.log &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$QPORT/health"; do
      kill -0 "$pid" 2>/dev/null || { cat /tmp/qzhou-serve-bench.log; exit 1; }
      sleep 0.5
    done
    url="http://127.0.0.1:$QPORT/v1/embeddings"
  else
    pid=$(MODEL="$ST" PORT="$IPORT" benches/infinity_serve.sh)
    url="http://127.0.0.1:$IPORT/embeddings"
  fi
  rss0=$(ps -o rss= -p "$pid")
  for shape in ${SHAPES:-short long}; do load "$server" "$url" "$shape"; done
  echo "{\"server\":\"$server\",\"rss_kib\":$(ps -o rss= -p "$pid"),\"rss_start_kib\":$rss0}" | tee -a "$OUT"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

python3 - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
runs = {(r["server"], r["shape"], r["clients"]): r for r in rows if "shape" in r}
print(f"\n{'shape':6} {'clients':>7} | {'qzhou req/s':>11} {'p50 s':>7} {'p99 s':>7} | {'infinity req/s':>14} {'p50 s':>7} {'p99 s':>7} | {'req/s ratio':>11} {'p99 ratio':>9}")
for (server, shape, clients), q in sorted(runs.items(), key=lambda kv: (kv[0][1] != "short", kv[0][2])):
    if server != "qzhou":
        continue
    i = runs.get(("infinity", shape, clients))
    line = f"{shape:6} {clients:>7} | {q['requests_per_s']:>11.2f} {q['p50_s']:>7.3f} {q['p99_s']:>7.3f} |"
    if i:
        line += f" {i['requests_per_s']:>14.2f} {i['p50_s']:>7.3f} {i['p99_s']:>7.3f} | {q['requests_per_s'] / i['requests_per_s']:>10.2f}x {i['p99_s'] / q['p99_s']:>8.2f}x"
    errors = q["errors"] + (i["errors"] if i else 0)
    print(line + (f"  ({errors} errors)" if errors else ""))
for r in rows:
    if "rss_kib" in r:
        print(f"{r['server']}: RSS {r['rss_start_kib'] / 2**20:.2f} GiB at start, {r['rss_kib'] / 2**20:.2f} GiB at the end")
print("p99 ratio = infinity p99 / qzhou p99 (above 1: qzhou's tail is shorter)")
PYEOF
