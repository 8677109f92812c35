#!/usr/bin/env bash
# Training throughput of `qzhou train` against sentence-transformers' MultipleNegativesRankingLoss
# (same model shape, data, batch and lengths). Two uses:
#
#   QZHOU_BIN=gpu-bin/qzhou scripts/gpu-train-check.sh [OUT_DIR]
#       On an NVIDIA GPU (BACKEND=cuda, the default): the training stages of scripts/gpu-check.sh
#       (tiny smoke steps, Qwen2.5-0.5B shape in mixed bf16 / LoRA / pure bf16, the
#       sentence-transformers bf16-autocast baseline, `--plan`), each under a timeout, with
#       OUT_DIR/gpu-summary.json (tokens/s from steady steps, first-step time, MFU, peak memory).
#       GPU_CHECK_* variables apply (see scripts/gpu-check.sh).
#   BACKEND=cpu MODEL_CONFIG=... or HIDDEN=.. INTER=.. LAYERS=.. HEADS=.. KV_HEADS=.. scripts/gpu-train-check.sh
#       Anywhere else (benches/train-cpu.sh): the markdown table below — qzhou phases and the
#       baseline, one process each, f32.
if [ "${BACKEND:-cuda}" = cuda ]; then
  bin=${QZHOU_BIN:-target/release/qzhou}
  dir=$(cd "$(dirname "$bin")" && pwd)
  if [ "$(basename "$bin")" != qzhou ]; then
    dir=$(mktemp -d); ln -s "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" "$dir/qzhou"
  fi
  OUT=${1:-${OUT:-$(mktemp -d)}} GPU_CHECK_STAGES=${GPU_CHECK_STAGES:-train-smoke,train-mixed,st-baseline,plan,train-lora,train-pure-bf16} \
    exec "$(dirname "$0")/gpu-check.sh" "$dir"
fi
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${QZHOU_BIN:-target/release/qzhou}
OUT_DIR=${1:-$(mktemp -d)}
STEPS=${STEPS:-21}
BATCH=${BATCH:-32}
BACKEND=${BACKEND:-cuda}   # BACKEND=cpu MODEL_CONFIG=tests/fixtures/tiny-qwen2/config.json: a quick dry run
mkdir -p "$OUT_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Burn's autotuner benchmarks kernel variants the first time each shape is seen; `minimal`
# keeps the first step short (override to tune fully). CUBECL_DEBUG_OPTION=debug +
# CUBECL_DEBUG_LOG=FILE log compilation and autotuning.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
# libnvrtc / libcuda for cudarc's dynamic loading.
extra=$(python3 -c 'import glob,os,site; print(":".join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s+"/nvidia/**/libnvrtc*.so*", recursive=True)})))' 2>/dev/null)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${extra}:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT_DIR/gpu.txt" || true

# The model folder: Qwen2.5-0.5B's shape, the fixture's (real Qwen2) tokenizer.
mkdir -p "$work/model"
cp tests/fixtures/tiny-qwen2/tokenizer.json tests/fixtures/tiny-qwen2/tokenizer_config.json "$work/model/"
# Shape: Qwen2.5-0.5B unless HIDDEN/INTER/LAYERS/HEADS/KV_HEADS say otherwise.
if [ -n "${MODEL_CONFIG:-}" ]; then cp "$MODEL_CONFIG" "$work/model/config.json"; else
cat > "$work/model/config.json" <<EOF
{"architectures": ["Qwen2Model"], "model_type": "qwen2", "hidden_size": ${HIDDEN:-896},
 "intermediate_size": ${INTER:-4864}, "num_hidden_layers": ${LAYERS:-24}, "num_attention_heads": ${HEADS:-14},
 "num_key_value_heads": ${KV_HEADS:-2}, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
 "rope_theta": 1000000.0, "vocab_size": 151936, "hidden_act": "silu", "attention_bias": true,
 "tie_word_embeddings": true, "initializer_range": 0.02, "use_sliding_window": false,
 "sliding_window": null, "max_window_layers": 21, "attention_dropout": 0.0, "dtype": "float32"}
EOF
fi

# Training data: queries of 48 words, passages of 200 words (≈ 60 and 230 tokens), seeded.
python3 - "$work/train.jsonl" <<'EOF'
import json, random, sys
words = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend father "
         "power hour game line end member law car city community name president team minute idea "
         "kid body information back parent face others level office door health person art war "
         "history party result change morning reason research girl guy moment air teacher force").split()
rng = random.Random(7)
text = lambda n: " ".join(rng.choice(words) for _ in range(n))
with open(sys.argv[1], "w") as f:
    for _ in range(2048):
        f.write(json.dumps({"type": "retrieval", "query": text(48), "pos": text(200), "negs": [text(200)]}) + "\n")
EOF

run() {  # name dtype chunk steps
  local name=$1 dtype=$2 chunk=$3 steps=$4 dir="$work/$1"
  mkdir -p "$dir"
  cat > "$dir/run.toml" <<EOF
[model]
path = "$work/model"
init = "random"
[train]
steps = $steps
lr = 3e-5
warmup_steps = $(( steps > 2 ? 2 : 0 ))
query_max_len = ${QLEN:-256}
passage_max_len = ${PLEN:-1536}
grad_cache_chunk = $chunk
[checkpoint]
dir = "run"
[[dataset]]
name = "synthetic"
path = "$work/train.jsonl"
batch_size = $BATCH
negatives = 1
EOF
  (nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 2>/dev/null || true) > "$dir/mem.log" &
  local smi=$!
  local t0=$(date +%s.%N)
  timeout "${PHASE_TIMEOUT:-240}" "$BIN" train --config "$dir/run.toml" --backend "$BACKEND" --dtype "$dtype" --quiet --no-save \
    > "$dir/out.log" 2>&1
  local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  cp "$dir/out.log" "$OUT_DIR/$name.log"
  [ -f "$dir/run/metrics.jsonl" ] && cp "$dir/run/metrics.jsonl" "$OUT_DIR/$name.metrics.jsonl"
  python3 - "$name" "$rc" "$dir" "$t0" <<'EOF'
import json, statistics, sys, time
name, rc, d, t0 = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
try:
    m = [json.loads(l) for l in open(d + "/run/metrics.jsonl") if '"loss"' in l]
except FileNotFoundError:
    m = []
mem = [int(x) for x in open(d + "/mem.log").read().split() if x.strip().isdigit()]
# GPU: nvidia-smi's reading; CPU: the process's peak RSS from the metrics.
peak = max(mem) if mem else max(x.get("peak_rss_bytes") or 0 for x in m) // 2**20 if m else 0
if not m:
    print(f"| qzhou {name} | failed (rc {rc}): see {name}.log | | | | |")
    sys.exit()
first = m[0]["step_s"]
rest = m[1:] or m
step = statistics.median(x["step_s"] for x in rest)
tps = statistics.median(x["tokens_per_s"] for x in rest)
loss = f'{m[0]["loss"]:.3f} → {m[-1]["loss"]:.3f}'
print(f"| qzhou {name} | {len(m)} | {first:.2f} | {step:.3f} | {tps:,.0f} | {peak:,} | {loss} |")
EOF
}

{
echo "| run | steps | first step s | median step s | tokens/s | peak MiB (GPU, or CPU RSS) | loss first → last |"
echo "|---|---|---|---|---|---|---|"
# Smoke test first: two steps of the tiny fixture model (seconds if the backend works).
if [ "${SMOKE:-1}" = 1 ]; then
  mkdir -p "$work/smoke"
  cat > "$work/smoke/run.toml" <<EOF
[model]
path = "$PWD/tests/fixtures/tiny-qwen2"
[train]
steps = 2
warmup_steps = 0
query_max_len = 64
passage_max_len = 64
[checkpoint]
dir = "run"
[[dataset]]
name = "synthetic"
path = "$work/train.jsonl"
batch_size = 4
EOF
  default_dtypes="bf16 f32"; [ "$BACKEND" = cpu ] && default_dtypes=f32
  for dtype in ${SMOKE_DTYPES:-$default_dtypes}; do
    rm -rf "$work/smoke/run"
    t0=$(date +%s)
    if timeout "${SMOKE_TIMEOUT:-60}" "$BIN" train --config "$work/smoke/run.toml" --backend "$BACKEND" --dtype "$dtype" \
        --quiet --no-save > "$OUT_DIR/smoke-$dtype.log" 2>&1; then
      echo "| smoke: tiny model, 2 steps, $dtype | ok in $(( $(date +%s) - t0 )) s | | | | | |"
    else
      echo "| smoke: tiny model, 2 steps, $dtype | FAILED (rc $?): see smoke-$dtype.log | | | | | |"
    fi
  done
fi
# Phases: name:dtype:grad_cache_chunk:steps (each a fresh process, so its first step includes
# kernel compilation and autotuning; the table's median leaves the first step out).
if [ "$BACKEND" = cpu ]; then
  PHASES=${PHASES:-f32-plain:f32:1000000:$STEPS}; st_dtype=f32
else
  PHASES=${PHASES:-bf16-1-step:bf16:1000000:1 bf16-plain:bf16:1000000:$STEPS bf16-gradcache-chunk32:bf16:32:6 f32-plain:f32:1000000:11}
  st_dtype=bf16
fi
for phase in $PHASES; do
  IFS=: read -r name dtype chunk steps <<< "$phase"
  run "$name" "$dtype" "$chunk" "$steps"
done
if [ "${BASELINE:-1}" = 0 ]; then
  echo "| sentence-transformers MNRL | skipped (BASELINE=0) | | | | | |"
elif python3 -c 'import torch, sentence_transformers' 2>/dev/null; then
  timeout "${PHASE_TIMEOUT:-240}" python3 scripts/st_train_baseline.py "$work/model" "$work/train.jsonl" "$BATCH" "$STEPS" \
    "$BACKEND" "$st_dtype" 2> "$OUT_DIR/torch.log" || echo "| sentence-transformers MNRL | failed: see torch.log | | | | | |"
else
  echo "| sentence-transformers MNRL | not installed | | | | | |"
fi
} | tee "$OUT_DIR/table.md"
