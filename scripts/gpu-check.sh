#!/usr/bin/env bash
# CUDA checks, for a machine with an NVIDIA GPU (no network needed). Runs the reference parity
# of the test suite on the CUDA backend — f32 (cos >= 0.99999, max|d| <= 1e-4) and bf16
# (cos >= 0.999) — plus batch invariance, then the encode benchmark, then the training check
# (scripts/gpu-train-check.sh: one bf16 training step and timed steps of a
# Qwen2.5-0.5B-shaped model, with the sentence-transformers baseline).
# GPU_CHECK_BENCH=0 / GPU_CHECK_TRAIN=0 skip the encode benchmark / the training check.
#
# Build on a machine with registries, then carry the two binaries (stripped) with the repo:
#   cargo build --release -p qzhou-cli --features cuda --bin qzhou --example bench_encode
#   mkdir -p gpu-bin && cp $T/release/qzhou $T/release/examples/bench_encode gpu-bin/
# and run:  scripts/gpu-check.sh gpu-bin
# Needs python3 (standard library only) for the comparisons.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${1:-gpu-bin}
QZHOU="$BIN_DIR/qzhou"
BENCH="$BIN_DIR/bench_encode"
WORK=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

python3 - "$WORK" <<'PY'
import json, sys
exp = json.load(open("tests/fixtures/expected.json"))
with open(sys.argv[1] + "/texts.jsonl", "w") as f:
    for i, t in enumerate(exp["texts"]):
        f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
PY

status=0
for model in tiny-qwen2 tiny-qwen3; do
  for run in bidirectional:mean causal:last-token; do
    attention=${run%%:*}; pooling=${run##*:}
    for dtype in f32 bf16; do
      out="$WORK/$model-$attention-$dtype"
      "$QZHOU" embed -m "tests/fixtures/$model" --backend cuda --dtype "$dtype" --document \
        --attention "$attention" --pooling "$pooling" -i "$WORK/texts.jsonl" -o "$out.jsonl"
      # Each text alone (budget of one token forces single-text batches): batch invariance.
      "$QZHOU" embed -m "tests/fixtures/$model" --backend cuda --dtype "$dtype" --document \
        --attention "$attention" --pooling "$pooling" --batch-tokens 1 -i "$WORK/texts.jsonl" -o "$out.alone.jsonl"
      python3 - "$out" "$model" "$attention" "$pooling" "$dtype" <<'PY' || status=1
import json, math, sys
out, model, attention, pooling, dtype = sys.argv[1:]
run = f"{attention}-{'mean' if pooling == 'mean' else 'lasttoken'}"
want = json.load(open("tests/fixtures/expected.json"))["models"][model]["embeddings"][run]
got = [json.loads(l)["embedding"] for l in open(out + ".jsonl")]
alone = [json.loads(l)["embedding"] for l in open(out + ".alone.jsonl")]
cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
worst_cos = min(cos(g, w) for g, w in zip(got, want))
worst_d = max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g, w))
inv = max(abs(x - y) for g, a in zip(got, alone) for x, y in zip(g, a))
ok = worst_cos >= 0.99999 and worst_d <= 1e-4 and inv <= 1e-5 if dtype == "f32" else worst_cos >= 0.999
print(f"cuda {dtype:4} {model} {run:20} worst cos {worst_cos:.7f}  max|d| {worst_d:.2e}  alone-vs-batch {inv:.2e}  {'OK' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
    done
  done
done

if [ "${GPU_CHECK_BENCH:-1}" = 1 ]; then
MODEL=${BENCH_MODEL_DIR:-$WORK/bench-model}
[ -f "$MODEL/model.safetensors" ] || "$BENCH" make "$MODEL" tests/fixtures/tiny-qwen2/tokenizer.json
for backend in cuda cuda-bf16; do
  for shape in "8 128" "32 512"; do
    "$BENCH" "$MODEL" $backend $shape 20
  done
done
fi
rm -rf "$WORK"
# Training: one bf16 step, timed bf16/f32 steps (plain and GradCache), PyTorch baseline.
if [ "${GPU_CHECK_TRAIN:-1}" = 1 ]; then
  QZHOU_BIN="$QZHOU" scripts/gpu-train-check.sh "${TRAIN_OUT:-$(mktemp -d)}" || status=1
fi
exit $status
