#!/usr/bin/env bash
# Start infinity-emb (michaelfeil/infinity) on CPU in the background for the serving benchmark,
# wait until it answers, and print its PID on stdout (stop it with `kill PID`).
#
#   MODEL=/tmp/qzhou-bench-st PORT=7997 benches/infinity_serve.sh   -> PID
#   then: POST http://127.0.0.1:$PORT/embeddings {"model": "$SERVED_NAME", "input": [...]}
#   (OpenAI-style route is /embeddings, not /v1/embeddings, unless you pass --url-prefix /v1)
#
# env: INFINITY_VENV (default /work/.venv-infinity), MODEL (a sentence-transformers folder, see
# below; default /tmp/qzhou-bench-st), PORT (default 7997), BATCH (max dynamic batch, default 64),
# SERVED_NAME (model name clients send, default qzhou-bench), LOG (default
# /tmp/infinity-$PORT.log), STARTUP_TIMEOUT seconds (default 300). Extra arguments are passed on
# to `infinity_emb v2`.
#
# MODEL must be what `qzhou export` writes: modules.json + 1_Pooling (mean) + Normalize,
# modeling_qzhou.py with config.json auto_map (bidirectional attention via trust_remote_code),
# and, because infinity-emb 0.0.78 needs sentence-transformers<4 and so transformers 4.x, a
# top-level "rope_theta" in config.json (transformers 4.x ignores the 5.x "rope_parameters" and
# would silently use rope_theta=10000).
#
# Flags: torch engine, fp32 on CPU; no torch.compile, no BetterTransformer (optimum is not
# installed; it would also swap our attention); no start-up warm-up (at --batch-size 64 it runs
# 64x512-token batches, minutes on a small CPU) -- send your own warm-up request before timing;
# no disk cache; telemetry off (the machine has no internet).
set -euo pipefail

INFINITY_VENV=${INFINITY_VENV:-/work/.venv-infinity}
MODEL=${MODEL:-/tmp/qzhou-bench-st}
PORT=${PORT:-7997}
BATCH=${BATCH:-64}
SERVED_NAME=${SERVED_NAME:-qzhou-bench}
LOG=${LOG:-/tmp/infinity-$PORT.log}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-300}

bin="$INFINITY_VENV/bin/infinity_emb"
[ -x "$bin" ] || { echo "infinity_serve: no $bin (set INFINITY_VENV)" >&2; exit 1; }
[ -f "$MODEL/modules.json" ] || { echo "infinity_serve: $MODEL has no modules.json (not a sentence-transformers folder)" >&2; exit 1; }
"$INFINITY_VENV/bin/python" - "$MODEL/config.json" <<'EOF' || exit 1
import json, sys
c = json.load(open(sys.argv[1]))
if "auto_map" not in c:
    sys.exit(f"infinity_serve: {sys.argv[1]} has no auto_map: transformers would run Qwen2 causally")
if "rope_theta" not in c and "rope_parameters" in c:
    sys.exit(f"infinity_serve: {sys.argv[1]} has rope_parameters but no rope_theta: transformers 4.x would use 10000")
EOF
if curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; then
    echo "infinity_serve: something already answers on port $PORT" >&2; exit 1
fi

DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 setsid "$bin" v2 \
    --model-id "$MODEL" --served-model-name "$SERVED_NAME" \
    --engine torch --device cpu --dtype float32 --trust-remote-code \
    --batch-size "$BATCH" --no-compile --no-bettertransformer --no-model-warmup \
    --no-vector-disk-cache --host 127.0.0.1 --port "$PORT" --log-level warning \
    "$@" >"$LOG" 2>&1 </dev/null &
pid=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "infinity_serve: infinity exited during start-up; $LOG:" >&2; tail -n 30 "$LOG" >&2; exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "infinity_serve: not answering after ${STARTUP_TIMEOUT}s; stopping it; $LOG:" >&2
        tail -n 30 "$LOG" >&2; kill "$pid" 2>/dev/null || true; exit 1
    fi
    sleep 0.5
done
echo "$pid"
