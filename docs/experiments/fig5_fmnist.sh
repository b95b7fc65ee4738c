#!/usr/bin/env bash
# Fig. 5 (no predictor) on Fashion-MNIST, CPU: SimSiam with symmetric vs guided stop-gradient, and the
# projector's last BatchNorm without (plain, as the official code) and with (affine) learnable scale/shift.
# As run for docs/results/fig5_fmnist.md: plain for 60 epochs, affine for 30 (session time on 2 cores).
# Usage: bash docs/experiments/fig5_fmnist.sh [OUT_ROOT] [BN...]
set -euo pipefail
ROOT=${1:-runs/fig5_fmnist}
shift || true
BNS=${*:-plain affine}
declare -A EPOCHS=([plain]=60 [affine]=30 [none]=30)
common=(--dataset fashion-mnist --subset 1000 --method simsiam --predictor none --batch-size 128
        --lr 0.06 --width 0.25 --seed 0
        --set optim.schedule=constant --set model.proj_dim=512 --set run.knn_train_subset=2000
        --set run.knn_test_subset=1000 --set run.progress=false --set run.checkpoint_every=10)
for bn in $BNS; do
  for sg in symmetric guided; do
    OMP_NUM_THREADS=1 gsg pretrain "${common[@]}" --epochs "${EPOCHS[$bn]}" --stop-gradient "$sg" \
      --set model.proj_last_bn="$bn" --out "$ROOT/${sg}_${bn}" > "$ROOT.${sg}_${bn}.log" 2>&1 &
  done
  wait
done
