#!/usr/bin/env bash
# The paper's experiments and the four-crop control at the new cpu scale (docs/results/cpu_scale.md): the four-crop
# control first, as the issue asks (seed-major, SimSiam before BYOL); then Zhang et al.'s decomposition and Table 4
# (each the last compute its own issue waits on, and the decomposition trains Fig. 5's runs too), then the rest of
# the paper's experiments. Every run is resumable and shared through one
# runs directory; rerunning this script continues where it stopped. After each experiment the finished runs'
# metrics and commands are copied into docs/results/runs/cpu2/ and docs/results/progress.md is rewritten:
# commit those after each one (never the checkpoints under runs/).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=runs/reproduce-cpu2
progress() {
  python docs/experiments/progress.py --runs "$RUNS" --docs docs/results/runs/cpu2 --table docs/results/progress.md \
    crops=3 decomposition table4 fig5 table1=3 fig4 tsne directpred
}
for exp in crops decomposition table4 fig5 table1 fig4 tsne directpred; do
  seeds=1
  case "$exp" in crops|table1) seeds=3 ;; esac
  gsg reproduce "$exp" --scale cpu --seeds "$seeds" --runs "$RUNS" --out "docs/results/${exp}_cpu2" --jobs 2
  progress
done
