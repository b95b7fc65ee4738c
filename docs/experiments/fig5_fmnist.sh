#!/usr/bin/env bash
# Fig. 5 (no predictor) on Fashion-MNIST, CPU: SimSiam with symmetric vs guided stop-gradient, and the
# projector's last BatchNorm with (affine) and without (plain) learnable scale/shift.
# Usage: bash docs/experiments/fig5_fmnist.sh [OUT_ROOT]   (about 1 hour on 2 CPU cores)
set -euo pipefail
ROOT=${1:-runs/fig5_fmnist}
common=(--dataset fashion-mnist --subset 1000 --method simsiam --predictor none --epochs 60 --batch-size 128
        --lr 0.06 --width 0.25 --seed 0
        --set optim.schedule=constant --set model.proj_dim=512 --set run.knn_train_subset=2000
        --set run.knn_test_subset=1000 --set run.progress=false --set run.checkpoint_every=10)
for bn in plain affine; do
  for sg in symmetric guided; do
    OMP_NUM_THREADS=1 gsg pretrain "${common[@]}" --stop-gradient "$sg" --set model.proj_last_bn=$bn \
      --out "$ROOT/${sg}_${bn}" > "$ROOT.${sg}_${bn}.log" 2>&1 &
  done
  wait
done
