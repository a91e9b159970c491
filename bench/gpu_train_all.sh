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
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-out}; SCALE=${SCALE:-1}; QUICK=${QUICK:-0}
W=/tmp/gta; rm -rf $W; mkdir -p $W/runs $W/logs "$OUT"
T0=$(date +%s)
sec() { python3 -c "print(max(2, int($1 * $SCALE)))"; }
DEADLINE=$(sec 475)
EVAL=(--set final_eval_points=10000 --set final_eval_steps=1000 --set eval_every=1000)
[ "$QUICK" = 1 ] && EVAL=(--set final_eval_points=100 --set final_eval_steps=20 --set eval_every=0 --set num_examples=20000)
QS=(); [ "$QUICK" = 1 ] && QS=(--set steps=3)

{ nvidia-smi || true; python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } > $W/logs/device.txt 2>&1
# throughput of the paper's 2x2 step (batch 20000) with today's 2 misreport restarts, alone on the GPU
if [ "$QUICK" = 1 ]; then B=(--batch 256 --steps 2); else B=(--batch 20000 --steps 20 --warmup 3); fi
python3 bench/train_step.py --config 2x2 "${B[@]}" --json --set misreport_restarts=2 > $W/logs/train_step_2x2_restarts2.txt 2>&1

train() {  # train CONFIG RUN_NAME BUDGET_S [--set ...]
  local cfg=$1 name=$2 budget; budget=$(sec "$3"); shift 3
  [ -e $W/STOP ] && return 0
  python3 train.py --config "$cfg" --workdir "$W/runs/$name" --overwrite --no-progress \
    --set max_seconds="$budget" "${EVAL[@]}" "$@" "${QS[@]}" > "$W/logs/$name.log" 2>&1
  echo "$name exit $? at $(( $(date +%s) - T0 )) s" | tee -a $W/logs/summary.txt
}
chain() {  # chain SETTING TEACH_S STUDENT_S TEACH_STEPS STUDENT_STEPS [--set ...] (teacher -> distilled student)
  local s=$1 tb=$2 sb=$3 ts=$4 ss=$5; shift 5
  local stu=$s tname=${s}_teacher sname=$s
  [ "$s" = 2x2 ] && stu=2x2_distill && sname=2x2_distill
  [ $# -gt 0 ] && tname=${tname}_v && sname=${sname}_v
  train ${s}_teacher $tname "$tb" --set steps="$ts" "$@"
  train $stu $sname "$sb" --set steps="$ss" --set teacher="$W/runs/$tname" "$@"
}

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
while kill -0 $GROUP 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt "$DEADLINE" ]; do sleep 3; done
if kill -0 $GROUP 2>/dev/null; then
  echo "deadline at $(( $(date +%s) - T0 )) s: stopping what is left" | tee -a $W/logs/summary.txt
  touch $W/STOP; pkill -f "train.py --config"; sleep 3; pkill -f "train.py --config"
fi
# the stronger attack on every finished run, 10000 profiles, 8 corner-biased restarts (GPU: seconds)
for d in $W/runs/*/; do
  [ -s "$d/final_eval.json" ] || continue
  n=$(basename "$d")
  python3 -m jaxauction.evaluate --ckpt "$d" --points $([ "$QUICK" = 1 ] && echo 50 || echo 10000) \
    --steps $([ "$QUICK" = 1 ] && echo 10 || echo 1000) --restarts 8 --json > "$d/pgd_restarts_10k.json" 2> "$W/logs/eval8_$n.log" &
done
wait
rm -f $W/runs/*/state.npz
for f in $W/runs/*/final_eval.json; do
  python3 -c "import json; d=json.load(open('$f')); g='${f%final_eval.json}pgd_restarts_10k.json'; import os; r8=json.load(open(g)) if os.path.exists(g) and os.path.getsize(g) else {}; print('${f}'.split('/')[-2].ljust(20), 'step', d['step'], 't %.0f' % d['train_seconds'], 'rev %.4f rgt %.5f rgt8 %s irv %.4f' % (d['revenue'], d['regret_mean'], r8.get('regret_mean', '-'), d['ir_violation_rate']))" 2>&1
done | tee -a $W/logs/summary.txt
echo "total $(( $(date +%s) - T0 )) s" | tee -a $W/logs/summary.txt
tar czf "$OUT/runs.tar.gz" -C $W runs logs
