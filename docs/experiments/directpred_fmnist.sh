#!/usr/bin/env bash
# DirectPred (Tian et al.) on Fashion-MNIST, CPU: BYOL with the predictor set from the correlation of its
# inputs (rho 0.3, eps 0.1, every step), with symmetric and with guided stop-gradient.
# Usage: bash docs/experiments/directpred_fmnist.sh [OUT_ROOT]
set -euo pipefail
ROOT=${1:-runs/directpred_fmnist}
common=(--dataset fashion-mnist --subset 1000 --method byol --predictor directpred --epochs 30 --batch-size 128
        --lr 0.06 --width 0.25 --seed 0
        --set optim.schedule=constant --set model.proj_dim=512 --set run.knn_train_subset=2000
        --set run.knn_test_subset=1000 --set run.progress=false --set run.checkpoint_every=10)
for sg in symmetric guided; do
  OMP_NUM_THREADS=1 gsg pretrain "${common[@]}" --stop-gradient "$sg" --out "$ROOT/$sg" > "$ROOT.$sg.log" 2>&1 &
done
wait
