#!/usr/bin/env bash
# The paper's experiments and the four-crop control at the new cpu scale (docs/results/cpu_scale.md): the four-crop
# control first, as the issue asks (seed-major, SimSiam before BYOL); then Zhang et al.'s decomposition and Table 4
# (each the last compute its own issue waits on, and the decomposition trains Fig. 5's runs too), then the rest of
# the paper's experiments. Every run is resumable and shared through one runs directory; rerunning this script
# continues where it stopped.
#
# Two lanes of one thread each (the faster layout on 2 cores) walk the same list of experiments. With --no-wait a
# lane that finds every run left in an experiment taken by the other lane goes on to the next experiment instead of
# idling, and the lane that finishes an experiment's last run writes its page. After each experiment a lane copies
# the finished runs' metrics and commands into docs/results/runs/cpu2/ and rewrites docs/results/progress.md:
# commit those as they come (never the checkpoints under runs/). SIGTERM to a lane's process group checkpoints
# its run mid-epoch; the next start resumes it exactly. On a CPU without native bf16 (no AVX-512 BF16) the lanes
# train only the runs the cpu scale trains in fp32 (Table 4's SimCLR and MoCo v2 rows; docs/results/cpu_scale.md).
# DEADLINE=WHEN (e.g. 16:20 or +150; gsg reproduce --deadline): on a machine lent for a fixed time, start no run that
# the cost model says would end after it (a run cut short there is lost with the machine); read once, so every lane
# and the last pass share one time.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=runs/reproduce-cpu2
EXPERIMENTS=(crops decomposition table4 fig5 table1 fig4 tsne directpred)
mkdir -p "$RUNS"
until=()
if [ -n "${DEADLINE:-}" ]; then
  until=(--deadline "$(python -c 'import sys; from gsg.reproduce.deadline import parse_deadline
print(parse_deadline(sys.argv[1]).isoformat())' "$DEADLINE")")
  echo "starting no run that would end after ${until[1]}"
fi
# On a fresh machine the runs directory is empty: restore the finished runs from their committed metrics first, so
# that only what is left is trained (idempotent; gsg.reproduce.restore).
python docs/experiments/restore.py --runs "$RUNS" --docs docs/results/runs/cpu2 \
  --pages 'docs/results/*_cpu2/results.json' crops=3 decomposition table4 fig5 table1=3 fig4 tsne directpred
progress() {
  flock "$RUNS/.progress.lock" python docs/experiments/progress.py --runs "$RUNS" --docs docs/results/runs/cpu2 \
    --table docs/results/progress.md crops=3 decomposition table4 fig5 table1=3 fig4 tsne directpred
}
# bf16 autocast is fast only with AVX-512 BF16 (oneDNN's native kernels); elsewhere a bf16 step takes ~13x an fp32
# one (docs/results/cpu_scale.md), so such a machine trains only the runs the scale trains in fp32.
ONLY_FP32=0
python -c 'import sys; from gsg.bench.cpuscale import bf16_support; sys.exit(0 if bf16_support()["onednn_bf16"] else 1)' \
  || { ONLY_FP32=1; echo "no native bf16 on this CPU: training only the fp32 runs"; }
fp32_only() {  # --only NAME for each fp32 run of experiment $1 at seeds $2 (nothing: the experiment has none)
  python - "$1" "$2" <<'PY'
import sys
from pathlib import Path
from gsg.reproduce import get_experiment, plan_runs
plans = plan_runs(get_experiment(sys.argv[1], "cpu"), int(sys.argv[2]), Path("unused"))
print(" ".join(f"--only {p.key}" for p in plans if p.config.run.amp == "off"))
PY
}
lane() {
  for exp in "${EXPERIMENTS[@]}"; do
    seeds=1
    case "$exp" in crops|table1) seeds=3 ;; esac
    only=()
    if [ "$ONLY_FP32" = 1 ]; then
      read -r -a only <<< "$(fp32_only "$exp" "$seeds")"
      [ "${#only[@]}" -gt 0 ] || continue
    fi
    gsg reproduce "$exp" --scale cpu --seeds "$seeds" --runs "$RUNS" --out "docs/results/${exp}_cpu2" --jobs 1 \
      --no-wait "${only[@]}" "${until[@]}"
    progress
  done
}
export OMP_NUM_THREADS=1
lane > "$RUNS/lane1.log" 2>&1 &
sleep 15  # the second lane then takes the next run, not the first one's
lane > "$RUNS/lane2.log" 2>&1 &
wait
# Each experiment's page was written by the lane that finished its last run; a last pass writes any page whose
# runs were all finished elsewhere (nothing left to train, so it only reports).
# Without native bf16 that pass only reports (it would otherwise train the bf16 runs left).
last=()
[ "$ONLY_FP32" = 1 ] && last=(--report-only)
for exp in "${EXPERIMENTS[@]}"; do
  seeds=1
  case "$exp" in crops|table1) seeds=3 ;; esac
  gsg reproduce "$exp" --scale cpu --seeds "$seeds" --runs "$RUNS" --out "docs/results/${exp}_cpu2" --jobs 1 \
    "${last[@]}" "${until[@]}"
done
progress
