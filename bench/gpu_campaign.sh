#!/usr/bin/env bash
# One-shot GPU session (the lent H100/H200): the training-step benchmark, then every training run of
# the paper's Tables 1 and 2, in parallel on the one GPU, each under a wall-clock budget.
#
#   OUT=out bash bench/gpu_campaign.sh            # on the GPU machine ($OUT comes back)
#   SCALE=0.02 QUICK=1 OUT=/tmp/g bash bench/gpu_campaign.sh   # smoke test of the script on a CPU
#
# Budgets (seconds, times SCALE): direct runs T_DIRECT; teachers T_TEACH then students T_STUDENT.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-out}; SCALE=${SCALE:-1}; QUICK=${QUICK:-0}
mkdir -p "$OUT/runs" "$OUT/logs"
sec() { python3 -c "print(max(1, int($1 * $SCALE)))"; }
T_DIRECT=$(sec 330); T_TEACH=$(sec 120); T_STUDENT=$(sec 190)
EVAL=(--set final_eval_points=10000 --set final_eval_steps=1000)
[ "$QUICK" = 1 ] && EVAL=(--set final_eval_points=100 --set final_eval_steps=20 --set eval_every=0 --set num_examples=20000)

{ nvidia-smi || true; python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# 1. throughput, alone on the GPU (paper's 2x2 setting: batch 20000, 25 PGD steps, 3x128, sparsemax, fractional)
if [ "$QUICK" = 1 ]; then B=(--batch 512 --steps 2); else B=(--batch 20000 --steps 20 --warmup 3); fi
python3 bench/train_step.py --config 2x2 "${B[@]}" --json 2>&1 | tee "$OUT/train_step_2x2.txt" | tail -3
python3 bench/train_step.py --config 2x2 "${B[@]}" --json --set stability_points=4096 2>&1 | tee "$OUT/train_step_2x2_sub.txt" | tail -3
[ "$QUICK" = 1 ] || python3 bench/eval_regret.py 2>&1 | tee "$OUT/eval_regret_2x2.txt" | tail -4

train() {  # train NAME WORKDIR_NAME BUDGET [--set ...]
  local name=$1 wd=$2 budget=$3; shift 3
  python3 train.py --config "$name" --workdir "$OUT/runs/$wd" --overwrite --no-progress \
    --set max_seconds="$budget" "${EVAL[@]}" "$@" > "$OUT/logs/$wd.log" 2>&1
  echo "$wd exit $? $(date +%T)"
}

date +%T
# 2. Table 1 (2x2 rows) and Table 2 (2x3, 3x2, 3x3), all at once (the 1x2 nets train on a CPU).
TEVAL=(--set final_eval_points=2000 --set final_eval_steps=200)
train 2x2 2x2_reg "$T_DIRECT" --set steps=15000 &
train 2x2 2x2_reg_rho10 "$T_DIRECT" --set steps=15000 --set rho=10 &
train 2x2 2x2_reg_b16k "$T_DIRECT" --set steps=7000 --set batch_size=16384 --set lr=0.002 &
train 2x2_noreg 2x2_noreg "$T_DIRECT" --set steps=15000 &
for s in 2x2 2x3 3x2 3x3; do
  stu=$s; [ $s = 2x2 ] && stu=2x2_distill
  (train ${s}_teacher ${s}_teacher "$T_TEACH" --set steps=5000 "${TEVAL[@]}"
   train $stu $stu "$T_STUDENT" --set steps=8000 --set teacher="$OUT/runs/${s}_teacher") &
done
wait
date +%T
rm -f "$OUT"/runs/*/state.npz   # resumable state: large, not shipped
for f in "$OUT"/runs/*/final_eval.json; do
  python3 -c "import json,sys; d=json.load(open('$f')); print('$f'.split('/')[-2], 'step', d['step'], 'rev %.4f rgt %.5f irv %.4f train_s %s' % (d['revenue'], d['regret_mean'], d['ir_violation_rate'], d['train_seconds']))"
done
