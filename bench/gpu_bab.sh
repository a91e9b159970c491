#!/usr/bin/env bash
# One prepared device call for --solver bab on a lent GPU (issue 16's GPU figures, not yet measured):
# pairs per second one at a time and in pools of K profiles (bench/bab_batched.py) on the shipped
# 2x2 teacher and optimaler's 1x2 and 2x2 nets, with large batches of boxes per jitted call, and
# the per-box cost. Everything comes back as $OUT/gpu_bab.txt. About 5-8 minutes on an H100/H200.
#   device: run --command "bash bench/gpu_bab.sh" --timeout_s 540
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-out}; mkdir -p "$OUT"
{
  nvidia-smi || true
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  nets="checkpoints/1x2_teacher checkpoints/2x2_teacher"   # in the tree; optimaler's if the copy has them
  for d in shared/optimaler ../shared/optimaler; do
    [ -e "$d/regretnet_2x2_seed_0.npz" ] && nets="$d/regretnet_1x2_seed_0.npz $d/regretnet_2x2_seed_0.npz $nets" && break
  done
  for b in 4096 16384; do
    echo "== batch $b boxes per call"
    timeout 200 python3 bench/bab_batched.py $nets --points 64 --pairs 64 --batch "$b"
  done
} > "$OUT/gpu_bab.txt" 2>&1
