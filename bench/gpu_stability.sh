#!/usr/bin/env bash
# One lent-GPU call (fifth pass): distilled students with PyTorch-style biases (bias_init=uniform),
# the paper's ReLU-stability loss (Xiao et al.: -tanh(1 + l u)) against the scale-free "margin"
# loss (bounds.relu_margin_loss), for the settings whose certification is still slow (2x3, 3x3,
# 3x10, and the 1x2 / 2x2 students). Teachers are the shipped checkpoints/*_teacher nets.
# 12 processes share the GPU; the summary line of each run ends with its unstable ReLUs per box.
#
#   OUT=out bash bench/gpu_stability.sh [a|b]                    # on the GPU machine (b: second call)
#   SCALE=0.03 QUICK=1 OUT=/tmp/g bash bench/gpu_stability.sh    # smoke test on a CPU
set -u
cd "$(dirname "$0")/.."
W=/tmp/gstab
. bench/gpu_lib.sh
EVAL8_POINTS=2000
PASS=${1:-a}
U=(--set bias_init=uniform --set batch_size=1024)
M() { echo --set stability_loss=margin --set stability_weight="$1"; }
if [ "$PASS" = a ]; then
D=380; DEADLINE=$(sec 450)
(
  for s in 2x3 3x3; do
    train $s ${s}_xiao $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/${s}_teacher &
    for w in 1 3 10; do
      train $s ${s}_m$w $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/${s}_teacher $(M 0.00$w | sed 's/0.0010$/0.01/') &
    done
  done
  train 3x10 3x10_m3 $D "${U[@]}" --set steps=3000 --set teacher=checkpoints/3x10_teacher $(M 0.003) &
  train 2x2_distill 2x2_distill_m3 $D "${U[@]}" --set steps=5000 --set teacher=checkpoints/2x2_teacher $(M 0.003) &
  train 1x2_distill 1x2_distill_m3 $D --set bias_init=uniform --set steps=4000 --set teacher=checkpoints/1x2_teacher $(M 0.003) &
  wait
) &
else
D=230; DEADLINE=$(sec 285)
(
  for w in 0.0003 0.001; do
    train 2x2_distill 2x2_distill_m$w $D "${U[@]}" --set steps=6000 --set teacher=checkpoints/2x2_teacher $(M $w) &
  done
  train 2x2_distill 2x2_distill_xiao $D "${U[@]}" --set steps=6000 --set teacher=checkpoints/2x2_teacher &
  for w in 0.01 0.03; do
    train 3x10 3x10_m$w $D "${U[@]}" --set steps=4000 --set teacher=checkpoints/3x10_teacher $(M $w) &
  done
  for w in 0.003 0.01; do
    train 3x3 3x3_m${w}_long $D "${U[@]}" --set steps=6000 --set teacher=checkpoints/3x3_teacher $(M $w) &
  done
  train 2x3 2x3_m0.01_long $D "${U[@]}" --set steps=6000 --set teacher=checkpoints/2x3_teacher $(M 0.01) &
  train 1x2_distill 1x2_distill_m0.01 $D --set bias_init=uniform --set steps=4000 --set teacher=checkpoints/1x2_teacher $(M 0.01) &
  train 1x2_distill 1x2_distill_m0.003_long $D --set bias_init=uniform --set steps=6000 --set teacher=checkpoints/1x2_teacher $(M 0.003) &
  wait
) &
fi
GROUP=$!
finish $GROUP "$DEADLINE"
