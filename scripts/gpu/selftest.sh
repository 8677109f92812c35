#!/usr/bin/env bash
# Proves scripts/gpu-check.sh's plumbing without a GPU: dry runs (GPU_CHECK_BACKEND=cpu) against
# scripts/gpu/fake_qzhou.py standing in for the binaries, then (when BIN_DIR is given) against a
# real CPU build. Checks the statuses each scenario must produce in gpu-summary.json.
#
#   scripts/gpu/selftest.sh PYTHON [BIN_DIR]
# PYTHON: an interpreter with torch, transformers, sentence-transformers, tokenizers, safetensors
# (and peft) — CPU wheels are enough. Takes a few minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
PY=${1:?usage: selftest.sh PYTHON [BIN_DIR]}
REAL_BIN=${2:-}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fake=$T/fake-bin
mkdir -p "$fake"
for b in qzhou bench_encode; do
  printf '#!/usr/bin/env bash\nexec %q %q %s "$@"\n' "$PY" "$PWD/scripts/gpu/fake_qzhou.py" "$b" > "$fake/$b"
  chmod +x "$fake/$b"
done
fails=0
# expect OUT_DIR 'stage=status ...': compare against gpu-summary.json
expect() {
  local out=$1; shift
  "$PY" - "$out/gpu-summary.json" "$@" <<'EOF' || fails=$((fails + 1))
import json, sys
s = json.load(open(sys.argv[1]))
bad = []
for want in sys.argv[2:]:
    stage, status = want.split("=")
    got = s["stages"].get(stage, {}).get("status")
    if got != status:
        bad.append(f"{stage}: want {status}, got {got} ({s['stages'].get(stage, {}).get('reason')})")
print(("FAIL " if bad else "ok   ") + sys.argv[1] + ("\n  " + "\n  ".join(bad) if bad else ""))
sys.exit(1 if bad else 0)
EOF
}
run() {  # NAME ENV... -- ARGS
  local name=$1; shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  echo "=== scenario $name"
  local t0=$SECONDS
  # 2 CPU cores: parity's 14 embed processes need far longer than on the GPU machine.
  env OUT="$T/$name" GPU_CHECK_BACKEND=cpu GPU_CHECK_PYTHON="$PY" GPU_CHECK_DEADLINE=1800 GPU_CHECK_TIMEOUT_PARITY=600 \
    "${envs[@]}" scripts/gpu-check.sh "$@" > "$T/$name.console" 2>&1
  echo "    rc $? in $((SECONDS - t0)) s; $(ls "$T/$name" | tr '\n' ' ')"
}

# 1. Everything present (the fake has every new flag): all stages ok; fusion on skipped on cpu.
run all-flags -- "$fake"
expect "$T/all-flags" env=ok prep=ok parity=ok train-smoke=ok train-mixed=ok st-baseline=ok plan=ok \
  parity-fusion=skipped bench-0.5b=ok train-lora=ok train-pure-bf16=ok bench-7b=ok
"$PY" - "$T/all-flags/gpu-summary.json" <<'EOF' || fails=$((fails + 1))
import json, sys
s = json.load(open(sys.argv[1]))
k = s["key"]
assert s["parts"]["train-mixed"]["train-mixed"]["phase_split"] == "phase field", "phase field not used"
assert k["bench/0.5b/qzhou-bf16-fusion-off"]["vs_torch"], "no qzhou/torch ratio"
assert k["bench/7b/qzhou-bf16-fusion-off"]["vs_torch"], "no qzhou/torch ratio (7b)"
assert k["train/train-mixed"]["vs_sentence_transformers"], "no ratio vs sentence-transformers"
assert k["train/train-smoke"]["vs_sentence_transformers"] is None, "smoke compared with the 0.5B baseline"
assert k["train/train-mixed"]["mfu"] is not None and s["parts"]["train-mixed"]["train-mixed"]["steady"]["flops_per_token"] > 0
assert all(p.get("ok") for p in s["parity"] if "skipped" not in p), "a parity part failed"
assert len([p for p in s["parity"] if "skipped" not in p]) == 10, "expected 10 parity parts"
print("ok   key numbers present (ratios, phase split, 10 parity parts)")
EOF

# 2. An older build: none of the new flags -> explicit skips, never silent.
run no-flags FAKE_QZHOU_FLAGS=none GPU_CHECK_STAGES=parity,train-mixed,plan,train-pure-bf16 -- "$fake"
expect "$T/no-flags" env=ok parity=ok train-mixed=ok plan=skipped train-pure-bf16=skipped

# 3. Wrong numbers: parity must fail (f32 and bf16 thresholds), the run goes on.
run wrong FAKE_QZHOU_WRONG=1 GPU_CHECK_STAGES=parity,train-smoke -- "$fake"
expect "$T/wrong" parity=fail train-smoke=ok

# 4. A hanging training (ignores SIGTERM): the stage times out, is killed, the next stage runs.
run hang FAKE_QZHOU_HANG=train GPU_CHECK_TIMEOUT_TRAIN_MIXED=20 GPU_CHECK_STAGES=train-mixed,plan -- "$fake"
expect "$T/hang" train-mixed=timeout plan=ok
if grep -q "timed out; the logs written last" "$T/hang.console"; then echo "ok   hang: last log lines printed"
else echo "FAIL hang: no log tail printed"; fails=$((fails + 1)); fi

# 5. The global deadline: a hanging stage is cut at the deadline, what no longer fits is
# skipped, and the whole run ends within the deadline.
t0=$SECONDS
run deadline FAKE_QZHOU_HANG=embed GPU_CHECK_DEADLINE=100 GPU_CHECK_TIMEOUT_PARITY=200 GPU_CHECK_STAGES=parity,train-smoke,bench-7b -- "$fake"
expect "$T/deadline" parity=timeout train-smoke=skipped bench-7b=skipped
if [ $((SECONDS - t0)) -le 102 ]; then echo "ok   deadline: finished in $((SECONDS - t0)) s (deadline 100 s)"
else echo "FAIL deadline: took $((SECONDS - t0)) s (deadline 100 s)"; fails=$((fails + 1)); fi

# 6. No binaries at all: qzhou stages fail fast, torch stages still run.
run no-bin GPU_CHECK_STAGES=prep,parity,st-baseline,bench-0.5b -- "$T/nothing-here"
expect "$T/no-bin" env=fail prep=ok parity=fail st-baseline=ok bench-0.5b=skipped

# 7. The real binary, when given (CPU build): every stage its flags allow.
if [ -n "$REAL_BIN" ]; then
  run real GPU_CHECK_STAGES="${REAL_STAGES:-prep,parity,train-smoke,train-mixed,st-baseline,plan,bench-0.5b,train-lora,train-pure-bf16}" -- "$REAL_BIN"
  cat "$T/real/gpu-summary.md"
  expect "$T/real" env=ok prep=ok parity=ok train-smoke=ok train-mixed=ok
fi

for f in "$T"/*.console; do
  if grep -qE "unbound variable|syntax error|command not found|Traceback" "$f"; then
    echo "FAIL $(basename "$f"): shell/python error in the console:"; grep -nE "unbound variable|syntax error|command not found|Traceback" "$f" | head -5
    fails=$((fails + 1))
  fi
done
[ -n "${KEEP:-}" ] && cp -r "$T" "$KEEP" && echo "kept in $KEEP"
echo "selftest: $fails failure(s)"
[ "$fails" = 0 ]
