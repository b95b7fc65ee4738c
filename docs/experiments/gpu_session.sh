#!/usr/bin/env bash
# The one prepared device run for a session that is lent a GPU (docs/gpu.md), sized to about 9 of the
# session's 15 minutes of device time, so that one rerun still fits:
#   1. the GPU smoke test (`gsg doctor --quick`, ~3 min),
#   2. GPU epoch timings on CIFAR-shaped synthetic tensors (`gsg bench epoch`, ~1 min),
#   3. the four-crop control at the cpu scale, seed 0 of every variant, on the GPU (`gsg reproduce crops --scale cpu
#      --device cuda`, 4 runs at a time; what does not finish in its 5 minutes trains again on the next lent GPU).
# The device machine has its own torch (2.11 in 2026-11) and no network: gsg runs from src/ without an install, and
# Fashion-MNIST travels in the git-ignored folder data/. On this machine, before the call:
#   mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
# then: run(command="bash docs/experiments/gpu_session.sh", carry=["data"], timeout_s=600). Checkpoints stay on the
# device machine and are lost with it: a run that did not finish there trains again on the next one.
# Everything comes back in at most 8 files under $OUT (the device tool's limit): session.log, doctor.json,
# bench_epoch.json, and gpu_runs.tar.gz (each run's metrics.jsonl, done.json, command.txt, config.json; no checkpoints).
# Unpack it here with `tar -xzf gpu_runs.tar.gz -C runs/gpu`; numbers made there are GPU numbers: say so beside them.
# QUICK=1 DEVICE=cpu checks the plumbing on a CPU in about a minute (doctor's env step, a quick bench, a dry run).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/gpu_session}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
RUNS=${RUNS:-runs/gpu}  # the runs, the doctor's logs and the crops page, on the device machine
mkdir -p "$OUT" "$RUNS"
OUT=$(cd "$OUT" && pwd)  # absolute: the device tool's $OUT is, a default here is not
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/session.log"; }
step() {  # step SECONDS NAME COMMAND...: a time limit per step, so that one stuck step leaves time for the rest
  local limit=$1 name=$2
  shift 2
  log "$name: $*"
  timeout "$limit" "$@" >>"$OUT/session.log" 2>&1
  log "$name: exit $?"
}

log "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo no nvidia-smi)"
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  2>&1 | tee -a "$OUT/session.log"

if [ "$QUICK" = 1 ]; then
  step 120 doctor "$PY" -m gsg doctor --device "$DEVICE" --quick --only env --out "$RUNS/doctor"
  step 120 bench "$PY" -m gsg bench epoch --device "$DEVICE" --quick --out "$OUT/bench_epoch.json"
  mkdir -p "$RUNS/crops"  # a dry run prints the plan: kept as the page that comes back
  step 120 crops bash -c "\"$PY\" -m gsg reproduce crops --scale cpu --seeds 1 --device $DEVICE --jobs 4 \
    --runs \"$RUNS\" --out \"$RUNS/crops\" --set data.data_dir=data --dry-run > \"$RUNS/crops/dry_run.md\""
else
  step 240 doctor "$PY" -m gsg doctor --device "$DEVICE" --quick --out "$RUNS/doctor"
  step 90 bench "$PY" -m gsg bench epoch --device "$DEVICE" --out "$OUT/bench_epoch.json"
  step 300 crops "$PY" -m gsg reproduce crops --scale cpu --seeds 1 --device "$DEVICE" --jobs 4 --runs "$RUNS" \
    --out "$RUNS/crops" --set data.data_dir=data
fi
cp "$RUNS/doctor/doctor.json" "$OUT/" 2>/dev/null || log "no doctor.json"
(cd "$RUNS" && find . \( -name metrics.jsonl -o -name done.json -o -name command.txt -o -name config.json \
  -o -name '*.knn.*.json' -o -name '*.linear.*.json' -o -name 'results.*' -o -name '*.md' -o -name '*.png' \) \
  -print0 |
  tar --null -czf "$OUT/gpu_runs.tar.gz" -T -)
log "done: $(ls "$OUT" | tr '\n' ' ')"
