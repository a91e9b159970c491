#!/usr/bin/env bash
# Certify every shipped network as in the paper's Tables 1 and 2 (issue 4): 200 seeded profiles
# for 1x2/2x2, 50 for the larger settings, every agent. Resumable: rerun to continue.
#   bash bench/certify_all.sh [WORKERS]      -> results/NAME/{results.jsonl, summary.md, *.png}
set -u
cd "$(dirname "$0")/.."
W=${1:-2}; TL=${TIME_LIMIT:-120}
run() { python certify.py --ckpt "checkpoints/$1" --points "$2" --seed 0 --time-limit "$TL" --workers "$W" --out "results/$1"; }
for n in 1x2_reg 1x2_noreg 1x2_distill; do [ -d checkpoints/$n ] && run $n 200; done
for n in 2x2_reg 2x2_noreg 2x2_distill; do run $n 200; done
for n in 3x2 2x3 3x3; do run $n 50; done
