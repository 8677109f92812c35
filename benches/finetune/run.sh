#!/usr/bin/env bash
# Does `qzhou train` make a real model a better embedder — as much as sentence-transformers?
# (issue 16; a developer-machine experiment, not CI).
#
#   1. `qzhou import-gguf`: the real Qwen2.5-Coder-0.5B-Instruct GGUF (scripts/fetch-real-gguf.py)
#   2. `qzhou data convert`: STS-B train + SICK train as CoSENT pairs, both directions; `data stats`
#   3. the untuned model in QZhou form (bidirectional + mean): STS-B test Spearman (`qzhou eval`)
#   4. `qzhou train`: full fine-tune, CoSENT, evaluated on STS-B test every EVAL_EVERY steps
#   5. sentence-transformers (st_cosent.py): the same model, data order and recipe
#   6. `qzhou export` + `qzhou export-web` q8/q4: the fine-tuned model's packs scored on STS-B test
#
#   QZHOU_BIN=target/release/qzhou PYTHON=/path/to/venv/bin/python benches/finetune/run.sh [WORK_DIR]
#
# PYTHON needs torch, sentence-transformers, scipy. Knobs (env): STEPS BATCH LR WARMUP TAU
# MAX_LEN SEED CHUNK (GradCache chunk, texts; default 2·BATCH) SKIP_ST=1 SKIP_QZHOU=1 SKIP_PACKS=1 (repeat runs), EVAL_EVERY (0 = score only the untuned model and the
# end: one STS-B test pass of the 0.5B model takes ~8 minutes on 2 cores). Prints a markdown
# table; logs in WORK_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mkdir -p "${1:-/tmp/qzhou-finetune}" && cd "${1:-/tmp/qzhou-finetune}" && pwd)
bin=$(realpath "${QZHOU_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/qzhou}")
py=${PYTHON:-python3}
data=$root/../shared/data
STEPS=${STEPS:-80} BATCH=${BATCH:-16} LR=${LR:-2e-5} WARMUP=${WARMUP:-8} TAU=${TAU:-0.05}
MAX_LEN=${MAX_LEN:-64} EVAL_EVERY=${EVAL_EVERY:-0} SEED=${SEED:-42}
scale=$("$py" -c "print(1 / $TAU)")
log() { echo "[$(date +%T)] $*" >&2; }

# 1. the real model
if [ ! -f "$work/base/config.json" ]; then
  gguf=$(python3 "$root/scripts/fetch-real-gguf.py")
  log "import $gguf"
  "$bin" import-gguf "$gguf" --out "$work/base" | tee "$work/import.log" >&2
fi

# 2. data
if [ ! -f "$work/train.jsonl" ]; then
  "$bin" data convert --kind sts-b "$data/sts-b-en/stsbenchmark.tsv.gz" --split train -o "$work/stsb-train.jsonl" >&2
  "$bin" data convert --kind sick "$data/sick/SICK_train.txt" -o "$work/sick-train.jsonl" >&2
  cat "$work/stsb-train.jsonl" "$work/sick-train.jsonl" > "$work/train.jsonl"
  "$bin" data stats "$work/train.jsonl" --tokenizer "$work/base" | tee "$work/stats.txt" >&2
fi

# 3. untuned
form=(--attention bidirectional --pooling mean)
score() {  # score MODEL OUT_DIR FILE: STS-B test Spearman (main score) of a model into FILE
  [ -s "$3" ] && return 0
  "$bin" eval -m "$1" "${form[@]}" --manifest-dir "$here" --tasks STSBenchmark --out "$2" --cache "$2/cache" >&2
  "$py" -c "import json,glob,sys; print(json.load(open(glob.glob(sys.argv[1] + '/**/STSBenchmark.json', recursive=True)[0]))['scores']['test'][0]['main_score'])" "$2" > "$3.part"
  mv "$3.part" "$3"
}
score "$work/base" "$work/eval-untuned" "$work/untuned.score"
log "untuned: $(cat "$work/untuned.score")"

# 4. qzhou train
cat > "$work/run.toml" <<TOML
[model]
path = "$work/base"
attention = "bidirectional"
pooling = "mean"
[train]
steps = $STEPS
lr = $LR
warmup_steps = $WARMUP
decay = "linear"
optimizer = "adamw"
weight_decay = 0.0
max_grad_norm = 1.0
temperature = $TAU
seed = $SEED
query_max_len = $MAX_LEN
passage_max_len = $MAX_LEN
grad_cache_chunk = ${CHUNK:-$(( 2 * BATCH ))}
[checkpoint]
dir = "$work/qzhou-run"
every = $STEPS
keep_last = 1
$( [ "$EVAL_EVERY" -gt 0 ] && printf '[eval]\ntasks = ["%s"]\nevery = %s\n' "$here/stsb-test.toml" "$EVAL_EVERY" )
[[dataset]]
name = "sts-b+sick"
path = "$work/train.jsonl"
batch_size = $BATCH
TOML
# `qzhou train` names checkpoints step-%08d.
last=$work/qzhou-run/$(printf "step-%08d" "$STEPS")
if [ "${SKIP_QZHOU:-0}" != 1 ] && [ ! -d "$last" ]; then
  log "qzhou train ($STEPS steps)"
  /usr/bin/time -v "$bin" train --config "$work/run.toml" --quiet 2> "$work/qzhou-train.log"
fi

# 5. sentence-transformers
if [ "${SKIP_ST:-0}" != 1 ] && [ ! -f "$work/st/done" ]; then
  log "sentence-transformers ($STEPS steps)"
  /usr/bin/time -v "$py" "$here/st_cosent.py" "$work/base" "$work/train.jsonl" "$work/st" --steps "$STEPS" \
    --batch "$BATCH" --lr "$LR" --warmup "$WARMUP" --scale "$scale" --max-len "$MAX_LEN" \
    --eval-every "$( [ "$EVAL_EVERY" -gt 0 ] && echo "$EVAL_EVERY" || echo "$STEPS" )" --seed "$SEED" --initial-score "$work/untuned.score" > "$work/st.log" 2> "$work/st-time.log"
  touch "$work/st/done"
fi

# 6. the fine-tuned model as f32 folder and q8/q4 web packs
if [ -d "$last" ]; then
  [ -f "$work/tuned/config.json" ] || "$bin" export --checkpoint "$last" --out "$work/tuned" --dtype f32 >&2
  # The f32 score of the exported folder (set SCORE_F32=0 to take the last in-training evaluation:
  # the same model and evaluator, one STS-B pass less).
  if [ "${SCORE_F32:-1}" = 1 ]; then
    score "$work/tuned" "$work/eval-tuned" "$work/tuned.score"
  elif [ ! -s "$work/tuned.score" ]; then
    "$py" -c "import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if '\"eval\"' in l][-1]['eval']['tasks']['STSBenchmark'])" "$work/qzhou-run/metrics.jsonl" > "$work/tuned.score"
  fi
  [ "${SKIP_PACKS:-0}" = 1 ] || [ -f "$work/web/manifest-q4.json" ] || "$bin" export-web -m "$work/tuned" --out "$work/web" --quant q8,q4 >&2
  for q in q8 q4; do
    [ "${SKIP_PACKS:-0}" = 1 ] && continue
    score "$work/web/manifest-$q.json" "$work/eval-$q" "$work/$q.score"
  done
fi

# The table.
"$py" - "$work" "$STEPS" <<'PY'
import json, os, statistics, sys
work, steps = sys.argv[1], int(sys.argv[2])
def read(p):
    return float(open(p).read().strip()) if os.path.exists(p) else float("nan")
def curve(path):
    if not os.path.exists(path): return [], [], None
    rows = [json.loads(l) for l in open(path) if l.strip()]
    train = [r for r in rows if "loss" in r]
    evals = [(r["step"], r["eval"]["tasks"]["STSBenchmark"]) for r in rows if "eval" in r]
    return train, evals, rows
untuned = read(f"{work}/untuned.score")
print(f"untuned (bidirectional + mean): STS-B test Spearman {untuned:.4f}\n")
print("| run | steps | STS-B test Spearman | Δ vs untuned | wall s (train steps) | median step s | tokens/s | loss first → last |")
print("|---|---|---|---|---|---|---|---|")
for name, path in [("qzhou train", f"{work}/qzhou-run/metrics.jsonl"), ("sentence-transformers", f"{work}/st/metrics.jsonl")]:
    train, evals, _ = curve(path)
    if not train:
        print(f"| {name} | not run | | | | | | |"); continue
    final = evals[-1][1] if evals else float("nan")
    wall = sum(r["step_s"] for r in train)
    med = statistics.median(r["step_s"] for r in train[1:] or train)
    tps = sum(r["tokens"] for r in train) / wall
    print(f"| {name} | {train[-1]['step']} | {final:.4f} | {100*(final-untuned):+.2f} | {wall:.0f} | {med:.2f} | {tps:.0f} | {train[0]['loss']:.3f} → {train[-1]['loss']:.3f} |")
print("\nSTS-B test Spearman during training (step: qzhou / sentence-transformers):")
q = dict(curve(f"{work}/qzhou-run/metrics.jsonl")[1]); s = dict(curve(f"{work}/st/metrics.jsonl")[1])
for step in sorted(set(q) | set(s)):
    print(f"  {step:>5}: {q.get(step, float('nan')):.4f} / {s.get(step, float('nan')):.4f}")
print("\nloss every 10 steps (qzhou / sentence-transformers):")
qt = {r["step"]: r["loss"] for r in curve(f"{work}/qzhou-run/metrics.jsonl")[0]}
st = {r["step"]: r["loss"] for r in curve(f"{work}/st/metrics.jsonl")[0]}
for step in range(10, steps + 1, 10):
    w = lambda d: statistics.mean(d[k] for k in range(step - 9, step + 1) if k in d) if any(k in d for k in range(step - 9, step + 1)) else float("nan")
    print(f"  {step:>5}: {w(qt):.3f} / {w(st):.3f}")
f32, q8, q4 = (read(f"{work}/{n}.score") for n in ("tuned", "q8", "q4"))
print(f"\nfine-tuned packs, STS-B test Spearman: f32 {f32:.4f}, q8 {q8:.4f} ({100*(q8-f32):+.2f} points), q4 {q4:.4f} ({100*(q4-f32):+.2f} points)")
PY
