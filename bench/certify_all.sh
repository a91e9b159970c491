#!/usr/bin/env bash
# Certify every shipped network as in the paper's Tables 1 and 2 (issue 4): 200 seeded profiles
# for 1x2/2x2 and 50 for 3x2, 2x3, 3x3 and 3x10, every agent, at a 60-120 s limit per pair (the
# fifth pass's 2x3 / 3x3 / 3x10 students take about 7 / 1 / 2 s per pair). A time-out is reported with the bounds it reached, never as a certificate. Resumable: rerun to continue. WORKERS=2 uses both
# cores of the project's machine.
#   bash bench/certify_all.sh      -> results/NAME/{results.jsonl, summary.md, *.png, pgd_restarts.json}, results/NAME_planar/
set -u
cd "$(dirname "$0")/.."
run() {  # run NAME POINTS TIME_LIMIT [certify.py flags...]
  local name=$1 points=$2 limit=$3; shift 3
  python certify.py --ckpt "checkpoints/$name" --points "$points" --seed 0 --time-limit "$limit" --workers "${WORKERS:-1}" --out "results/$name" "$@"
  # the stronger empirical attack beside the certificate: 8 corner-biased restarts per search
  # (delete results/NAME/pgd_restarts.json after replacing a checkpoint)
  if [ ! -s "results/$name/pgd_restarts.json" ]; then
    python -m jaxauction.evaluate --ckpt "checkpoints/$name" --points 1000 --restarts 8 --json \
      > "results/$name/pgd_restarts.json.tmp" && mv "results/$name/pgd_restarts.json.tmp" "results/$name/pgd_restarts.json"
  fi
}
for n in 1x2_reg 1x2_noreg 1x2_distill 2x2_reg 2x2_noreg 2x2_distill; do run $n 200 120; done
run 3x2 50 60
run 3x10 50 90
run 2x3 50 90
run 3x3 50 90
# RegretNet's own architecture (tanh towers, softmax, logistic fractional payment; issue 14's 1x2
# frontier, configs/sweeps/1x2_regretnet_budget.py and its fine-tune): the JAX branch and bound,
# which bounds tanh and softmax (the MIP encodes ReLU nets only)
for n in 1x2_regretnet_r0005 1x2_regretnet_r001 1x2_regretnet_ft 1x2_regretnet_ft2 1x2_regretnet_ft3; do run $n 200 60 --solver bab; done
# the free-payment 2-item networks again by exact region enumeration, no MIP (results/NAME_planar;
# bench/results_table.py sets them beside the MIP runs)
for n in 1x2_distill:200 2x2_distill:200 3x2:50; do
  python certify.py --ckpt "checkpoints/${n%%:*}" --points "${n##*:}" --seed 0 --solver planar --out "results/${n%%:*}_planar"
done
