#!/usr/bin/env bash
# CUDA checks for one NVIDIA GPU (an H200 loan): reference parity, training throughput against
# sentence-transformers, encode throughput against PyTorch — one bounded run, one JSON summary.
#
#   scripts/gpu-check.sh build [BIN_DIR]    # here (cargo, registries): the stripped binaries
#   scripts/gpu-check.sh [BIN_DIR]          # there (no network, no cargo); BIN_DIR default gpu-bin
#
# Results: $OUT/gpu-summary.json (+ gpu-summary.md, the printed table), $OUT/logs.tar.gz
# (logs/<stage>.log, logs/<stage>/<command>.log and .cubecl.log, results/<stage>/*.json), and
# $OUT/console.log. $OUT defaults to ./gpu-check-out. The device tool returns at most 8 files
# from $OUT, so logs are packed into the one archive after every stage; the summary is rewritten
# after every stage too, so a run killed from outside still leaves its numbers.
#
# Stages, most valuable first (GPU_CHECK_STAGES="a,b,..." selects; `env` always runs):
#   prep            torch: a random Qwen2.5-0.5B-shaped model (f32 safetensors) and its fp32
#                   transformers reference embeddings (eager, padding-only bidirectional mask,
#                   mean + L2) for 16 real sentences, plus torch's own bf16 drift
#   parity          fusion off: f32 and bf16 `qzhou embed` vs tests/fixtures/expected.json
#                   (tiny-qwen2/3 x bidirectional+mean / causal+last-token; f32: cos >= 0.99999,
#                   max|d| <= 1e-4, alone-vs-batch <= 1e-5; bf16: cos >= 0.999) and vs the
#                   0.5B reference (f32 max|d| <= 1e-4, bf16 cos >= 0.999)
#   train-smoke     tiny-qwen2, 2 steps, --dtype bf16 (mixed precision)
#   train-mixed     0.5B shape, full fine-tune, --dtype bf16 (bf16 compute, f32 master + Adam)
#   st-baseline     sentence-transformers MNRL, same model/batch, bf16 autocast over f32 weights
#   plan            `qzhou train --plan` for the 0.5B and 7B shapes (skipped if the flag is absent)
#   parity-fusion   the parity stage with --fusion on
#   bench-0.5b      encode tokens/s, 32 x 512, qzhou (fusion off/on) vs torch sdpa, f32 and bf16
#   train-lora      0.5B, [lora] rank 16, --dtype bf16
#   train-pure-bf16 0.5B, full, --dtype bf16 --pure-bf16
#   bench-7b        7B shape, random bf16 weights (built by torch on the GPU), 32 x 512, bf16
#   optional (only when named in GPU_CHECK_STAGES): st-lora (PEFT LoRA baseline),
#                   train-mixed-fusion (train-mixed with --fusion on)
# Every stage runs under `timeout --kill-after` (GPU_CHECK_TIMEOUT_<STAGE>, e.g.
# GPU_CHECK_TIMEOUT_BENCH_7B=300); a global deadline (GPU_CHECK_DEADLINE, default 480 s from the
# start) skips what no longer fits. A failed or timed-out stage prints its last log lines, is
# recorded, and the next stage runs.
#
# cubecl logs: GPU_CHECK_CUBECL_LOG=auto (default) sets CUBECL_DEBUG_LOG=<file> and
# CUBECL_DEBUG_OPTION=debug for the untimed commands (parity, smoke, plan) and, for the timed
# ones (training, benchmarks), writes the same compilation + autotune logging into a
# cubecl.toml in the command's working folder instead: CUBECL_DEBUG_LOG also turns on cubecl's
# per-kernel profiling, which blocks on every launch and would distort throughput. `env` uses
# the variables everywhere, `off` logs nothing.
#
# Dry run (no GPU): GPU_CHECK_BACKEND=cpu (or wgpu) runs the same stages with tiny shapes, f32
# standing in for bf16 where the backend has none, torch on the CPU: it proves the plumbing.
#   GPU_CHECK_BACKEND=cpu GPU_CHECK_PYTHON=/venv/bin/python scripts/gpu-check.sh target/release
# Other knobs: GPU_CHECK_PYTHON (python3), GPU_CHECK_PARALLEL (parity processes at once),
# GPU_CHECK_WORK (scratch; removed at the end unless GPU_CHECK_KEEP=1), QZHOU_KERNEL_CACHE
# (default: a fresh folder per run), CUBECL_AUTOTUNE_LEVEL (default minimal), shapes and sizes:
# GPU_CHECK_TRAIN_STEPS, GPU_CHECK_TRAIN_BATCH, GPU_CHECK_BENCH_ITERS, GPU_CHECK_BENCH7_ITERS.
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2

# ---------------------------------------------------------------------------------------------
# `build`: run where cargo and the registries are. Writes BIN_DIR/{qzhou,bench_encode} (stripped;
# xz-compressed when GPU_CHECK_COMPRESS=1, the default, since the carried tree is capped at
# 64 MiB) and BIN_DIR/BUILD_INFO.json (commit, dirty, features, sizes).
if [ "${1:-}" = build ]; then
  set -e
  dir=${2:-gpu-bin}
  target=${CARGO_TARGET_DIR:-target}
  features=${GPU_CHECK_FEATURES:-cuda}
  cargo build --release -p qzhou-cli --no-default-features --features "$features" --bin qzhou --example bench_encode
  mkdir -p "$dir"
  rm -f "$dir"/qzhou "$dir"/qzhou.xz "$dir"/bench_encode "$dir"/bench_encode.xz
  for b in "$target/release/qzhou" "$target/release/examples/bench_encode"; do
    n=$(basename "$b")
    cp "$b" "$dir/$n"
    strip "$dir/$n" || true
    if [ "${GPU_CHECK_COMPRESS:-1}" = 1 ]; then xz -T0 -9 -f "$dir/$n"; fi
  done
  commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  dirty=false; [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=true
  cat > "$dir/BUILD_INFO.json" <<EOF
{"git": {"commit": "$commit", "dirty": $dirty, "source": "scripts/gpu-check.sh build"},
 "features": "$features", "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "rustc": "$(rustc --version)",
 "files": {$(for f in "$dir"/qzhou* "$dir"/bench_encode*; do printf '"%s": %s,' "$(basename "$f")" "$(stat -c %s "$f")"; done | sed 's/,$//')}}
EOF
  ls -la "$dir"
  echo "carry $dir (ignored by git, e.g. via .git/info/exclude) and run: scripts/gpu-check.sh $dir"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Configuration (exported: each stage runs as `bash $SELF __stage NAME` under its own timeout).
if [ "${1:-}" != __stage ]; then
  export GC_T0; GC_T0=$(date +%s)
  export BIN_DIR=${1:-gpu-bin}
  case $BIN_DIR in /*) ;; *) BIN_DIR="$ROOT/$BIN_DIR" ;; esac
  export BACKEND=${GPU_CHECK_BACKEND:-cuda}
  export DEADLINE=${GPU_CHECK_DEADLINE:-480}
  export OUT=${OUT:-$ROOT/gpu-check-out}
  mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
  export WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
  mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
  export LOGS=$WORK/logs STAGES=$WORK/stages
  export PY=${GPU_CHECK_PYTHON:-python3}
  export CUBECL_LOG=${GPU_CHECK_CUBECL_LOG:-auto}
  export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
  export QZHOU_KERNEL_CACHE=${QZHOU_KERNEL_CACHE:-$WORK/kernel-cache}
  export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 RUST_BACKTRACE=1
  if [ "$BACKEND" = cuda ]; then
    export DRY=0 TORCH_DEVICE=cuda PAR=${GPU_CHECK_PARALLEL:-8}
    export M05_SHAPE=0.5b M7_SHAPE=7b
    export TRAIN_STEPS=${GPU_CHECK_TRAIN_STEPS:-20} TRAIN_BATCH=${GPU_CHECK_TRAIN_BATCH:-32} QLEN=256 PLEN=512
    export SMOKE_STEPS=2 SMOKE_BATCH=4
    export BENCH_BATCH=32 BENCH_SEQ=512 BENCH_ITERS=${GPU_CHECK_BENCH_ITERS:-10} BENCH7_ITERS=${GPU_CHECK_BENCH7_ITERS:-3}
  else
    export DRY=1 TORCH_DEVICE=cpu PAR=${GPU_CHECK_PARALLEL:-2}
    export M05_SHAPE=tiny M7_SHAPE=small
    export TRAIN_STEPS=${GPU_CHECK_TRAIN_STEPS:-3} TRAIN_BATCH=${GPU_CHECK_TRAIN_BATCH:-4} QLEN=64 PLEN=128
    export SMOKE_STEPS=2 SMOKE_BATCH=4
    export BENCH_BATCH=2 BENCH_SEQ=32 BENCH_ITERS=${GPU_CHECK_BENCH_ITERS:-2} BENCH7_ITERS=${GPU_CHECK_BENCH7_ITERS:-2}
  fi
  # libnvrtc / libcuda for cudarc's dynamic loading: the CUDA toolkit, or pip's nvidia wheels
  # (nvidia/cu13/lib/libnvrtc.so.13, nvidia/cuda_nvrtc/lib/libnvrtc.so.12, ...). cudarc also
  # tries the unversioned name first, which the wheels lack: a shim folder links it. Set for
  # the qzhou/bench_encode processes only (QZ_LD_LIBRARY_PATH), so torch keeps its own libraries.
  extra=$("$PY" -c 'import glob,os,site; print(":".join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s+"/nvidia/**/libnvrtc*.so*", recursive=True)})))' 2>/dev/null)
  shim=$WORK/cuda-shim; mkdir -p "$shim"
  for d in ${extra//:/ }; do
    for f in "$d"/libnvrtc.so.[0-9]*; do
      [ -e "$f" ] && [ ! -e "$shim/libnvrtc.so" ] && case $f in *builtins*) ;; *) ln -s "$f" "$shim/libnvrtc.so" ;; esac
    done
  done
  export QZ_LD_LIBRARY_PATH="/usr/local/cuda/lib64:${extra:+$extra:}$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

H() { "$PY" "$ROOT/scripts/gpu/gpu_check.py" "$@"; }
TORCH_SIDE=$ROOT/scripts/gpu/torch_side.py
now() { date +%s; }

ALL_STAGES="env prep parity train-smoke train-mixed st-baseline plan parity-fusion bench-0.5b train-lora st-lora train-pure-bf16 train-mixed-fusion bench-7b"
OPTIONAL_STAGES="st-lora train-mixed-fusion"
stage_timeout() {  # default seconds per stage (cuda); the dry run on 2 CPU cores needs about as long
  local v
  v="GPU_CHECK_TIMEOUT_$(echo "$1" | tr 'a-z.-' 'A-Z__')"
  if [ -n "${!v:-}" ]; then echo "${!v}"; return; fi
  case $1 in
    env) echo 60 ;; prep) echo 150 ;; parity|parity-fusion) echo 200 ;; train-smoke) echo 90 ;;
    train-mixed|train-mixed-fusion|train-lora|train-pure-bf16) echo 180 ;; st-baseline|st-lora) echo 120 ;;
    plan) echo 60 ;; bench-0.5b) echo 180 ;; bench-7b) echo 300 ;; *) echo 120 ;;
  esac
}
stage_min() {  # below this much time left the stage is not started
  case $1 in
    bench-7b) echo 150 ;; train-*|bench-*|parity*) echo 60 ;; *) echo 20 ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Helpers used inside a stage ($STAGE, $SD = its results folder, $STAGE_END = its deadline).
# sub NAME TIMEOUT LOGMODE CMD...: one command under its own timeout (clamped to the stage's),
# stdout+stderr to $LOGS/$STAGE/NAME.log, cubecl's log to NAME.cubecl.log (LOGMODE: env = the
# CUBECL_DEBUG_* variables, timed = a cubecl.toml without per-kernel profiling, none). The exit
# code goes to $SD/NAME.rc; a failure prints the last 30 lines of both logs.
sub() {
  local name=$1 t=$2 mode=$3; shift 3
  local log=$LOGS/$STAGE/$name.log clog=$LOGS/$STAGE/$name.cubecl.log left rc t0
  left=$(( STAGE_END - $(now) ))
  [ "$left" -lt "$t" ] && t=$left
  [ "$t" -lt 1 ] && t=1
  [ "$CUBECL_LOG" = off ] && mode=none
  [ "$CUBECL_LOG" = env ] && [ "$mode" = timed ] && mode="env"
  t0=$(now)
  echo "[$name] ${*:1:3}... (timeout ${t}s, cubecl log: $mode)"
  local ld=${LD_LIBRARY_PATH:-}
  if [ "$1" = "$QZHOU" ] || [ "$1" = "$BENCH" ]; then ld=$QZ_LD_LIBRARY_PATH; fi
  case $mode in
    env)
      LD_LIBRARY_PATH=$ld CUBECL_DEBUG_LOG=$clog CUBECL_DEBUG_OPTION=debug \
        timeout --foreground -k 5 "$t" "$@" > "$log" 2>&1 < /dev/null ;;
    timed)
      local cwd=$WORK/cwd/$STAGE-$name
      mkdir -p "$cwd"
      cat > "$cwd/cubecl.toml" <<EOF
# compilation and autotune logs without cubecl's per-kernel profiling (which blocks on launches)
[compilation.logger]
file = "$clog"
level = "full"
[autotune.logger]
file = "$clog"
level = "full"
[profiling.logger]
level = "disabled"
EOF
      (cd "$cwd" && LD_LIBRARY_PATH=$ld timeout --foreground -k 5 "$t" "$@") > "$log" 2>&1 < /dev/null ;;
    *)
      LD_LIBRARY_PATH=$ld timeout --foreground -k 5 "$t" "$@" > "$log" 2>&1 < /dev/null ;;
  esac
  rc=$?
  echo "$rc" > "$SD/$name.rc"
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      echo "[$name] TIMEOUT after $(( $(now) - t0 ))s (limit ${t}s)"
    else
      echo "[$name] FAILED rc $rc after $(( $(now) - t0 ))s"
    fi
    H tail -n 30 "$log" "$clog"
  else
    echo "[$name] ok in $(( $(now) - t0 ))s"
  fi
  return "$rc"
}
# bg_job CMD...: a function or command in the background, at most $PAR at once.
bg_job() {
  while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do wait -n 2> /dev/null || true; done
  "$@" &
}
rc_of() { cat "$SD/$1.rc" 2>/dev/null || echo 255; }
skip_stage() { H skip-part --name "$STAGE" --kind "${2:-other}" --reason "$1" --out "$SD/$STAGE.json"; exit 3; }
# The bf16 the dry run cannot run: f32 stands in (embed: CPU/wgpu compute in f32 only; train:
# wgpu, and CPU in builds without CPU bf16 training). $2 = train for `qzhou train`.
no_bf16() {
  [ "$BACKEND" != cuda ] && ! { [ "${2:-}" = train ] && [ "$BACKEND" = cpu ] && [ "$FLAG_TRAIN_CPU_BF16" = 1 ]; }
}
run_dtype() { if [ "$1" = bf16 ] && no_bf16 "$@"; then echo f32; else echo "$1"; fi; }
dtype_note() {
  if [ "$1" = bf16 ] && no_bf16 "$@"; then echo "dry run: f32 stands in for bf16 (backend $BACKEND)"; fi
}
# --fusion arguments for a command that has the flag ($1: on/off; $2: whether it has it).
fusion_args() {
  local want=$1 has=$2
  if [ "$BACKEND" = cpu ]; then return; fi   # the CPU backend has no fusion (and refuses `on`)
  if [ "$has" = 1 ]; then echo "--fusion $want"; fi
}
fusion_label() {  # what the summary records
  local want=$1 has=$2
  if [ "$BACKEND" = cpu ]; then echo "n/a (cpu)"; elif [ "$has" = 1 ]; then echo "$want"; else echo "default (no --fusion flag in this binary)"; fi
}

# ---------------------------------------------------------------------------------------------
stage_env() {
  H env --backend "$BACKEND" --bin-dir "$BIN_DIR" --qzhou "$QZHOU" --bench "$BENCH" --cubecl-log "$CUBECL_LOG" \
    --out "$SD/env.json" --flags-out "$WORK/flags.sh" || return 1
  command -v nvidia-smi > /dev/null && nvidia-smi || echo "no nvidia-smi (backend $BACKEND)"
  # Inputs every later stage may use (standard library only).
  H texts "$WORK/fixture-texts.jsonl" "$WORK/sentences.jsonl" || return 1
  H model-dir "$WORK/m05-config" --shape "$M05_SHAPE" || return 1
  H model-dir "$WORK/m7b-config" --shape "$M7_SHAPE" || return 1
  H train-data "$WORK/train.jsonl" || return 1
  H seq-stats "$WORK/train.jsonl" "$WORK/m05-config/tokenizer.json" "$WORK/seq-stats.json" --qlen "$QLEN" --plen "$PLEN"
  . "$WORK/flags.sh"
  if [ "$QZHOU_RUNS" != 1 ]; then echo "qzhou at $QZHOU does not run: every qzhou stage will fail"; return 1; fi
}

stage_prep() {
  if [ "$HAS_TORCH" != 1 ]; then
    # Without torch: bench_encode's own random 0.5B model keeps the encode benchmark (qzhou side).
    if [ "$BACKEND" != cuda ] || [ "$BENCH_RUNS" != 1 ]; then skip_stage "torch not installed for $PY"; fi
    echo "torch not installed for $PY: the 0.5B model comes from bench_encode make; no reference (0.5B parity skipped)"
    sub make-model 120 none "$BENCH" make "$WORK/m05" "$ROOT/tests/fixtures/tiny-qwen2/tokenizer.json"
    H text-part --name prep/bench-encode-make --kind prep --text "$LOGS/$STAGE/make-model.log" \
      --rc "$(rc_of make-model)" --out "$SD/bench-encode-make.json"
    return "$(rc_of make-model)"
  fi
  sub make-model 120 none "$PY" "$TORCH_SIDE" make-model "$WORK/m05-config" --out "$WORK/m05" --dtype f32 --device "$TORCH_DEVICE" || return 1
  mkdir -p "$WORK/ref"
  sub reference 90 none "$PY" "$TORCH_SIDE" reference "$WORK/m05" "$WORK/sentences.jsonl" "$WORK/ref/m05.f32.jsonl" \
    --bf16-out "$WORK/ref/m05.bf16.jsonl" --device "$TORCH_DEVICE" || return 1
  grep -v "Loading weights" "$LOGS/$STAGE/reference.log" | tail -3
}

# parity FUSION: fixtures and the 0.5B model, f32 and bf16 together. One background job per
# (model, attention, dtype): its batch run (and, in f32, its each-text-alone run) in parallel,
# then its comparison, so a stage cut short by its timeout still records the jobs that finished.
parity_job() {  # KIND(fixture|m05) MODEL ATTENTION POOLING DTYPE FUSION_LABEL
  local kind=$1 model=$2 attention=$3 pooling=$4 dtype=$5 flabel=$6 rdt note key mdir texts out
  local -a common alone=()
  rdt=$(run_dtype "$dtype"); note=$(dtype_note "$dtype")
  if [ "$kind" = fixture ]; then
    mdir=$ROOT/tests/fixtures/$model texts=$WORK/fixture-texts.jsonl
  else
    mdir=$WORK/m05 texts=$WORK/sentences.jsonl
  fi
  out=$WORK/out/$STAGE/$model-$attention-$dtype
  mkdir -p "$(dirname "$out")"
  common=(embed -m "$mdir" --backend "$BACKEND" --document --dtype "$rdt" "${PARITY_FUSION_ARGS[@]}"
          --attention "$attention" --pooling "$pooling" -i "$texts")
  sub "$model-$attention-$dtype" 150 env "$QZHOU" "${common[@]}" -o "$out.jsonl" &
  if [ "$dtype" = f32 ]; then
    # Each text alone (a budget of one token forces single-text batches): batch invariance.
    sub "$model-$attention-$dtype-alone" 150 env "$QZHOU" "${common[@]}" --batch-tokens 1 -o "$out.alone.jsonl" &
    alone=(--alone "$out.alone.jsonl")
  fi
  wait
  if [ "$kind" = fixture ]; then
    key="$attention-$([ "$pooling" = mean ] && echo mean || echo lasttoken)"
    H cmp-fixture --name "$dtype/$model/$key" --got "$out.jsonl" ${note:+--note "$note"} "${alone[@]}" \
      --dtype "$dtype" --fusion "$flabel" --model "$model" --run "$key" --out "$SD/$dtype-$model-$key.json"
  else
    H cmp-ref --name "$dtype/qwen2.5-0.5b-shape/16-sentences" --got "$out.jsonl" ${note:+--note "$note"} "${alone[@]}" \
      --ref "$WORK/ref/m05.f32.jsonl" --drift "$WORK/ref/m05.bf16.jsonl" --dtype "$dtype" --fusion "$flabel" \
      --model "$M05_SHAPE" --out "$SD/$dtype-m05.json"
  fi
}
parity() {
  local fusion=$1 has=$FLAG_EMBED_FUSION flabel model run dtype
  if [ "$fusion" = on ] && { [ "$BACKEND" = cpu ] || [ "$has" != 1 ]; }; then
    skip_stage "$( [ "$BACKEND" = cpu ] && echo "--fusion on needs a GPU backend (dry run on cpu)" || echo "flag --fusion not in this binary")" parity
  fi
  read -ra PARITY_FUSION_ARGS <<< "$(fusion_args "$fusion" "$has")"
  flabel=$(fusion_label "$fusion" "$has")
  for dtype in f32 bf16; do
    if [ -f "$WORK/m05/model.safetensors" ]; then
      bg_job parity_job m05 m05 bidirectional mean "$dtype" "$flabel"
    else
      H cmp-ref --name "$dtype/qwen2.5-0.5b-shape/16-sentences" --got /nonexistent --ref "$WORK/ref/m05.f32.jsonl" \
        --dtype "$dtype" --fusion "$flabel" --model "$M05_SHAPE" --out "$SD/$dtype-m05.json"
    fi
    for model in tiny-qwen2 tiny-qwen3; do
      for run in bidirectional:mean causal:last-token; do
        bg_job parity_job fixture "$model" "${run%%:*}" "${run##*:}" "$dtype" "$flabel"
      done
    done
  done
  wait
  # The stage fails when any part failed (stage-status reads the parts).
  ! grep -l '"ok": false' "$SD"/*.json > /dev/null 2>&1
}
stage_parity() { parity off; }
stage_parity-fusion() { parity on; }

# train NAME MODEL_DIR STEPS BATCH QLEN PLEN LORA DTYPE EXTRA_FLAGS FUSION [random]
train() {
  local name=$1 model=$2 steps=$3 batch=$4 qlen=$5 plen=$6 lora=$7 dtype=$8 extra=$9 fusion=${10} init=${11:-}
  local dir=$WORK/train/$STAGE rdt flabel note
  local -a fargs
  rdt=$(run_dtype "$dtype" train)
  if [ "$fusion" = on ] && { [ "$BACKEND" = cpu ] || [ "$FLAG_TRAIN_FUSION" != 1 ]; }; then
    skip_stage "$( [ "$BACKEND" = cpu ] && echo "--fusion on needs a GPU backend (dry run on cpu)" || echo "flag --fusion not in this binary")" train
  fi
  if [ "$extra" = --pure-bf16 ]; then
    [ "$FLAG_TRAIN_PURE_BF16" = 1 ] || skip_stage "flag --pure-bf16 not in this binary" train
    [ "$rdt" = bf16 ] || extra=""   # needs --dtype bf16, which this dry run has not got
  fi
  read -ra fargs <<< "$(fusion_args "$fusion" "$FLAG_TRAIN_FUSION")"
  flabel=$(fusion_label "$fusion" "$FLAG_TRAIN_FUSION")
  note=$(dtype_note "$dtype" train)
  [ "$rdt" = bf16 ] && [ "$FLAG_TRAIN_PURE_BF16" = 1 ] && [ -z "$extra" ] && note="mixed precision (bf16 compute, f32 master weights + Adam moments)"
  [ "$rdt" = bf16 ] && [ "$FLAG_TRAIN_PURE_BF16" != 1 ] && note="this binary has no --pure-bf16 flag: --dtype bf16 may be pure bf16 (older build)"
  mkdir -p "$dir"
  H run-toml "$dir/run.toml" --model "$model" ${init:+--random-init} --data "$WORK/train.jsonl" --steps "$steps" \
    --batch "$batch" --qlen "$qlen" --plen "$plen" --lora "$lora" || return 1
  local mode=timed; [ "$STAGE" = train-smoke ] && mode="env"
  sub "$name" 170 $mode "$QZHOU" train --config "$dir/run.toml" --backend "$BACKEND" --dtype "$rdt" ${extra:+"$extra"} "${fargs[@]}" --quiet --no-save
  local rc; rc=$(rc_of "$name")
  local err=""; [ "$rc" != 0 ] && err=$(tail -c 2000 "$LOGS/$STAGE/$name.log")
  H train-metrics --name "$STAGE" --metrics "$dir/run/metrics.jsonl" --rc "$rc" --mode "$name" --dtype "$dtype$([ -n "$extra" ] && echo " $extra")" \
    --fusion "$flabel" --config "$model/config.json" --seq-stats "$WORK/seq-stats.json" --texts-per-step $(( batch * 3 )) \
    --expect-steps "$steps" ${note:+--note "$note"} ${err:+--err-tail "$err"} --out "$SD/$STAGE.json"
  [ -f "$dir/run/metrics.jsonl" ] && cp "$dir/run/metrics.jsonl" "$SD/metrics.jsonl.txt"
  # the memory plan qzhou prints before training
  grep -iE "plan|GiB" "$LOGS/$STAGE/$name.log" | head -20
  [ "$rc" = 0 ]
}
stage_train-smoke() { train smoke "$ROOT/tests/fixtures/tiny-qwen2" "$SMOKE_STEPS" "$SMOKE_BATCH" 64 64 0 bf16 "" off; }
stage_train-mixed() { train mixed "$WORK/m05-config" "$TRAIN_STEPS" "$TRAIN_BATCH" "$QLEN" "$PLEN" 0 bf16 "" off random; }
stage_train-lora() { train lora "$WORK/m05-config" "$TRAIN_STEPS" "$TRAIN_BATCH" "$QLEN" "$PLEN" 16 bf16 "" off random; }
stage_train-pure-bf16() { train pure-bf16 "$WORK/m05-config" "$TRAIN_STEPS" "$TRAIN_BATCH" "$QLEN" "$PLEN" 0 bf16 --pure-bf16 off random; }
stage_train-mixed-fusion() { QZHOU_ALLOW_FUSED_TRAINING=1 train mixed-fusion "$WORK/m05-config" "$TRAIN_STEPS" "$TRAIN_BATCH" "$QLEN" "$PLEN" 0 bf16 "" on random; }

st() {  # sentence-transformers baseline; $1: LoRA rank (0 = full)
  local lora=$1 part
  [ "$HAS_ST" = 1 ] || skip_stage "sentence-transformers not installed for $PY" train
  [ "$lora" = 0 ] || [ "$HAS_PEFT" = 1 ] || skip_stage "peft not installed for $PY" train
  part=st-mnrl-bf16-autocast; [ "$lora" = 0 ] || part=st-mnrl-lora$lora-bf16-autocast
  local model=$WORK/m05; [ -f "$model/model.safetensors" ] || model=$WORK/m05-config
  sub st 150 none "$PY" "$ROOT/scripts/gpu/st_baseline.py" "$model" "$WORK/train.jsonl" "$SD/st-result.json.txt" \
    --batch "$TRAIN_BATCH" --steps "$TRAIN_STEPS" --device "$TORCH_DEVICE" --precision autocast-bf16 \
    --qlen "$QLEN" --plen "$PLEN" --lora "$lora"
  H st-metrics --name "$part" --result "$SD/st-result.json.txt" --rc "$(rc_of st)" --config "$WORK/m05-config/config.json" \
    --seq-stats "$WORK/seq-stats.json" --texts-per-step $(( TRAIN_BATCH * 3 )) --out "$SD/$part.json"
  [ "$(rc_of st)" = 0 ]
}
stage_st-baseline() { st 0; }
stage_st-lora() { st 16; }

stage_plan() {
  [ "$FLAG_TRAIN_PLAN" = 1 ] || skip_stage "flag --plan not in this binary" plan
  local dt rc; dt=$(run_dtype bf16 train)
  local i=0
  for spec in "m05:0.5b-full:0" "m7b:7b-full:0" "m7b:7b-lora16:16"; do
    IFS=: read -r m label lora <<< "$spec"
    local dir=$WORK/plan/$label; mkdir -p "$dir"
    H run-toml "$dir/run.toml" --model "$WORK/$m-config" --random-init --data "$WORK/train.jsonl" --steps "$TRAIN_STEPS" \
      --batch "$TRAIN_BATCH" --qlen "$QLEN" --plen "$PLEN" --lora "$lora"
    sub "plan-$label" 50 env "$QZHOU" train --config "$dir/run.toml" --backend "$BACKEND" --dtype "$dt" --plan
    rc=$(rc_of "plan-$label")
    H text-part --name "plan/$label" --text "$LOGS/$STAGE/plan-$label.log" --rc "$rc" --out "$SD/plan-$label.json"
    i=$((i + 1))
  done
}

# bench_part NAME IMPL DTYPE RESULT RC CONFIG [TORCH_PART] [NOTE]
bench_part() {
  H bench-part --name "$1" --impl "$2" --dtype "$3" --result "$4" --rc "$5" --config "$6" \
    ${7:+--torch-counterpart "$7"} ${8:+--note "$8"} --out "$SD/$(echo "$1" | tr '/' '-').json"
}
# qzhou's side of an encode benchmark: bench_encode with (and, when it knows them, without) fusion.
bench_qzhou() {  # TAG MODEL_DIR DTYPE ITERS
  local tag=$1 model=$2 dtype=$3 iters=$4 variants backend label note
  note=$(dtype_note "$dtype")
  if [ "$BACKEND" = cuda ]; then
    backend=cuda; [ "$dtype" = bf16 ] && backend=cuda-bf16
  else
    backend=$BACKEND   # cpu / wgpu: f32
  fi
  variants="$backend:off"
  if grep -q fused <<< "$(cat "$WORK/bench-usage.txt" 2>/dev/null)" && [ "$BACKEND" != cpu ]; then
    variants="$variants $backend-fused:on"
  else
    H skip-part --name "$tag/qzhou-$dtype-fusion-on" --kind bench \
      --reason "$( [ "$BACKEND" = cpu ] && echo "no fusion on cpu" || echo "bench_encode has no fused backend in this binary")" \
      --out "$SD/$tag-qzhou-$dtype-fusion-on.json"
  fi
  for v in $variants; do
    local b=${v%%:*} f=${v##*:}
    sub "qzhou-$tag-$dtype-fusion-$f" 170 timed "$BENCH" "$model" "$b" "$BENCH_BATCH" "$BENCH_SEQ" "$iters"
    bench_part "$tag/qzhou-$dtype-fusion-$f" qzhou "$dtype" "$LOGS/$STAGE/qzhou-$tag-$dtype-fusion-$f.log" \
      "$(rc_of "qzhou-$tag-$dtype-fusion-$f")" "$model/config.json" "$tag/torch-$dtype" "${note:-fusion $f}"
  done
}

stage_bench-0.5b() {
  [ "$BENCH_RUNS" = 1 ] || skip_stage "bench_encode missing or not runnable" bench
  [ -f "$WORK/m05/model.safetensors" ] || skip_stage "no 0.5B model (prep failed or not run)" bench
  "$BENCH" > "$WORK/bench-usage.txt" 2>&1
  if [ "$HAS_TORCH" = 1 ]; then
    sub torch 120 none "$PY" "$TORCH_SIDE" bench "$WORK/m05" "$BENCH_BATCH" "$BENCH_SEQ" "$BENCH_ITERS" --dtypes bf16,f32 \
      --device "$TORCH_DEVICE" --out-prefix "$SD/torch-result"
    for dt in bf16 f32; do
      bench_part "0.5b/torch-$dt" torch "$dt" "$SD/torch-result.$dt.json" "$(rc_of torch)" "$WORK/m05/config.json"
    done
  fi
  for dt in bf16 f32; do bench_qzhou 0.5b "$WORK/m05" "$dt" "$BENCH_ITERS"; done
}

stage_bench-7b() {
  [ "$BENCH_RUNS" = 1 ] || skip_stage "bench_encode missing or not runnable" bench
  [ "$HAS_TORCH" = 1 ] || skip_stage "torch not installed: nothing builds the 7B weights" bench
  "$BENCH" > "$WORK/bench-usage.txt" 2>&1
  # torch builds the model once on the GPU, benchmarks it, then writes bf16 safetensors.
  sub torch-make-bench 170 none "$PY" "$TORCH_SIDE" make-model "$WORK/m7b-config" --out "$WORK/m7b" --dtype bf16 --device "$TORCH_DEVICE" \
    --bench "$BENCH_BATCH" "$BENCH_SEQ" "$BENCH7_ITERS" --bench-out "$SD/torch-result.bf16.json"
  bench_part "7b/torch-bf16" torch bf16 "$SD/torch-result.bf16.json" "$(rc_of torch-make-bench)" "$WORK/m7b-config/config.json"
  [ -f "$WORK/m7b/model.safetensors" ] || { echo "no 7B weights written"; return 1; }
  bench_qzhou 7b "$WORK/m7b" bf16 "$BENCH7_ITERS"
  rm -rf "$WORK/m7b"
}

# ---------------------------------------------------------------------------------------------
if [ "${1:-}" = __stage ]; then
  export STAGE=$2 SD=$STAGES/$2
  mkdir -p "$SD" "$LOGS/$STAGE"
  QZHOU=$WORK/bin/qzhou BENCH=$WORK/bin/bench_encode
  # What the env stage found (all "no" when it did not get that far).
  FLAG_EMBED_FUSION=0 FLAG_EVAL_FUSION=0 FLAG_TRAIN_FUSION=0 FLAG_TRAIN_PURE_BF16=0 FLAG_TRAIN_PLAN=0 FLAG_BENCH_FUSION=0
  FLAG_TRAIN_CPU_BF16=0
  QZHOU_RUNS=0 BENCH_RUNS=0 HAS_TORCH=0 HAS_ST=0 HAS_PEFT=0
  [ -f "$WORK/flags.sh" ] && . "$WORK/flags.sh"
  "stage_$STAGE"
  exit $?
fi

# ---------------------------------------------------------------------------------------------
# Main: the binaries (decompressed if carried as .xz), then the stages in order.
mkdir -p "$LOGS" "$STAGES" "$WORK/bin"
exec > >(tee -a "$OUT/console.log") 2>&1
tee_pid=$!
for n in qzhou bench_encode; do
  if [ -x "$BIN_DIR/$n" ]; then ln -sf "$BIN_DIR/$n" "$WORK/bin/$n"
  elif [ -f "$BIN_DIR/$n.xz" ]; then "$PY" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$BIN_DIR/$n.xz" "$WORK/bin/$n" && chmod +x "$WORK/bin/$n"
  fi
done
QZHOU=$WORK/bin/qzhou BENCH=$WORK/bin/bench_encode
echo "gpu-check: backend $BACKEND, binaries $BIN_DIR, work $WORK, out $OUT, deadline ${DEADLINE}s"

SELECTED=$ALL_STAGES
if [ -n "${GPU_CHECK_STAGES:-}" ]; then
  want=" env $(echo "$GPU_CHECK_STAGES" | tr ',' ' ') "
  for s in $(echo "$GPU_CHECK_STAGES" | tr ',' ' '); do
    case " $ALL_STAGES " in *" $s "*) ;; *) echo "unknown stage '$s' (known: $ALL_STAGES)"; exit 2 ;; esac
  done
else
  want=" $(for s in $ALL_STAGES; do case " $OPTIONAL_STAGES " in *" $s "*) ;; *) printf '%s ' "$s" ;; esac; done)"
fi
SELECTED=$(for s in $ALL_STAGES; do case "$want" in *" $s "*) printf '%s ' "$s" ;; esac; done)

summary() {  # $1: --partial or nothing
  local helper=$ROOT/scripts/gpu/gpu_check.py
  timeout -k 5 60 "$PY" "$helper" summary --stages "$STAGES" --order "$SELECTED" --backend "$BACKEND" \
    --wall "$(( $(now) - GC_T0 ))" --deadline "$DEADLINE" --out "$OUT/gpu-summary.json" --md "$OUT/gpu-summary.md" \
    ${1:+--partial} --quiet > "$LOGS/summary.log" 2>&1 || { echo "summary failed:"; tail -5 "$LOGS/summary.log"; }
  timeout -k 5 60 "$PY" "$helper" pack-logs --logs "$LOGS" --stages "$STAGES" --out "$OUT/logs.tar.gz" \
    || echo "packing logs failed"
}

mem_pid=""
overall=0
for s in $SELECTED; do
  sd=$STAGES/$s
  mkdir -p "$sd"
  elapsed=$(( $(now) - GC_T0 ))
  left=$(( DEADLINE - elapsed - 15 ))   # 15 s kept for the summary and the kill grace
  t=$(stage_timeout "$s")
  if [ "$s" != env ] && [ "$left" -lt "$(stage_min "$s")" ]; then
    H stage-skip "$sd" --reason "global deadline: ${left}s left of ${DEADLINE}s, stage needs >= $(stage_min "$s")s" > /dev/null
    echo "== $s: skipped (deadline: ${left}s left)"
    continue
  fi
  [ "$left" -lt "$t" ] && t=$left
  echo "== $s (timeout ${t}s, ${elapsed}s elapsed) =="
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$sd/_mem.log" 2> /dev/null &
    mem_pid=$!
  fi
  t0=$(now)
  STAGE_END=$(( t0 + t - 2 )) timeout -k 10 "$t" bash "$SELF" __stage "$s" > "$LOGS/$s.log" 2>&1 < /dev/null
  rc=$?
  wall=$(( $(now) - t0 ))
  if [ -n "$mem_pid" ]; then kill -9 "$mem_pid" 2> /dev/null; wait "$mem_pid" 2> /dev/null; mem_pid=""; fi
  [ "$s" = env ] && [ -f "$WORK/flags.sh" ] && . "$WORK/flags.sh"
  status_json=$(timeout -k 5 60 "$PY" "$ROOT/scripts/gpu/gpu_check.py" stage-status "$sd" --rc "$rc" --wall "$wall" \
    --timeout "$t" --mem-log "$sd/_mem.log")
  status=$("$PY" -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["status"] + (": " + s["reason"] if s["reason"] else ""))' "$status_json" 2>/dev/null || echo "unknown")
  # The stage's own output is short (one line per check); print it, and on a failure the tails.
  grep -v "Loading weights" "$LOGS/$s.log" | tail -n 60 | sed 's/^/  /'
  case $status in
    timeout*)
      overall=1
      echo "  -- $s timed out; the logs written last:"
      # shellcheck disable=SC2046
      H tail -n 30 $(find "$LOGS/$s" -type f -size +0 -printf '%T@ %p\n' 2> /dev/null | sort -rn | head -3 | cut -d' ' -f2-) ;;
    fail*) overall=1 ;;
  esac
  echo "== $s: $status (${wall}s)"
  summary --partial
done

summary
cat "$OUT/gpu-summary.md"
echo "summary: $OUT/gpu-summary.json; logs: $OUT/logs.tar.gz"
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || rm -rf "$WORK"
exec > /dev/null 2>&1
wait "$tee_pid" 2> /dev/null
exit $overall
