#!/usr/bin/env bash
# Every `gsg reproduce` experiment at cpu scale, as run for docs/results/*_cpu/ on a 2-core machine.
# All six share one runs directory, so the runs they have in common (Table 1's four algorithms are also in
# Fig. 4, the t-SNE panels, Table 4 and the DirectPred table) are trained once: 20 distinct runs in all.
# Each reproduction trains two runs at a time (the cpu default, --jobs 2: two 1-thread processes, which a
# width-1/4 ResNet on 28-px images uses better than one 2-thread process).
# Usage: bash docs/experiments/reproduce_cpu.sh [RESULTS_ROOT] [RUNS_DIR]
set -euo pipefail
OUT=${1:-docs/results}
RUNS=${2:-runs/reproduce-cpu}
GSG=${GSG:-gsg}
# Table 1 with 3 seeds, as the paper (the other experiments keep the cpu default of one seed: seed 0).
$GSG reproduce table1 --scale cpu --seeds 3 --out "$OUT/table1_cpu" --runs "$RUNS"
for e in tsne fig4 fig5 table4 directpred; do
  $GSG reproduce "$e" --scale cpu --out "$OUT/${e}_cpu" --runs "$RUNS"
done
