# Shared pieces of the one-call GPU training scripts (bench/gpu_train_all.sh, bench/gpu_stability.sh):
# many train.py processes share the one lent GPU under a hard wall-clock deadline, then every
# finished run gets the 8-restart attack and an unstable-ReLU count, and everything comes back as
# ONE tarball ($OUT/runs.tar.gz; the device tool returns only a few files and no deep folders).
#
# Source it from the repository root with W (work dir) set; then call `train`, `chain`, and at the
# end `finish GROUP_PID DEADLINE_S`. SCALE multiplies every time budget; QUICK=1 is a CPU smoke test.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-out}; SCALE=${SCALE:-1}; QUICK=${QUICK:-0}
rm -rf "$W"; mkdir -p "$W/runs" "$W/logs" "$OUT"
T0=$(date +%s)
sec() { python3 -c "print(max(2, int($1 * $SCALE)))"; }
EVAL=(--set final_eval_points=10000 --set final_eval_steps=1000 --set eval_every=1000)
[ "$QUICK" = 1 ] && EVAL=(--set final_eval_points=100 --set final_eval_steps=20 --set eval_every=0 --set num_examples=20000)
QS=(); [ "$QUICK" = 1 ] && QS=(--set steps=3)
{ nvidia-smi || true; python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$W/logs/device.txt" 2>&1

train() {  # train CONFIG RUN_NAME BUDGET_S [--set ...]
  local cfg=$1 name=$2 budget; budget=$(sec "$3"); shift 3
  [ -e "$W/STOP" ] && return 0
  python3 train.py --config "$cfg" --workdir "$W/runs/$name" --overwrite --no-progress \
    --set max_seconds="$budget" "${EVAL[@]}" "$@" "${QS[@]}" > "$W/logs/$name.log" 2>&1
  echo "$name exit $? at $(( $(date +%s) - T0 )) s" | tee -a "$W/logs/summary.txt"
}

chain() {  # chain SETTING TEACH_S STUDENT_S TEACH_STEPS STUDENT_STEPS [--set ...] (teacher -> distilled student)
  local s=$1 tb=$2 sb=$3 ts=$4 ss=$5; shift 5
  local stu=$s tname=${s}_teacher sname=$s
  [ "$s" = 2x2 ] && stu=2x2_distill && sname=2x2_distill
  [ $# -gt 0 ] && tname=${tname}_v && sname=${sname}_v
  train "${s}_teacher" "$tname" "$tb" --set steps="$ts" "$@"
  train "$stu" "$sname" "$sb" --set steps="$ss" --set teacher="$W/runs/$tname" "$@"
}

finish() {  # finish GROUP_PID DEADLINE_S: stop what outlives the deadline, attack, count, pack
  local group=$1 deadline=$2 d n pts steps
  while kill -0 "$group" 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt "$deadline" ]; do sleep 3; done
  if kill -0 "$group" 2>/dev/null; then
    echo "deadline at $(( $(date +%s) - T0 )) s: stopping what is left" | tee -a "$W/logs/summary.txt"
    touch "$W/STOP"; pkill -f "train.py --config"; sleep 3; pkill -f "train.py --config"
  fi
  pts=${EVAL8_POINTS:-10000}; steps=1000; [ "$QUICK" = 1 ] && pts=50 && steps=10
  for d in "$W"/runs/*/; do
    [ -s "$d/final_eval.json" ] || continue
    n=$(basename "$d")
    python3 -m jaxauction.evaluate --ckpt "$d" --points "$pts" --steps "$steps" --restarts 8 --json \
      > "$d/pgd_restarts_10k.json" 2> "$W/logs/eval8_$n.log" &
    python3 bench/unstable_relus.py "$d/checkpoint" > "$d/unstable.txt" 2> "$W/logs/unstable_$n.log" &
  done
  wait
  rm -f "$W"/runs/*/state.npz
  for f in "$W"/runs/*/final_eval.json; do
    python3 - "$f" <<'PY' 2>&1
import json, os, sys
f = sys.argv[1]; d = os.path.dirname(f); e = json.load(open(f))
g = os.path.join(d, "pgd_restarts_10k.json")
r8 = json.load(open(g)) if os.path.exists(g) and os.path.getsize(g) else {}
u = open(os.path.join(d, "unstable.txt")).read().split(":")[-1].split("(")[0].strip() if os.path.exists(os.path.join(d, "unstable.txt")) else "-"
print(os.path.basename(d).ljust(22), "step", e["step"], "t %.0f" % e["train_seconds"],
      "rev %.4f rgt %.5f rgt8 %s irv %.4f" % (e["revenue"], e["regret_mean"], r8.get("regret_mean", "-"), e["ir_violation_rate"]), "|", u)
PY
  done | tee -a "$W/logs/summary.txt"
  echo "total $(( $(date +%s) - T0 )) s" | tee -a "$W/logs/summary.txt"
  tar czf "$OUT/runs.tar.gz" -C "$W" runs logs
}
