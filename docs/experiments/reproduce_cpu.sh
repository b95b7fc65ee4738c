#!/usr/bin/env bash
# Every `gsg reproduce` experiment at cpu scale, as run for docs/results/*_cpu/ on a 2-core machine.
# Two reproductions at a time, one thread each (a width-1/4 ResNet on 28-px images does not use 2 threads
# well), sharing one runs directory: runs common to several experiments (Table 1's four algorithms are also
# in Fig. 4, the t-SNE panels, Table 4 and the DirectPred table) are trained once, and a run that the other
# stream is training is put off rather than waited for (a lock in each run directory).
# Usage: bash docs/experiments/reproduce_cpu.sh [RESULTS_ROOT] [RUNS_DIR]
set -uo pipefail
OUT=${1:-docs/results}
RUNS=${2:-runs/reproduce-cpu}
GSG=${GSG:-gsg}
mkdir -p "$RUNS"
stream() {
  local e
  for e in "$@"; do
    OMP_NUM_THREADS=1 $GSG reproduce "$e" --scale cpu --out "$OUT/${e}_cpu" --runs "$RUNS" || return 1
  done
}
stream table1 tsne directpred fig4 > "$RUNS/stream_a.log" 2>&1 &
stream fig5 table4 fig4 > "$RUNS/stream_b.log" 2>&1 &
wait
