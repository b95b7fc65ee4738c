#!/usr/bin/env bash
# Tian et al.'s alignment observation on Fashion-MNIST, CPU: BYOL with an SGD-trained linear predictor
# (no bias); each epoch logs the eigenspace alignment of W_p with the correlation F of its inputs.
# Usage: bash docs/experiments/linear_predictor_fmnist.sh [OUT]
set -euo pipefail
OUT=${1:-runs/linear_predictor_fmnist}
OMP_NUM_THREADS=1 gsg pretrain --dataset fashion-mnist --subset 1000 --method byol --predictor linear \
  --stop-gradient symmetric --epochs 30 --batch-size 128 --lr 0.06 --width 0.25 --seed 0 \
  --set optim.schedule=constant --set model.proj_dim=512 --set run.knn_train_subset=2000 \
  --set run.knn_test_subset=1000 --set run.progress=false --set run.checkpoint_every=10 --out "$OUT" > "$OUT.log" 2>&1
