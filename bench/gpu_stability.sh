#!/usr/bin/env bash
# One lent-GPU call (fifth pass): distilled students with PyTorch-style biases (bias_init=uniform),
# the paper's ReLU-stability loss (Xiao et al.: -tanh(1 + l u)) against the scale-free "margin"
# loss (bounds.relu_margin_loss), for the settings whose certification is still slow (2x3, 3x3,
# 3x10, and the 1x2 / 2x2 students). Teachers are the shipped checkpoints/*_teacher nets.
# 12 processes share the GPU; the summary line of each run ends with its unstable ReLUs per box.
#
#   OUT=out bash bench/gpu_stability.sh                          # on the GPU machine
#   SCALE=0.03 QUICK=1 OUT=/tmp/g bash bench/gpu_stability.sh    # smoke test on a CPU
set -u
cd "$(dirname "$0")/.."
W=/tmp/gstab
. bench/gpu_lib.sh
EVAL8_POINTS=2000
D=380; DEADLINE=$(sec 450)
U=(--set bias_init=uniform --set batch_size=1024)
M1=(--set stability_loss=margin --set stability_weight=0.001)
M3=(--set stability_loss=margin --set stability_weight=0.003)
M10=(--set stability_loss=margin --set stability_weight=0.01)
(
  for s in 2x3 3x3; do
    train $s ${s}_xiao $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/${s}_teacher &
    train $s ${s}_m1 $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/${s}_teacher "${M1[@]}" &
    train $s ${s}_m3 $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/${s}_teacher "${M3[@]}" &
    train $s ${s}_m10 $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/${s}_teacher "${M10[@]}" &
  done
  train 3x10 3x10_m3 $D "${U[@]}" --set steps=3000 --set teacher=checkpoints/3x10_teacher "${M3[@]}" &
  train 2x2_distill 2x2_distill_m3 $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/2x2_teacher "${M3[@]}" &
  train 1x2_distill 1x2_distill_m3 $D --set bias_init=uniform --set steps=4000 --set teacher=checkpoints/1x2_teacher "${M3[@]}" &
  wait
) &
GROUP=$!
finish $GROUP "$DEADLINE"
