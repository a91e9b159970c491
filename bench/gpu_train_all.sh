#!/usr/bin/env bash
# One lent-GPU call (15 minutes of device time in all): retrain every network of the paper's
# Tables 1 and 2 with today's defaults (misreport restarts, linear IR penalty), 14 processes sharing
# the one GPU under a hard wall-clock deadline, plus a few variants per 2x2 row to pick from by their
# certified regret afterwards. Everything comes back as ONE tarball ($OUT/runs.tar.gz): the device
# tool returns only a few files and no deep folders.
#
#   OUT=out bash bench/gpu_train_all.sh                          # on the GPU machine
#   SCALE=0.03 QUICK=1 OUT=/tmp/g bash bench/gpu_train_all.sh    # smoke test on a CPU
#
# Budgets are seconds of training per run (times SCALE); DEADLINE (s from start) kills what is left.
set -u
cd "$(dirname "$0")/.."
W=/tmp/gta
. bench/gpu_lib.sh
DEADLINE=$(sec 475)
# throughput of the paper's 2x2 step (batch 20000) with today's 2 misreport restarts, alone on the GPU
if [ "$QUICK" = 1 ]; then B=(--batch 256 --steps 2); else B=(--batch 20000 --steps 20 --warmup 3); fi
python3 bench/train_step.py --config 2x2 "${B[@]}" --json --set misreport_restarts=2 > $W/logs/train_step_2x2_restarts2.txt 2>&1

D=420; S2=14000
(
  train 2x2 2x2_reg_r30 $D --set steps=$S2 &
  train 2x2 2x2_reg_r10 $D --set steps=$S2 --set rho=10 &
  train 2x2 2x2_reg_r3 $D --set steps=$S2 --set rho=3 --set lambda_init=1 &
  train 2x2 2x2_reg_sw $D --set steps=$S2 --set rho=10 --set stability_weight=0.01 &
  train 2x2_noreg 2x2_noreg_r30 $D --set steps=$S2 &
  train 2x2_noreg 2x2_noreg_r10 $D --set steps=$S2 --set rho=10 &
  train 2x2_noreg 2x2_noreg_r3 $D --set steps=$S2 --set rho=3 --set lambda_init=1 &
  chain 2x2 130 270 5000 9000 &
  chain 2x2 130 270 5000 9000 --set rho=3 --set lambda_init=1 &
  chain 2x3 130 270 5000 9000 &
  chain 3x2 130 270 5000 9000 &
  chain 3x3 130 270 5000 9000 &
  chain 3x10 140 270 3000 5000 &
  ( train 1x2_noreg 1x2_noreg_x4 95 --set steps=2000 --set misreport_restarts=4
    train 1x2_noreg 1x2_noreg_x4r100 95 --set steps=2000 --set misreport_restarts=4 --set rho=100
    train 1x2 1x2_reg_x4 95 --set steps=2000 --set misreport_restarts=4
    train 1x2_distill 1x2_distill_sw 95 --set steps=2000 --set teacher=checkpoints/1x2_teacher --set stability_weight=0.01 ) &
  wait
) &
GROUP=$!
finish $GROUP "$DEADLINE"
