#!/usr/bin/env bash
# Second, shorter pass of bench/gpu_campaign.sh's trainings that packs every run into ONE tarball
# ($OUT/runs.tar.gz): the device tool returns only a few files and no deep folders.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
W=/tmp/camp; mkdir -p $W/runs $W/logs
EVAL=(--set final_eval_points=10000 --set final_eval_steps=1000)
TEVAL=(--set final_eval_points=2000 --set final_eval_steps=200)
train() { local name=$1 wd=$2 budget=$3; shift 3
  python3 train.py --config "$name" --workdir "$W/runs/$wd" --overwrite --no-progress \
    --set max_seconds="$budget" "${EVAL[@]}" "$@" > "$W/logs/$wd.log" 2>&1; echo "$wd exit $? $(date +%T)"; }
(
train 2x2_noreg 2x2_noreg 225 --set steps=12000 &
train 2x2 2x2_reg 225 --set steps=12000 --set rho=10 &
for s in 2x2 2x3 3x2 3x3; do
  stu=$s; [ $s = 2x2 ] && stu=2x2_distill
  (train ${s}_teacher ${s}_teacher 80 --set steps=4000 "${TEVAL[@]}"
   train $stu $stu 125 --set steps=6000 --set teacher="$W/runs/${s}_teacher") &
done
wait ) &
for i in $(seq 58); do kill -0 %1 2>/dev/null || break; sleep 5; done; kill %1 2>/dev/null
rm -f $W/runs/*/state.npz
tar czf $OUT/runs.tar.gz -C $W runs logs
for f in $W/runs/*/final_eval.json; do python3 -c "import json; d=json.load(open('$f')); print('$f'.split('/')[-2], 'step', d['step'], 'rev %.4f rgt %.5f irv %.4f' % (d['revenue'], d['regret_mean'], d['ir_violation_rate']))"; done
